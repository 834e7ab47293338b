"""The prepared GPU-machine run (training/device_session.sh), dry on the CPU: rooms, evaluation of the start,
a timed resume of the committed milestone stopped by SIGTERM, evaluation of the end, the checkpoint in parts."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO


@pytest.mark.slow
def test_the_dry_run_trains_from_the_milestone_and_returns_what_the_machine_would(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, DRY="1", OUT=str(out), PY=sys.executable, TRAIN_S="40", WORK=str(tmp_path / "work"))
    proc = subprocess.run(["bash", "training/device_session.sh", "run"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["eval_end.json", "eval_start.json", "last.ckpt.part_aa", "last.ckpt.part_ab", "metrics.jsonl",
                     "session.log", "train.log"]
    assert len(names) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())  # what comes back
    train_log = (out / "train.log").read_text()
    assert "continuing with the config's optim.lr 5e-05" in train_log and "interrupted; checkpoint written" in train_log
    start = torch.load(REPO / "training/checkpoints/default_small_stage9_step2118.ckpt", weights_only=True)
    whole = tmp_path / "last.ckpt"
    whole.write_bytes((out / "last.ckpt.part_aa").read_bytes() + (out / "last.ckpt.part_ab").read_bytes())
    end = torch.load(whole, weights_only=True)
    assert end["step"] > start["step"] and end["training_config"]["train"]["batch_size"] == 2
    assert all(g["lr"] == 5e-5 for g in end["optimizer"]["param_groups"])
    for name in ("eval_start.json", "eval_end.json"):
        metrics = json.loads((out / name).read_text())
        assert metrics["num_pairs"] == 3 and "identity" in metrics and "median_trans_err_m" in metrics
    assert "usage" in subprocess.run(["bash", "training/device_session.sh"], cwd=REPO, capture_output=True,
                                     text=True).stderr
