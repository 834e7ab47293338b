"""Benchmark of the test-time solver (mickey_ros.solver) at the official setting.

Method
------
* Inputs are synthetic but shaped like MicKey's: a keypoint grid of ``h x w`` cells per image
  (16x21 = 336 keypoints for 224x294 px images, 51x38 = 1938 for 720x540 px), random 3D keypoints
  (depth 2-10 m), and a matching matrix built as the network builds it: dual softmax (temperature 0.1,
  dustbin score 1.0) of unit 128-D descriptors times the outer product of spatial-softmax keypoint scores
  whose 3 outermost cells are zero. Two kinds of descriptors:
  ``random`` (independent per view: a flat P) and ``matched`` (view 1 = noisy copy of view 0: a P
  concentrated on one entry per row, as with a trained network; this stresses the sampler's top-up).
* Official setting: 20 draws x 2048 matches, 100 minimal sets of 3 per draw (2000 hypotheses),
  scoring over each draw's 2048 matches, up to 4 refinements.
* Timed stages (each call is timed alone with ``time.perf_counter``; on CUDA after a synchronise):
  ``hypotheses_scoring_refinement`` = ``estimate_from_draws`` (minimal sets, 2000 Kabsch, scoring,
  refinement) on fixed draws; ``sampling`` = ``sample_correspondences`` (20 x 2048 without
  replacement); ``solve_end_to_end`` = ``solve_relative_pose`` (checks + sampling + the rest + outputs);
  ``torch_multinomial_without_replacement`` = ``torch.multinomial(P.flatten().expand(20, -1), 2048)``,
  the official sampler, for comparison (720x540 only, few repeats: it is slow).
* ``torch.set_num_threads(THREADS)`` (2 by default), 3 warm-up calls, then ``--repeats`` (>= 20) timed
  calls, each with a fresh seeded generator. Reported: median, IQR (p75 - p25), min, max in
  milliseconds, the number of repeats, torch version, threads, CPU, git commit.

Run: ``python bench/bench_solver.py`` -> ``bench/results/solver_cpu.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mickey_ros.solver import (  # noqa: E402  (after the path set-up so the script runs from a checkout)
    SolverConfig,
    estimate_from_draws,
    sample_correspondences,
    solve_relative_pose,
)

GRIDS = {"224x294": (16, 21), "720x540": (51, 38)}  # image H x W -> keypoint grid h x w (14 px cells)
BORDER = 3  # cells of zero score on each side (official)


def realistic_P(h: int, w: int, kind: str, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``[N, N]`` float32 matching matrix (N = h * w) built like the network's (see module docstring)."""
    n = h * w
    desc0 = torch.nn.functional.normalize(torch.randn(n, 128, generator=generator), dim=-1)
    if kind == "random":
        desc1 = torch.nn.functional.normalize(torch.randn(n, 128, generator=generator), dim=-1)
    else:
        desc1 = torch.nn.functional.normalize(desc0 + 0.3 * torch.randn(n, 128, generator=generator), dim=-1)
    sim = desc0 @ desc1.T / 0.1
    full = torch.full((n + 1, n + 1), 1.0)  # dustbin row/column/corner
    full[:n, :n] = sim
    dual = (full.softmax(0) * full.softmax(1))[:n, :n]

    def scores() -> torch.Tensor:
        logits = torch.randn(h, w, generator=generator)
        e = torch.exp(logits - logits.mean())
        e[:BORDER], e[-BORDER:], e[:, :BORDER], e[:, -BORDER:] = 0, 0, 0, 0
        return (e / e.sum()).flatten()

    return (dual * torch.outer(scores(), scores())).to(device)


def random_points(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``[n, 3]`` float64 points in front of a camera, depth 2-10 m."""
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 2 - 1
    z = 2 + 8 * torch.rand(n, 1, generator=generator, dtype=torch.float64)
    return torch.cat([xy * z, z], dim=1).to(device)


def measure(fn: Callable[[int], object], repeats: int, warmup: int, device: torch.device) -> dict:
    """Time ``fn(seed)`` ``repeats`` times after ``warmup`` calls; milliseconds."""
    for i in range(warmup):
        fn(10_000 + i)
    times = []
    for i in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {
        "median_ms": statistics.median(times),
        "p25_ms": q[0],
        "p75_ms": q[2],
        "iqr_ms": q[2] - q[0],
        "min_ms": min(times),
        "max_ms": max(times),
        "repeats": repeats,
    }


def environment(device: torch.device, threads: int) -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": cpu,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),  # uncommitted or untracked files present
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--multinomial-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/solver_<device type>.json")
    args = parser.parse_args()
    if args.repeats < 20:
        parser.error("--repeats: expected at least 20")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = SolverConfig()
    results: dict = {"config": config.__dict__, "environment": environment(device, args.threads), "grids": {}}

    for name, (h, w) in GRIDS.items():
        grid: dict = {"grid_hw": [h, w], "keypoints_per_image": h * w}
        for kind in ("random", "matched"):
            g = torch.Generator().manual_seed(0)
            P = realistic_P(h, w, kind, g, device)
            pts0, pts1 = random_points(h * w, g, device), random_points(h * w, g, device)
            gen = torch.Generator(device=device)
            flat, weights = sample_correspondences(P, config.num_samples, config.num_draws, gen.manual_seed(0))
            X0, X1 = pts0[flat // P.shape[1]], pts1[flat % P.shape[1]]
            entry = {"candidates": int(torch.count_nonzero(P)), "matches_per_draw": int(flat.shape[1])}
            entry["sampling"] = measure(
                lambda s: sample_correspondences(P, config.num_samples, config.num_draws, gen.manual_seed(s)),
                args.repeats, args.warmup, device,
            )
            entry["hypotheses_scoring_refinement"] = measure(
                lambda s: estimate_from_draws(X0, X1, weights, config, gen.manual_seed(s)),
                args.repeats, args.warmup, device,
            )
            entry["solve_end_to_end"] = measure(
                lambda s: solve_relative_pose(pts0, pts1, P, config, gen.manual_seed(s)),
                args.repeats, args.warmup, device,
            )
            if name == "720x540" and kind == "random":
                rows = P.flatten().expand(config.num_draws, -1)
                entry["torch_multinomial_without_replacement"] = measure(
                    lambda s: torch.multinomial(rows, config.num_samples, False, generator=gen.manual_seed(s)),
                    args.multinomial_repeats, 1, device,
                )
            grid[kind] = entry
            print(
                f"{name} {kind:7s}: sampling {entry['sampling']['median_ms']:.1f} ms, "
                f"hypotheses+scoring+refinement {entry['hypotheses_scoring_refinement']['median_ms']:.1f} ms, "
                f"end-to-end {entry['solve_end_to_end']['median_ms']:.1f} ms"
                + (f", torch.multinomial {entry['torch_multinomial_without_replacement']['median_ms']:.0f} ms"
                   if "torch_multinomial_without_replacement" in entry else "")
            )
        results["grids"][name] = grid

    out = args.out or REPO / "bench" / "results" / f"solver_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
