"""Benchmark of reference mode: one query against cached reference features vs a full pair.

Method
------
* Network (``--network``): ``default`` = the bundled default network (``mickey_ros.model.default.
  load_default_network``, the trained ``small`` preset); ``official-size`` = the ``official`` preset (DINOv2 ViT-L/14
  backbone + MicKey heads, 347 M parameters) with random weights: the official model's compute, no weights needed
  (timing only; the solver then sees random matches, which cost what real ones cost: the solver's work does not
  depend on the values). Eval mode, ``no_grad``, fp32 (``precision="fp32"``), solver at its official test-time
  defaults, seed 0. The ratio depends on how the time splits between network and solver: a query saves one
  network run of the pair's two, so it is ``(N + S) / (2N + S)`` with N one network run and S matching + solver.
* Images: the bundled demo pair (``mickey_ros/data/demo/im0.png`` = reference, ``im1.png`` = query, 224x294,
  K from ``intrinsics.txt``) and the same pair resized to twice the size (448x588, K rescaled with the half-pixel
  convention), where the network's share of the time is larger.
* Timed calls (``time.perf_counter``; on CUDA synchronised inside the timed region), each after 3 warm-up calls:
  ``full_pair`` = ``Relocalizer.estimate(reference, K, query, K)`` (two network runs + matching + solver);
  ``cached_query`` = ``Relocalizer.estimate_query(query, K)`` after one ``set_reference(reference, K)`` (one network
  run + matching + solver), the node's per-query cost in reference mode; ``set_reference`` = the one-off reference
  extraction. ``torch.set_num_threads(THREADS)`` (2 by default); ``--repeats`` (>= 20) timed calls per case,
  interleaved (full, query, full, query, ...) so a change in machine load hits both alike.
* Reported per case: median, p25, p75, IQR (``statistics.quantiles`` exclusive method), min, max in ms, repeats;
  per size ``query_over_pair`` = median(cached_query) / median(full_pair) (target: about 0.5) with the same ratio
  of the p25 and of the p75 values as its spread; and the environment (torch, threads, device, CPU, git commit).

Run: ``nice -n 10 python bench/bench_reference.py [--device cpu] [--network official-size --scales 1]`` ->
``bench/results/reference_<device>.json`` (``reference_<device>_official_size.json`` for the official size).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_solver import environment  # noqa: E402

from mickey_ros import Relocalizer  # noqa: E402
from mickey_ros.geometry.camera import rescale_intrinsics  # noqa: E402
from mickey_ros.model import build_model  # noqa: E402
from mickey_ros.model.default import DEFAULT_WEIGHTS, load_default_network  # noqa: E402

DEMO = REPO / "mickey_ros" / "data" / "demo"
K_DEMO = np.array([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])  # intrinsics.txt, both images
SCALES = (1, 2)


def _stats(times_ms: list[float]) -> dict:
    q = statistics.quantiles(times_ms, n=4)
    return {"median_ms": statistics.median(times_ms), "p25_ms": q[0], "p75_ms": q[2], "iqr_ms": q[2] - q[0],
            "min_ms": min(times_ms), "max_ms": max(times_ms), "repeats": len(times_ms)}


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def _images(scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref, query = (cv2.imread(str(DEMO / name))[:, :, ::-1].copy() for name in ("im0.png", "im1.png"))
    if scale == 1:
        return ref, query, K_DEMO
    h, w = ref.shape[:2]
    size = (w * scale, h * scale)
    ref, query = (cv2.resize(im, size, interpolation=cv2.INTER_LINEAR) for im in (ref, query))
    return ref, query, rescale_intrinsics(K_DEMO, scale, scale)


def run_size(reloc: Relocalizer, scale: int, repeats: int, warmup: int, device: torch.device) -> dict:
    ref, query, K = _images(scale)
    extract_ms = _timed(lambda: reloc.set_reference(ref, K), device)
    for _ in range(warmup):
        reloc.estimate(ref, K, query, K)
        reloc.estimate_query(query, K)
    full, cached = [], []
    for _ in range(repeats):
        full.append(_timed(lambda: reloc.estimate(ref, K, query, K), device))
        cached.append(_timed(lambda: reloc.estimate_query(query, K), device))
    pair, one = _stats(full), _stats(cached)
    row = {"height": ref.shape[0], "width": ref.shape[1], "full_pair": pair, "cached_query": one,
           "set_reference_ms": extract_ms,
           "query_over_pair": one["median_ms"] / pair["median_ms"],
           "query_over_pair_p25": one["p25_ms"] / pair["p25_ms"],
           "query_over_pair_p75": one["p75_ms"] / pair["p75_ms"]}
    print(f"{row['height']}x{row['width']}: full pair {pair['median_ms']:.1f} ms (IQR {pair['iqr_ms']:.1f}), "
          f"cached query {one['median_ms']:.1f} ms (IQR {one['iqr_ms']:.1f}), ratio {row['query_over_pair']:.2f}",
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--scales", type=int, nargs="+", default=list(SCALES),
                        help="image sizes as multiples of the 224x294 demo pair")
    parser.add_argument("--network", choices=("default", "official-size"), default="default")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.repeats < 20:
        parser.error("--repeats: expected at least 20")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.network == "official-size":
        net, name, suffix = build_model("official"), "official preset, random weights (official size)", "_official_size"
    else:
        net, name, suffix = load_default_network(), DEFAULT_WEIGHTS.name, ""
    reloc = Relocalizer(net, device=device, seed=0, precision="fp32")
    results = {"environment": environment(device, args.threads), "network": name,
               "precision": "fp32", "repeats": args.repeats, "warmup": args.warmup, "sizes": []}
    out = args.out or REPO / "bench" / "results" / f"reference_{device.type}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for scale in args.scales:  # the file is rewritten after each size: a long run keeps what it measured
        results["sizes"].append(run_size(reloc, scale, args.repeats, args.warmup, device))
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
