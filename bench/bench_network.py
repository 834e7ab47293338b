"""Benchmark of the network forward (backbone + four heads) and of a whole Relocalizer.estimate.

Method
------
* Random-initialised networks (timing does not depend on the weights), seeded; eval mode, ``no_grad``.
* Per image, batch 1: ``backbone_features`` then ``forward_heads``, timed together (``forward``);
  presets ``tiny``, ``small`` (the bundled default's architecture: conv stem + ViT, focal-relative depth, fx
  0.8 x width) and ``official`` (DINOv2 ViT-L/14 + heads) at 224x294 (H x W, 16 x 21 patches);
  the official backbone also under bf16 autocast (heads in float32, as the Relocalizer runs it);
  ``--full`` adds the official preset at the Map-free size 720x540 (51 x 38 patches; ~12 s per image here).
* ``pair_estimate``: one ``Relocalizer.estimate`` on a pair (two forwards + matching + solver), per preset.
* ``torch.set_num_threads(THREADS)`` (2 by default); warm-up calls first, then repeated timed calls with
  ``time.perf_counter`` (CUDA: synchronised inside the timed region); repeats: tiny/small 20 (3 warm-up), official 5
  (1 warm-up); median, p25, p75, IQR (= p75 - p25, ``statistics.quantiles`` exclusive method), min, max in ms,
  plus torch version, threads, device, CPU and git commit.

Run: ``python bench/bench_network.py [--full] [--device cpu|cuda]`` -> ``bench/results/network_<device>.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_solver import environment, measure  # noqa: E402

from mickey_ros import Relocalizer  # noqa: E402
from mickey_ros.model import build_model  # noqa: E402


def forward_case(net, height: int, width: int, device: torch.device, autocast: torch.dtype | None,
                 repeats: int, warmup: int) -> dict:
    images = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    ctx = (lambda: torch.autocast(device.type, dtype=autocast)) if autocast else contextlib.nullcontext
    focal = torch.full((1,), 0.8 * width, device=device)  # pixels; used by focal-relative depth heads only

    @torch.no_grad()
    def run(_: int) -> None:
        with ctx():
            feat = net.backbone_features(images)
        net.forward_heads(feat.float(), focal)

    return measure(run, repeats, warmup, device)


def pair_case(net, height: int, width: int, device: torch.device, repeats: int, warmup: int) -> dict:
    rng = np.random.default_rng(0)
    image0 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image1 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    K = np.array([[0.8 * width, 0, width / 2], [0, 0.8 * width, height / 2], [0, 0, 1.0]])
    reloc = Relocalizer(net, device=device, seed=0, precision="fp32")
    return measure(lambda _: reloc.estimate(image0, K, image1, K), repeats, warmup, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="also the official preset at 720x540")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {"environment": environment(device, args.threads), "cases": []}

    def add(name: str, preset: str, hw: tuple[int, int], stats: dict, **extra) -> None:
        row = {"case": name, "preset": preset, "height": hw[0], "width": hw[1], **extra, **stats}
        results["cases"].append(row)
        print(f"{name:14s} {preset:8s} {hw[0]}x{hw[1]} {extra} median {stats['median_ms']:.1f} ms "
              f"p25-p75 {stats['p25_ms']:.1f}-{stats['p75_ms']:.1f} (n={stats['repeats']})", flush=True)

    torch.manual_seed(0)
    tiny = build_model("tiny", device=device).eval()
    add("forward", "tiny", (224, 294), forward_case(tiny, 224, 294, device, None, 20, 3), precision="fp32")
    add("pair_estimate", "tiny", (224, 294), pair_case(tiny, 224, 294, device, 20, 2), precision="fp32")
    torch.manual_seed(0)
    small = build_model("small", device=device).eval()
    add("forward", "small", (224, 294), forward_case(small, 224, 294, device, None, 20, 3), precision="fp32")
    add("pair_estimate", "small", (224, 294), pair_case(small, 224, 294, device, 20, 2), precision="fp32")
    official = build_model("official", device=device).eval()
    add("forward", "official", (224, 294), forward_case(official, 224, 294, device, None, 5, 1), precision="fp32")
    add("forward", "official", (224, 294), forward_case(official, 224, 294, device, torch.bfloat16, 5, 1),
        precision="bf16 backbone")
    add("pair_estimate", "official", (224, 294), pair_case(official, 224, 294, device, 5, 1), precision="fp32")
    if args.full:
        add("forward", "official", (720, 540), forward_case(official, 720, 540, device, None, 5, 1), precision="fp32")
    out = args.out or REPO / "bench" / "results" / f"network_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
