"""The trainer: config schema, data order, DDP gradient averaging, feature cache, NaN skips, kill + exact resume,
train.py / evaluate.py as processes."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch

pytest.importorskip("rosbags.rosbag2")
pytest.importorskip("skimage.data")

from conftest import REPO  # noqa: E402
from training import config as config_mod  # noqa: E402
from training.trainer import FeatureCache, Trainer, build_network, epoch_batches, epoch_order  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from training.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root / "train", scenes=1, frames=8, width=224, height=168, seed=0, depth=False)
    generate(root / "val", scenes=1, frames=4, width=224, height=168, seed=1, depth=False)
    return root


def _overrides(bags, run_dir, *extra):
    return [f"data.train=[{bags / 'train'}]", "data.num_workers=0", "data.max_baseline_m=3.0",
            "data.max_angle_deg=60.0", "train.batch_size=2", f"train.run_dir={run_dir}", "train.progress=false",
            "train.checkpoint_every=0", "train.val_every=0", "train.device=cpu", "train.log_every=1",
            "train.image_every=2", *extra]


def _run(args, **kw):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, **kw)


def _losses(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {d["step"]: d["loss"] for d in lines if "loss" in d}


# -- configuration ------------------------------------------------------------------------------------------
def test_config_layers_and_rejects_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  batch_size: 3\noptim:\n  lr: 1e-3\n")
    cfg = config_mod.resolve(path, ["train.batch_size=5", "data.resize=[224, 168]", "loss.num_draws=4"])
    assert cfg["train"]["batch_size"] == 5 and cfg["optim"]["lr"] == 1e-3 and cfg["data"]["resize"] == [224, 168]
    assert config_mod.loss_config(cfg).num_draws == 4 and cfg["train"]["epochs"] == 100  # defaults kept
    with pytest.raises(config_mod.ConfigError, match=r"override: unknown key train\.batchsize \(known: run_dir"):
        config_mod.resolve(None, ["train.batchsize=4"])
    with pytest.raises(config_mod.ConfigError, match="unknown section 'trian'"):
        config_mod.resolve(None, ["trian.batch_size=4"])
    with pytest.raises(config_mod.ConfigError, match=r"train\.batch_size: expected an integer, got 'four'"):
        config_mod.resolve(None, ["train.batch_size=four"])
    with pytest.raises(config_mod.ConfigError, match=r"expected section\.key=value"):
        config_mod.resolve(None, ["batch_size=4"])
    path.write_text("model:\n  presets: tiny\n")
    with pytest.raises(config_mod.ConfigError, match=r"c\.yaml: unknown key model\.presets"):
        config_mod.resolve(path)


@pytest.mark.parametrize("override, match", [
    ("train.val_per_epoch=0", r"override: train\.val_per_epoch: expected an integer >= 1, got 0"),
    ("train.batch_size=0", r"train\.batch_size: expected an integer >= 1, got 0"),
    ("train.recalibrate_batchnorm=-5", r"train\.recalibrate_batchnorm: expected an integer >= 0, got -5"),
    ("data.num_workers=-1", r"data\.num_workers: expected an integer >= 0, got -1"),
])
def test_config_rejects_out_of_range_integers_before_any_work(override, match):
    """Range errors come from resolve(), not after minutes of BatchNorm recalibration or data indexing."""
    with pytest.raises(config_mod.ConfigError, match=match):
        config_mod.resolve(None, [override])


def test_shipped_configs_resolve():
    for path in sorted((REPO / "training" / "configs").glob("*.yaml")):
        config_mod.resolve(path)


# -- data order ---------------------------------------------------------------------------------------------
def test_epoch_batches_shard_one_global_order():
    order = torch.randperm(23, generator=torch.Generator().manual_seed(0)).tolist()
    single = epoch_batches(order, 4, rank=0, world=1)
    shards = [epoch_batches(order, 2, rank=r, world=2) for r in (0, 1)]
    assert len(single) == 5 and all(len(b) == 4 for b in single)  # 23 // 4, incomplete batch dropped
    assert [a + b for a, b in zip(*shards)] == single  # the same global batches, split by rank


def test_epoch_order_is_seeded_per_epoch_and_can_balance_scenes():
    class Pairs:
        scene_ids = ["a"] * 10 + ["b"] * 2

        def __len__(self):
            return 12

    cfg = config_mod.resolve(None, ["train.seed=5"])
    first = epoch_order(Pairs(), cfg, 0)
    assert sorted(first) == list(range(12)) and first == epoch_order(Pairs(), cfg, 0) != epoch_order(Pairs(), cfg, 1)
    cfg["data"]["pairs_per_scene"] = 6
    balanced = epoch_order(Pairs(), cfg, 0)
    assert len(balanced) == 12 and sum(i >= 10 for i in balanced) == 6  # scene b drawn as often as scene a


# -- DDP ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_process_gloo_ddp_step_averages_gradients_exactly(tmp_path):
    script = str(REPO / "test" / "training" / "ddp_grad_check.py")
    for pair in ("0", "1"):  # one process, each half of the batch (per-process BatchNorm statistics, as DDP)
        assert _run([script, str(tmp_path), pair]).returncode == 0
    proc = _run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 400),
                 script, str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    single = [torch.load(tmp_path / f"grads_single_pair{p}.pt") for p in (0, 1)]
    ranks = [torch.load(tmp_path / f"grads_world2_rank{r}.pt") for r in (0, 1)]
    assert [r["loss"] for r in ranks] == [s["loss"] for s in single]  # same per-pair draws in both layouts
    assert set(ranks[0]["grads"]) == set(single[0]["grads"]) and len(ranks[0]["grads"]) > 200
    # precondition: the two pairs' gradients differ, so a rank that kept its own gradient (no all-reduce) fails below
    differ = [n for n, g in single[0]["grads"].items() if not torch.allclose(g, single[1]["grads"][n], rtol=1e-3)]
    assert len(differ) > 0.5 * len(single[0]["grads"]), len(differ)
    for name, grad in ranks[0]["grads"].items():
        expected = (single[0]["grads"][name] + single[1]["grads"][name]) / 2
        torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-9, msg=name)
        assert torch.equal(grad, ranks[1]["grads"][name])  # every rank holds the average


# -- steps --------------------------------------------------------------------------------------------------
def _demo_batch(indices):
    sys.path.insert(0, str(REPO / "test" / "training"))
    from ddp_grad_check import demo_batch

    return demo_batch(indices)


def test_nan_gradients_skip_the_step_and_are_counted(tmp_path, monkeypatch, caplog):
    cfg = config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.device=cpu", "train.curriculum=false"])
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    import training.trainer as trainer_mod

    real = trainer_mod.mickey_loss

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out.surrogate = out.surrogate * float("nan")
        return out

    monkeypatch.setattr(trainer_mod, "mickey_loss", poisoned)
    scalars = trainer.train_step(_demo_batch([0]), [0])
    assert scalars["skipped_steps"] == 1 and trainer.step == 1
    assert "NaN/Inf gradients; optimiser step skipped (1 so far)" in caplog.text
    after = trainer.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)


def test_cached_backbone_features_give_the_same_step(tmp_path):
    cfg = config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.device=cpu", "model.freeze_backbone=true",
                                    "train.curriculum=false"])
    losses = []
    for cache in (False, True):
        cfg["model"]["cache_features"] = cache
        trainer = Trainer(cfg)
        batch = _demo_batch([0])
        losses.append([trainer.train_step(batch, [0])["loss"] for _ in range(2)])
        if cache:
            assert trainer.cache.misses == 2 and trainer.cache.hits == 2  # both views computed once, then reused
    assert losses[0] == pytest.approx(losses[1], rel=1e-9, abs=1e-12)
    with pytest.raises(Exception, match="model.cache_features: needs a frozen backbone"):
        build_network(config_mod.resolve(None, ["model.cache_features=true"]))


def test_feature_cache_keys_by_name_and_size(tiny_net):
    cache = FeatureCache(tiny_net, capacity=1)
    images = torch.rand(2, 3, 56, 70)
    direct = tiny_net.backbone_features(images)
    torch.testing.assert_close(cache(images, ["a", "b"]), direct)
    torch.testing.assert_close(cache(images, ["a", "b"]), direct)  # one stored, one recomputed (capacity 1)
    assert len(cache.store) == 1 and cache.hits == 1 and cache.misses == 3


# -- processes ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_whole_process_group_stops_cleanly(bags, tmp_path, signum):
    """What systemd (KillMode=control-group), `kill -- -PGID` and Ctrl-C do: the signal reaches the data-loading
    workers too. The trainer must still finish its step, write last.ckpt and exit 130, not die with "DataLoader
    worker is killed by signal" and lose the steps since the last checkpoint."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "training/train.py",
                             *_overrides(bags, run, "train.max_steps=200", "data.num_workers=1")],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len(_losses(run)) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=300)
    ckpt = run / "checkpoints" / "last.ckpt"
    assert proc.returncode == 130 and "killed by signal" not in err, err[-2000:]
    assert f"continue with --resume {ckpt}" in err
    assert int(torch.load(ckpt, weights_only=True)["step"]) >= 2
    time.sleep(1.0)  # the workers ignore the signal: the main process must have stopped them on its way out
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


@pytest.mark.slow
def test_kill_and_resume_continues_exactly(bags, tmp_path):
    run_b = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "training/train.py", *_overrides(bags, run_b, "train.max_steps=50")],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (run_b / "metrics.jsonl").exists() and len(_losses(run_b)) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    ckpt = run_b / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    k = int(state["step"])
    assert k >= 2 and f"continue with --resume {ckpt}" in err
    more = 4  # steps after the resume (more than one batch of the 8-frame scene, so the data order matters too)
    resumed = _run(["training/train.py", "--resume", str(ckpt),
                    *_overrides(bags, run_b, f"train.max_steps={k + more}")])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run_a = tmp_path / "straight"
    straight = _run(["training/train.py", *_overrides(bags, run_a, f"train.max_steps={k + more}")])
    assert straight.returncode == 0, straight.stderr[-2000:]
    # before the first step, what the run found and what it will do
    assert re.search(r"train\.py: train: \d+ recordings in \d+ places, \d+ images, \d+ pairs \(baseline "
                     r"[\d.]+-[\d.]+ m, view angle <= \d+ deg\)", straight.stdout), straight.stdout
    assert "train.py: val: none" in straight.stdout
    assert "from scratch, at step 0;" in straight.stdout and f"until step {k + more};" in straight.stdout
    assert f"at step {k};" in resumed.stdout
    a, b = _losses(run_a), _losses(run_b)
    assert [a[s] for s in range(1, k + more + 1)] == [b[s] for s in range(1, k + more + 1)]  # bit-identical losses
    assert (run_a / "config.yaml").exists() and list((run_a / "tb").glob("events.out.tfevents.*"))
    # the end states agree exactly: weights (and BatchNorm buffers), optimiser moments and counters, step
    end_a, end_b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (run_a, run_b))
    assert end_a["step"] == end_b["step"] == k + more
    assert end_a["state_dict"].keys() == end_b["state_dict"].keys()
    assert all(torch.equal(v, end_b["state_dict"][n]) for n, v in end_a["state_dict"].items())
    _assert_same_tree(end_a["optimizer"], end_b["optimizer"])
    assert end_a["optimizer"]["state"]  # precondition: the optimiser has moments to compare


def _assert_same_tree(a, b, path="optimizer"):
    """Nested containers of tensors and plain values are exactly equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same_tree(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def test_train_py_rejects_bad_config_with_one_line(tmp_path):
    proc = _run(["training/train.py", "train.batch_size=0.5", f"train.run_dir={tmp_path}"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "train.py: error: override: train.batch_size: expected an integer, got 0.5"]
    proc = _run(["training/train.py", f"data.train=[{tmp_path / 'nope'}]", f"train.run_dir={tmp_path}"])
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        f"train.py: error: data.train: {tmp_path / 'nope'} does not exist")


@pytest.mark.slow
def test_evaluate_writes_a_submission_and_benchmark_metrics(bags, tmp_path):
    run = tmp_path / "run"
    proc = _run(["training/train.py", *_overrides(bags, run, "train.max_steps=2", f"data.val=[{bags / 'val'}]",
                                                  "train.val_every=1", "train.val_max_pairs=3")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    vals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert [v["step"] for v in vals] == [1, 2] and "AUC @ VCRE < 90px" in vals[0]["val"]
    assert "median_rot_err_deg" in vals[0]["val"] and "median_rot_err_deg" in vals[0]["val"]["identity"]
    for name in ("best.ckpt", "best_vcre.ckpt", "best_pose.ckpt"):  # best by validation VCRE / pose AUC
        assert (run / "checkpoints" / name).exists()
    out = tmp_path / "eval"
    proc = _run(["training/evaluate.py", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--data",
                 str(bags / "val"), "--out", str(out), "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"AUC @ VCRE < 90px", "Precision @ Pose Error < (25.0cm, 5deg)", "Estimates for % of frames"} <= set(metrics)
    assert {"median_trans_err_m", "scale_ratio_median", "median_trans_dir_err_deg"} <= set(metrics)
    assert set(metrics["identity"]) >= {"median_trans_err_m", "prec_pose_25cm_5deg"}  # the no-motion floor
    with zipfile.ZipFile(out / "submission.zip") as zf:
        names = zf.namelist()
        assert names == ["pose_scene_000.txt"]
        lines = zf.read(names[0]).decode().splitlines()
    assert lines and all(len(line.split()) == 9 for line in lines)
    bad = _run(["training/evaluate.py", "--checkpoint", str(tmp_path / "missing.ckpt"), "--data", str(bags)])
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_checkpoint_holds_everything_and_restores_rng(tmp_path):
    import random

    import numpy as np

    cfg = config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.device=cpu", "train.curriculum=false"])
    trainer = Trainer(cfg)
    trainer.train_step(_demo_batch([0]), [0])
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    path = trainer.save("x.ckpt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    state = torch.load(path, weights_only=True)  # safe to load: plain containers and tensors only
    assert {"state_dict", "optimizer", "training_config", "step", "epoch", "batch_in_epoch", "rng"} <= set(state)
    assert state["step"] == 1 and state["training_config"] == cfg
    other = Trainer(cfg)
    other.resume(path)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert other.step == 1 and all(torch.equal(a, b) for a, b in zip(other.net.state_dict().values(),
                                                                       trainer.net.state_dict().values()))
    from mickey_ros.model import load_checkpoint

    assert load_checkpoint(path).preset == "tiny"  # training checkpoints load wherever a checkpoint is accepted
    with pytest.raises(Exception, match="not a training checkpoint"):
        from mickey_ros.model import save_checkpoint

        other.resume(save_checkpoint(trainer.net, tmp_path / "plain.ckpt"))


@pytest.mark.slow
def test_evaluate_on_a_mapfree_tree_matches_the_benchmark_scoring(tmp_path):
    """The demo pair as a Map-free val scene: evaluate.py's own scoring equals the benchmark's on its zip."""
    import shutil

    import numpy as np

    from mickey_ros.geometry.se3 import matrix_to_quat_wxyz
    from mickey_ros.mapfree import KEY_MEDIAN_ROT, KEY_MEDIAN_TRANS, KEY_MEDIAN_VCRE, evaluate_submission

    demo = REPO / "mickey_ros" / "data" / "demo"
    scene = tmp_path / "mapfree" / "val" / "s00000"
    (scene / "seq0").mkdir(parents=True)
    (scene / "seq1").mkdir()
    shutil.copy(demo / "im0.png", scene / "seq0" / "frame_00000.jpg")  # PNG bytes: read by content, lossless
    T = np.eye(4)
    T[:3] = np.loadtxt(demo / "gt_pose.txt").reshape(3, 4)
    q, t = matrix_to_quat_wxyz(T[:3, :3]), T[:3, 3]
    poses, intr = ["seq0/frame_00000.jpg 1 0 0 0 0 0 0"], ["seq0/frame_00000.jpg 220 220 146.5 111.5 294 224"]
    for i in range(6):  # evaluated: lines 0 and 5
        name = f"seq1/frame_{i:05d}.jpg"
        shutil.copy(demo / "im1.png", scene / name)
        poses.append(name + " " + " ".join(f"{v:.9f}" for v in (*q, *t)))
        intr.append(f"{name} 220 220 146.5 111.5 294 224")
    (scene / "poses.txt").write_text("\n".join(poses) + "\n")
    (scene / "intrinsics.txt").write_text("\n".join(intr) + "\n")
    from mickey_ros.model import save_checkpoint
    from mickey_ros.model.default import load_default_network

    ckpt = save_checkpoint(load_default_network(), tmp_path / "net.ckpt")
    out = tmp_path / "eval"
    proc = _run(["training/evaluate.py", "--checkpoint", str(ckpt), "--kind", "mapfree", "--data",
                 str(tmp_path / "mapfree"), "--out", str(out), "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    benchmark = evaluate_submission(out / "submission.zip", tmp_path / "mapfree", "val")
    assert {k: metrics[k] for k in benchmark} == benchmark  # the benchmark's keys, plus the pose summary
    assert "identity" in metrics and "median_trans_dir_err_deg" in metrics
    with zipfile.ZipFile(out / "submission.zip") as zf:
        lines = zf.read("pose_s00000.txt").decode().splitlines()
    assert [line.split()[0] for line in lines] == ["seq1/frame_00000.jpg", "seq1/frame_00005.jpg"]
    limited = _run(["training/evaluate.py", "--checkpoint", str(ckpt), "--kind", "mapfree", "--data",
                    str(tmp_path / "mapfree"), "--out", str(tmp_path / "own"), "--device", "cpu", "--max-pairs", "2"])
    own = json.loads((tmp_path / "own" / "metrics.json").read_text())  # our scoring of the same two pairs
    assert limited.returncode == 0 and own.keys() == metrics.keys()
    # Our scoring uses the float64 poses; the benchmark reads them back from the zip, q and t rounded to 6 decimals
    # (<= 5e-7 per component). Near a 2 deg rotation that moves the angle by up to 2 * 1e-6 / sin(1 deg) rad
    # (~0.007 deg); t moves by < 1e-6 m; the reprojection of 5 virtual points by well under 0.01 px.
    rounding = {KEY_MEDIAN_ROT: 0.01, KEY_MEDIAN_TRANS: 1e-5, KEY_MEDIAN_VCRE: 0.01}
    for key in benchmark:
        assert own[key] == pytest.approx(metrics[key], rel=0, abs=rounding.get(key, 1e-6)), key
    from mickey_ros.geometry.pose_eval import flatten

    summary_own, summary = flatten({k: own[k] for k in own if k not in benchmark}), flatten(
        {k: metrics[k] for k in metrics if k not in benchmark})
    assert summary_own.keys() == summary.keys()
    for key in summary:
        assert summary_own[key] == pytest.approx(summary[key], nan_ok=True), key


def test_bf16_autocast_step_keeps_the_loss_geometry_in_float64(tmp_path):
    """The GPU recipe's bf16 autocast, run on the CPU: backbone in bf16, heads float32, loss float64, step finite."""
    cfg = config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.device=cpu", "train.precision=bf16",
                                    "train.curriculum=false", "train.image_every=1"])
    trainer = Trainer(cfg)
    assert trainer.autocast_dtype == torch.bfloat16
    scalars = trainer.train_step(_demo_batch([0]), [0])
    _, out0, _, P, lo = trainer._last_outputs
    assert out0.depth.dtype == out0.kpts.dtype == P.dtype == torch.float32  # metric outputs keep their precision
    fp32 = Trainer(config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.device=cpu"]))
    with torch.no_grad():
        feats = fp32.step_module._features(_demo_batch([0])["image0"])
        feats_bf16 = trainer.step_module._features(_demo_batch([0])["image0"])
    assert not torch.equal(feats, feats_bf16)  # the backbone really ran under bf16 autocast
    assert lo.loss.dtype == torch.float64 and scalars["skipped_steps"] == 0
    assert all(torch.isfinite(p.grad).all() for p in trainer.params if p.grad is not None)
    with pytest.raises(Exception, match="train.precision: expected auto, fp32, bf16 or fp16, got 'fp8'"):
        Trainer(config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.precision=fp8"]))


def test_checkpoints_record_the_size_the_run_trains_at(tmp_path):
    """A run warm-started (model.checkpoint) at another input size records its own size, not the checkpoint's:
    the Relocalizer brings images to the recorded size by default."""
    import torch.nn.functional as F

    from mickey_ros.model import load_checkpoint

    cfg = config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.device=cpu", "train.curriculum=false"])
    trainer = Trainer(cfg)
    batch = _demo_batch([0])
    height, width = batch["image0"].shape[-2:]
    trainer.train_step(batch, [0])
    first = trainer.save("first.ckpt")
    assert load_checkpoint(first).input_size == (width, height)
    resumed = Trainer(config_mod.resolve(None, [f"train.run_dir={tmp_path / 'warm'}", "train.device=cpu",
                                                "train.curriculum=false", f"model.checkpoint={first}"]))
    assert resumed.net.input_size == (width, height)  # the checkpoint's, until the run trains
    bigger = dict(batch)  # the same pair at 364 x 280, as data.resize=[364, 280] gives it
    scale = torch.tensor([364 / width, 280 / height, 1.0], dtype=torch.float32)[:, None]
    for key in ("image0", "image1"):
        bigger[key] = F.interpolate(batch[key], size=(280, 364), mode="bilinear", align_corners=False)
    for key in ("K_color0", "K_color1", "Kori_color0", "Kori_color1"):
        bigger[key] = batch[key] * scale
    resumed.train_step(bigger, [0])
    new_height, new_width = bigger["image0"].shape[-2:]
    assert (new_width, new_height) != (width, height)
    assert load_checkpoint(resumed.save("second.ckpt")).input_size == (new_width, new_height)


def test_a_resize_that_is_not_a_multiple_of_14_is_recorded_so_the_relocalizer_feeds_what_training_fed(tmp_path):
    """data.resize [150, 115] trains on 150 x 115 images cropped top-left to 140 x 112. The checkpoint records
    150 x 115, so the Relocalizer resizes an image of that aspect to 150 x 115 and crops the same rows, with the same
    K; recording the crop made it squash the whole image into 140 x 112 (another K, pixels the run never saw)."""
    import cv2
    import numpy as np

    from mickey_ros import Relocalizer
    from mickey_ros.model import load_checkpoint
    from training.data.datasets import prepare_view

    rgb = cv2.imread(str(REPO / "mickey_ros" / "data" / "demo" / "im0.png"))[:, :, ::-1].copy()  # 294 x 224
    K = np.array([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])
    image, K_train = prepare_view(rgb, K, (150, 115))
    assert image.shape == (3, 112, 140)
    batch = _demo_batch([0])
    for key in ("image0", "image1"):
        batch[key] = image[None].clone()
    for key in ("K_color0", "K_color1"):
        batch[key] = K_train[None].clone()
    trainer = Trainer(config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.device=cpu",
                                                "train.curriculum=false", "data.resize=[150, 115]"]))
    trainer.train_step(batch, [0])
    net = load_checkpoint(trainer.save("last.ckpt"))
    assert net.input_size == (150, 115)
    tensor, K_net, _ = Relocalizer(net.eval(), device="cpu").network_input(rgb, K)
    assert tensor.shape == (1, 3, 112, 140)
    np.testing.assert_allclose(K_net, K_train.numpy(), rtol=1e-6)
    assert float((tensor[0] - image).abs().max()) < 1.0 / 255  # bilinear on float vs on uint8: rounding only


def test_model_depth_focal_ref_continues_a_metric_checkpoint_as_focal_relative(tmp_path):
    """model.depth_focal_ref: same weights, depth from then on x fx / ref; the recorded input size is kept."""
    import dataclasses

    from mickey_ros.model.checkpoint import save_checkpoint
    from mickey_ros.model.mickey import PRESETS, MicKey

    torch.manual_seed(0)
    metric = MicKey(dataclasses.replace(PRESETS["small"], depth_focal_ref=0.0), preset="small").eval()
    metric.input_size = (112, 84)
    path = save_checkpoint(metric, tmp_path / "metric.pt")
    net = build_network(config_mod.resolve(None, [f"model.checkpoint={path}", "model.depth_focal_ref=228.0"])).eval()
    assert net.config.depth_focal_ref == 228.0 and net.input_size == (112, 84)
    x = torch.rand(1, 3, 84, 112)
    with torch.no_grad():
        assert torch.allclose(net(x, torch.tensor([114.0])).depth, metric(x).depth * 0.5)
    same = build_network(config_mod.resolve(None, [f"model.checkpoint={path}"]))
    assert same.config.depth_focal_ref == 0.0
    from mickey_ros.errors import InputError

    with pytest.raises(InputError, match=r"depth_focal_ref: expected 0 \(off\) or a focal length in pixels, got -1"):
        build_network(config_mod.resolve(None, [f"model.checkpoint={path}", "model.depth_focal_ref=-1.0"]))


def test_resume_applies_the_configs_learning_rate_and_keeps_adams_moments(tmp_path, caplog):
    """``--resume CKPT optim.lr=X`` continues at X (load_state_dict alone would keep the checkpoint's rate and
    ignore the override); an unchanged config keeps the checkpoint's rate, so that resume stays exact."""
    base = [f"train.run_dir={tmp_path}", "train.device=cpu", "train.curriculum=false", "optim.lr=1e-3"]
    trainer = Trainer(config_mod.resolve(None, base))
    trainer.train_step(_demo_batch([0]), [0])
    path = trainer.save("x.ckpt")
    moments = {k: v["exp_avg"].clone() for k, v in trainer.opt.state_dict()["state"].items()}
    same = Trainer(config_mod.resolve(None, base))
    with caplog.at_level("WARNING", logger="mickey_ros.training"):
        same.resume(path)
    assert [g["lr"] for g in same.opt.param_groups] == [1e-3] * len(same.opt.param_groups)
    assert "optim.lr" not in caplog.text
    lower = Trainer(config_mod.resolve(None, base + ["optim.lr=3e-5", "optim.eps=1e-7"]))
    with caplog.at_level("WARNING", logger="mickey_ros.training"):
        lower.resume(path)
    assert all(g["lr"] == 3e-5 and g["eps"] == 1e-7 for g in lower.opt.param_groups)
    assert "lr 0.001, eps 1e-06 in the checkpoint; continuing with the config's optim.lr 3e-05" in caplog.text
    state = lower.opt.state_dict()["state"]
    assert moments and all(torch.equal(state[k]["exp_avg"], v) for k, v in moments.items())
    assert lower.step == 1
