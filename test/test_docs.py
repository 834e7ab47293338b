"""What a user reads (README.md, docs/*.md): every relative link and anchor resolves, the README stays a front page
(<= 250 lines), and no project-management words (issue numbers, training stages, acceptance targets) appear."""
from __future__ import annotations

import re

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
INTERNAL_WORDS = re.compile(r"issue [0-9]|stage [0-9]|acceptance", re.I)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces -> '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_and_anchors_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        name, _, anchor = target.partition("#")
        dest = (page.parent / name).resolve() if name else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert broken == []


def test_readme_is_a_front_page_without_internal_words():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
    found = [f"{p.relative_to(REPO)}:{k}: {line.strip()}" for p in PAGES
             for k, line in enumerate(p.read_text().splitlines(), 1) if INTERNAL_WORDS.search(line)]
    assert found == []
