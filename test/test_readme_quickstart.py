"""The README's quick start, run as a reader runs it: every fenced command of its "## Quick start" section, verbatim,
one line after the other, so that the section can never again fail line by line.

The commands run as subprocesses (``bash -c LINE``) with this environment's Python and console scripts first on PATH
and this checkout first on PYTHONPATH, in a scratch folder (``tmp_path``) that holds links to the checkout's top-level
entries: the relative paths a reader uses from the repository root resolve, and every output lands in the scratch
folder, never in the checkout.

Skipped: installing. A ``pip install`` (or ``python -m pip install``) command, alone or before ``&&``, is not run,
because the test environment is already installed (the README's test command installs the package with the
``test`` extra, a superset of ``train``) and a test must not change the environment it runs in; whatever follows its
``&&`` does run.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

INSTALL = re.compile(r"^(pip|python -m pip|python3 -m pip) install\b")


def quick_start_lines(readme: str) -> list[str]:
    """The command lines of the fenced ``bash``/``sh`` blocks between ``## Quick start`` and the next ``## `` heading,
    in order (backslash continuations joined; blank lines and ``#`` comment lines left out)."""
    start = readme.index("\n## Quick start\n")
    end = readme.find("\n## ", start + 1)
    section = readme[start: end if end != -1 else len(readme)]
    lines: list[str] = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)\n```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


def runnable_part(line: str) -> str:
    """``line`` without its install commands (the ``&&``-separated parts that are ``pip install``); may be empty."""
    return " && ".join(part.strip() for part in line.split("&&") if not INSTALL.match(part.strip()))


def _lines() -> list[str]:
    return quick_start_lines((REPO / "README.md").read_text())


def test_quick_start_is_found_and_installs_what_it_needs_before_it_needs_it():
    lines = _lines()
    assert len(lines) >= 4, lines
    assert lines[0].startswith("pip install torch==2.13.0 -e . && mickey-ros match ")  # install + the main job
    programs = {shlex.split(runnable_part(line) or "pip")[0] for line in lines}
    assert programs <= {"pip", "python", "mickey-ros"}, programs
    # the synthetic-bag generator needs the train extra (scikit-image): an install line comes first
    first_training = next(k for k, line in enumerate(lines) if "training/" in line)
    assert any(INSTALL.match(line) and ".[train]" in line for line in lines[:first_training]), lines
    assert runnable_part("pip install -e . && mickey-ros demo") == "mickey-ros demo"
    assert runnable_part('python -m pip install -e ".[train]"') == ""


@pytest.mark.slow  # the bundled network on one pair, the five demo pairs and a three-pair bag: ~30 s on 2 cores
def test_every_quick_start_command_runs_verbatim_line_by_line(tmp_path):
    for entry in REPO.iterdir():  # the checkout's inputs, read where they are
        if not entry.name.startswith("."):
            (tmp_path / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    where = subprocess.run(["bash", "-c", 'python -c "import mickey_ros; print(mickey_ros.__file__)"'],
                           capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(REPO), f"the commands would run another install: {where}"

    ran, skipped = [], []
    for line in _lines():
        command = runnable_part(line)
        if not command:
            skipped.append(line)
            continue
        proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=600)
        assert proc.returncode == 0, (f"README quick start line failed (exit {proc.returncode}): {line}\n"
                                      f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
        ran.append(command)
    assert len(ran) >= 4 and all(INSTALL.match(line) for line in skipped), (ran, skipped)

    # what the commands said they would write is in the scratch folder
    for command in ran:
        words = shlex.split(command)
        for flag, name in zip(words, words[1:]):
            if flag in ("--json", "--viz"):
                assert (tmp_path / name).is_file() and not (tmp_path / name).is_symlink(), f"{command}: no {name}"
                if flag == "--json":
                    json.loads((tmp_path / name).read_text())
        if words[:2] == ["mickey-ros", "bag"]:
            out = tmp_path / words[3]
            assert out.is_dir() and list(out.glob("*.mcap")), f"{command}: no bag written to {out}"
