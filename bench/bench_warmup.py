"""Benchmark of the first-call cost: the first ``estimate`` of a process, with and without ``Relocalizer.warmup``.

Method
------
* Each sample is a fresh Python process (``subprocess``, ``torch.set_num_threads(THREADS)``), because the first-call
  cost (kernel loading, thread-pool start, allocator growth, per-size set-up) is paid once per process. The
  process loads the bundled default network (``load_default_network``, fp32, seed 0) and the bundled demo pair
  (224x294, K from ``intrinsics.txt``), then times with ``time.perf_counter`` (CUDA: synchronised):
  ``cold``: ``first_ms`` = the first ``estimate`` of the process, ``steady_ms`` = the median of the next 3;
  ``warm``: ``warmup_ms`` = ``Relocalizer.warmup()`` (the network's training size), then ``first_ms`` = the first
  real ``estimate`` after it, ``steady_ms`` as above.
* ``--repeats`` processes per mode (>= 5), interleaved (cold, warm, cold, ...) so machine load hits both alike.
* Reported per mode: median, p25, p75, IQR (``statistics.quantiles`` exclusive), min, max of each time in ms; and
  ``first_over_steady`` = median(first_ms) / median(steady_ms) per mode (1.0 = no first-call penalty), plus the
  environment (torch, threads, device, CPU, git commit).

Run: ``nice -n 10 python bench/bench_warmup.py [--device cpu] [--repeats 7]`` -> ``bench/results/warmup_<device>.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

THREADS = 2

CHILD = r"""
import json, statistics, sys, time
import numpy as np, torch
torch.set_num_threads({threads})
sys.path.insert(0, {repo!r})
from mickey_ros import Relocalizer
from mickey_ros.cli import read_image
from mickey_ros.model.default import load_default_network
device = torch.device({device!r})
demo = {repo!r} + "/mickey_ros/data/demo/"
K = np.array([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])
im0, im1 = read_image(demo + "im0.png", "im0"), read_image(demo + "im1.png", "im1")
reloc = Relocalizer(load_default_network(), device=device, seed=0, precision="fp32")
def timed(fn):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1e3 * (time.perf_counter() - start)
out = {{}}
if {warm}:
    out["warmup_ms"] = timed(reloc.warmup)
out["first_ms"] = timed(lambda: reloc.estimate(im0, K, im1, K))
out["steady_ms"] = statistics.median(timed(lambda: reloc.estimate(im0, K, im1, K)) for _ in range(3))
print(json.dumps(out))
"""


def _sample(device: str, warm: bool) -> dict:
    code = CHILD.format(threads=THREADS, repo=str(REPO), device=device, warm=warm)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_warmup: child process failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats: expected at least 5")
    samples: dict[str, list[dict]] = {"cold": [], "warm": []}
    for _ in range(args.repeats):
        for mode in ("cold", "warm"):
            samples[mode].append(_sample(args.device, mode == "warm"))
    from bench_reference import _stats
    from bench_solver import environment
    import torch

    torch.set_num_threads(THREADS)
    result: dict = {"benchmark": "first-call cost with and without Relocalizer.warmup", "environment":
                    environment(torch.device(args.device), THREADS), "size": "224x294 (demo pair)"}
    for mode, rows in samples.items():
        entry = {key: _stats([r[key] for r in rows]) for key in rows[0]}
        entry["first_over_steady"] = entry["first_ms"]["median_ms"] / entry["steady_ms"]["median_ms"]
        result[mode] = entry
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"warmup_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for mode in ("cold", "warm"):
        e = result[mode]
        extra = f", warmup() {e['warmup_ms']['median_ms']:.0f} ms" if "warmup_ms" in e else ""
        print(f"{mode}: first {e['first_ms']['median_ms']:.0f} ms, steady {e['steady_ms']['median_ms']:.0f} ms, "
              f"ratio {e['first_over_steady']:.2f}{extra}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
