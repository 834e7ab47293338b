"""``scripts/eval_realdata.py`` and ``scripts/realdata_pairs.py``: bad arguments are one line and exit 2 before any
work; one small real set through the bundled network as a subprocess where ``../shared/realdata`` exists."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import REPO

REALDATA = REPO.parent / "shared" / "realdata"
SCRIPT = REPO / "scripts" / "eval_realdata.py"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args, message", [
    (["--sets", "kitti"], "--sets: expected a comma-separated list of kitti_seq1, kitti_seq2, middlebury, "
                          "euroc_stereo, motorcycle (or all), got kitti"),
    (["--realdata", "{tmp}/nope"], "--realdata: folder not found: {tmp}/nope (expected the sets of "
                                   "shared/realdata/README.md)"),
    (["--resize", "672", "203", "--max-side", "420"], "--resize and --max-side: expected one of them, got both"),
    (["--max-pairs", "0"], "--max-pairs: expected a positive number, got 0"),
    (["--json", "{tmp}/no/out.json"], "--json: folder {tmp}/no does not exist"),
    (["--out", "{repo}/realdata_out"], "--out: {repo}/realdata_out is inside the repository {repo}; the real data "
                                       "must not be copied there (pick a folder outside it)"),
    (["--refine", "maybe"], "eval_realdata: argument --refine: invalid choice: 'maybe' (choose from 'auto', 'on', "
                            "'off')"),
])
def test_a_bad_argument_is_one_line_and_exit_2_before_the_network_loads(args, message, tmp_path, capsys,
                                                                        monkeypatch):
    script = _load("eval_realdata")
    monkeypatch.setattr(script.cli, "_load_network", lambda a: pytest.fail("the network must not load"))
    argv = [a.format(tmp=tmp_path, repo=REPO) for a in args]
    assert script.main(argv) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == f"eval_realdata: error: {message.format(tmp=tmp_path, repo=REPO)}\n"


def test_realdata_pairs_writes_a_set_and_refuses_the_repository(tmp_path, capsys):
    pytest.importorskip("skimage.data", reason="scikit-image not installed (the test extra)")
    script = _load("realdata_pairs")
    assert script.main([str(tmp_path / "out"), "--sets", "motorcycle"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"motorcycle: 1 pairs: mickey-ros eval-pairs {tmp_path}/out/motorcycle/pairs.txt "
                          f"--image-dir {tmp_path}/out/motorcycle/images\n")
    assert script.main([str(REPO / "x"), "--sets", "motorcycle"]) == 2
    assert capsys.readouterr().err.startswith(f"realdata_pairs: error: OUT: {REPO}/x is inside the repository")


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not found (real photographs)")
def test_two_middlebury_pairs_through_the_bundled_network(tmp_path):
    out_json = tmp_path / "real.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--sets", "middlebury", "--max-pairs", "2", "--threads", "1",
                        "--device", "cpu", "--json", str(out_json), "--out", str(tmp_path / "lists")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("network: bundled default (preset small), input: training size ")
    assert lines[0].endswith(", refine auto (on), seed 0, cpu, 1 torch thread(s)")
    assert lines[1].split()[:6] == ["set", "pairs", "fail", "input", "centre", "rot"] and "| no motion" in lines[1]
    row = lines[3].split()
    assert row[:3] == ["middlebury", "2", "0"], lines
    data = json.loads(out_json.read_text())
    run, res = data["run"], data["sets"]["middlebury"]
    assert (run["checkpoint"], run["refine"], run["seed"], run["torch_threads"], run["sets"], run["max_pairs"]) == (
        "bundled default", "auto", 0, 1, ["middlebury"], 2)
    assert res["num_pairs"] == 2 and len(res["pairs"]) == 2 and sum(res["network_input"].values()) == 4
    s = res["summary"]
    assert s["num_pairs"] == 2 and s["identity"]["median_rot_err_deg"] == pytest.approx(0.0, abs=1e-6)
    assert f"{s['median_trans_err_m']:.3f}" == row[4]  # the table prints the JSON's numbers
    assert (tmp_path / "lists" / "middlebury" / "pairs.txt").is_file()
