"""Benchmark of training steps per second, with and without cached backbone features.

Method
------
* One full optimiser step of ``training.trainer.Trainer.train_step``: both forwards, matching, the official loss
  (20 draws x 20 hypotheses x 512 matches per pair, refinement, REINFORCE + direct gradients), backward, gradient
  clipping and Adam. Random-initialised networks (timing does not depend on the weights), seeded; curriculum off
  (every pair in the backward pass); batch of ``--batch`` copies of the shipped 224x294 demo pair (16 x 21 patches),
  each pair with its own loss generator.
* Cases: ``tiny`` (trainable backbone, the CPU preset); ``tiny`` and ``vits14`` (DINOv2 ViT-S/14 size) with a frozen
  backbone, once computing the backbone every step and once from the feature cache (warm-up steps fill it), so the
  ratio shows what ``model.cache_features=true`` buys; the same for the official preset (ViT-L/14, 5 repeats).
* ``torch.set_num_threads(THREADS)`` (2 by default); warm-up steps first, then repeated timed steps with
  ``time.perf_counter`` (CUDA: synchronised inside the timed region); median, p25, p75, IQR, min, max in ms, and
  steps/s = 1000 / median; plus torch version, threads, device, CPU and git commit.

Run: ``python bench/bench_training.py [--device cpu|cuda] [--batch 2]`` -> ``bench/results/training_<device>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "test" / "training"))

from bench_solver import environment, measure  # noqa: E402
from ddp_grad_check import demo_batch  # noqa: E402
from training import config as config_mod  # noqa: E402
from training.trainer import Trainer  # noqa: E402


def step_case(preset: str, frozen: bool | None, cache: bool, batch: int, device: torch.device, repeats: int,
              warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [f"model.preset={preset}", f"model.cache_features={str(cache).lower()}", "train.curriculum=false",
                     f"train.device={device}", f"train.run_dir={run_dir}", "train.precision=fp32"]
        if frozen is not None:
            overrides.append(f"model.freeze_backbone={str(frozen).lower()}")
        trainer = Trainer(config_mod.resolve(None, overrides))
        indices = list(range(batch))
        data = demo_batch(indices)
        data["pair_names"] = ([f"im0_{i}" for i in indices], [f"im1_{i}" for i in indices])
        return measure(lambda _: trainer.train_step(data, indices), repeats, warmup, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {"environment": environment(device, args.threads), "batch_pairs": args.batch, "height": 224,
               "width": 294, "cases": []}

    def add(preset: str, frozen: bool | None, cache: bool) -> dict:
        repeats = args.repeats if preset != "official" else min(args.repeats, 5)
        stats = step_case(preset, frozen, cache, args.batch, device, repeats, 2)
        row = {"preset": preset, "backbone": "trainable" if frozen is False or (frozen is None and preset == "tiny")
               else "frozen", "cached_features": cache, "steps_per_s": 1e3 / stats["median_ms"], **stats}
        results["cases"].append(row)
        print(f"{preset:7s} {row['backbone']:9s} cache={cache!s:5s} median {stats['median_ms']:.0f} ms "
              f"(p25-p75 {stats['p25_ms']:.0f}-{stats['p75_ms']:.0f}) = {row['steps_per_s']:.2f} steps/s", flush=True)
        return row

    add("tiny", None, False)
    ratios = {}
    for preset in ("tiny", "vits14", "official"):
        plain, cached = add(preset, True, False), add(preset, True, True)
        ratios[preset] = cached["steps_per_s"] / plain["steps_per_s"]
        print(f"{preset}: cached / uncached steps per second = {ratios[preset]:.2f}")
    results["cache_speedup"] = ratios
    out = args.out or REPO / "bench" / "results" / f"training_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
