"""Side-by-side benchmarks in one run, each comparison given as a ratio (issue 10 item 5).

Method
------
* One process, ``torch.set_num_threads(--threads)``, fixed seeds; every comparison interleaves its two sides
  (a, b, a, b, ...) so a change in machine load hits both alike; ``--warmup`` untimed calls each first, then
  ``--repeats`` timed calls (``time.perf_counter``). Reported per side: median, p25, p75, IQR, min, max (ms), and per
  comparison the ratio of the medians (with the ratios of the p25 and p75 values as its spread).
* ``solver_vs_open3d``: 2048 correspondences of random points (1-5 m in front of the camera, a random pose), 70 %
  replaced by outliers, 1 cm noise on the inliers. Ours: ``solve_relative_pose`` at the official test-time setting
  with ``P`` = the 2048 x 2048 matrix holding the correspondences on its diagonal (so the time includes the official
  sampling of 20 x 2048 matches). Open3D: ``registration_ransac_based_on_correspondence`` (point-to-point, 3-point
  sets, 0.15 m, 2000 iterations, confidence 0.999). Both also report the rotation (deg) and translation (cm) error
  of their median run. Open3D is never a dependency: the benchmark installs it with pip into ``--open3d-dir`` when
  it is missing (``--no-open3d`` skips the comparison).
* ``torch_vs_onnxruntime``: the per-image network (backbone + heads) per preset (the bundled default, ``tiny``,
  ``small``) at 224x294, PyTorch fp32 vs onnxruntime (CPU provider) on a file from ``export_onnx``; ratio = ort / torch.
* ``query_vs_pair``: with the bundled default network on the demo pair, ``estimate_query`` (cached reference) vs
  ``estimate`` (full pair); ratio = query / pair.
* ``batch_vs_single``: 8 pairs (the demo images, flipped variants) through ``estimate_batch`` (``bag --batch 8``) vs
  8 ``estimate`` calls (``--batch 1``); ratio = batch time / single time for the 8 pairs.

Run: ``nice -n 10 python bench/bench_compare.py`` -> ``bench/results/compare_cpu.json``.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_reference import _stats  # noqa: E402
from bench_solver import environment  # noqa: E402

from mickey_ros import Relocalizer  # noqa: E402
from mickey_ros.cli import read_image  # noqa: E402
from mickey_ros.geometry.se3 import make_T, rotation_angle_deg  # noqa: E402
from mickey_ros.model import build_model  # noqa: E402
from mickey_ros.model.default import load_default_network  # noqa: E402
from mickey_ros.solver import SolverConfig, solve_relative_pose  # noqa: E402

DEMO = REPO / "mickey_ros" / "data" / "demo"
K_DEMO = np.array([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])


def _pair(fn_a: Callable[[], Any], fn_b: Callable[[], Any], warmup: int, repeats: int) -> tuple[dict, dict, dict]:
    """Interleaved timing of two callables; ``(stats_a, stats_b, ratio b/a)``."""
    for _ in range(warmup):
        fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, ta), (fn_b, tb)):
            start = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - start))
    a, b = _stats(ta), _stats(tb)
    return a, b, {"median": b["median_ms"] / a["median_ms"], "p25": b["p25_ms"] / a["p25_ms"],
                  "p75": b["p75_ms"] / a["p75_ms"]}


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(0, max_deg))
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def _open3d(target: Path) -> Any:
    """Open3D, installed into ``target`` with pip when missing (with ``libusb-package``: Open3D's wheel links
    libusb-1.0, which minimal machines lack; its library is loaded first)."""
    if not (target / "open3d").is_dir() or not (target / "libusb_package").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        print(f"installing open3d into {target} (benchmark only)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "open3d",
                        "libusb-package"], check=True, capture_output=True)
    sys.path.insert(0, str(target))
    for lib in (target / "libusb_package").glob("libusb-1.0.so*"):
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    return importlib.import_module("open3d")


def solver_vs_open3d(args: argparse.Namespace) -> dict:
    o3d = _open3d(Path(args.open3d_dir))
    rng = np.random.default_rng(0)
    n, outlier_fraction = 2048, 0.7
    T = make_T(_rotation(rng, 30.0), rng.uniform(-1, 1, 3))
    X0 = np.stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(1, 5, n)], 1)
    X1 = X0 @ T[:3, :3].T + T[:3, 3] + rng.normal(0, 0.01, (n, 3))
    out = rng.random(n) < outlier_fraction
    X1[out] = np.stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(1, 5, n)], 1)[out]
    pts0, pts1 = torch.from_numpy(X0), torch.from_numpy(X1)
    P = torch.diag(torch.ones(n, dtype=torch.float32))
    generator = torch.Generator()
    ours_T = []

    def ours() -> None:
        generator.manual_seed(0)
        est = solve_relative_pose(pts0, pts1, P, SolverConfig(), generator=generator)
        ours_T.append(make_T(est.R.numpy(), est.t.numpy()))

    src, dst = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
    src.points, dst.points = o3d.utility.Vector3dVector(X0), o3d.utility.Vector3dVector(X1)
    corr = o3d.utility.Vector2iVector(np.stack([np.arange(n), np.arange(n)], 1).astype(np.int32))
    reg = o3d.pipelines.registration
    theirs_T = []

    def theirs() -> None:
        result = reg.registration_ransac_based_on_correspondence(
            src, dst, corr, 0.15, reg.TransformationEstimationPointToPoint(False), 3, [],
            reg.RANSACConvergenceCriteria(2000, 0.999))
        theirs_T.append(np.asarray(result.transformation))

    a, b, ratio = _pair(ours, theirs, args.warmup, args.repeats)

    def errors(Ts: list[np.ndarray]) -> dict:
        rot = [rotation_angle_deg(E[:3, :3], T[:3, :3]) for E in Ts]
        trans = [100 * float(np.linalg.norm(E[:3, 3] - T[:3, 3])) for E in Ts]
        return {"rot_err_deg_median": float(np.median(rot)), "trans_err_cm_median": float(np.median(trans))}

    return {"ours": {**a, **errors(ours_T)}, "open3d": {**b, **errors(theirs_T)}, "open3d_over_ours": ratio,
            "open3d_version": o3d.__version__, "problem": f"{n} correspondences, {outlier_fraction:.0%} outliers, 1 cm"}


def torch_vs_onnxruntime(args: argparse.Namespace) -> dict:
    from mickey_ros.onnx_backend import OnnxNetwork
    from mickey_ros.onnx_export import export_onnx

    results = {}
    h, w = 224, 294
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    focal = torch.tensor([220.0])
    torch.manual_seed(0)
    for name, net in (("default", load_default_network()), ("tiny", build_model("tiny")), ("small", build_model("small"))):
        net = net.eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(net, Path(tmp) / f"{name}.onnx", h, w)
            onnx_net = OnnxNetwork(path)

            def run_torch() -> None:
                with torch.no_grad():
                    net(image, focal)

            a, b, ratio = _pair(run_torch, lambda: onnx_net(image, focal), args.warmup, args.repeats)
        results[name] = {"size": f"{w}x{h}", "torch": a, "onnxruntime": b, "onnxruntime_over_torch": ratio}
    return results


def _demo_images() -> tuple[np.ndarray, np.ndarray]:
    return read_image(DEMO / "im0.png", "im0"), read_image(DEMO / "im1.png", "im1")


def query_vs_pair(args: argparse.Namespace) -> dict:
    im0, im1 = _demo_images()
    reloc = Relocalizer(load_default_network(), seed=0, precision="fp32")
    reloc.set_reference(im0, K_DEMO)
    a, b, ratio = _pair(lambda: reloc.estimate(im0, K_DEMO, im1, K_DEMO), lambda: reloc.estimate_query(im1, K_DEMO),
                        args.warmup, args.repeats)
    return {"full_pair": a, "cached_query": b, "query_over_pair": ratio}


def batch_vs_single(args: argparse.Namespace) -> dict:
    im0, im1 = _demo_images()
    variants = [im0, im1, np.ascontiguousarray(im0[:, ::-1]), np.ascontiguousarray(im1[:, ::-1])]
    pairs = [(variants[i % 4], K_DEMO, variants[(i + 1) % 4].copy(), K_DEMO) for i in range(8)]
    reloc = Relocalizer(load_default_network(), seed=0, precision="fp32")
    a, b, ratio = _pair(lambda: [reloc.estimate(*p) for p in pairs], lambda: reloc.estimate_batch(pairs),
                        max(1, args.warmup // 2), max(5, args.repeats // 2))
    return {"pairs": len(pairs), "single": a, "batch": b, "batch_over_single": ratio}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--open3d-dir", default=str(Path(tempfile.gettempdir()) / "mickey_bench_open3d"))
    parser.add_argument("--no-open3d", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compare_cpu.json")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats: expected at least 5")
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"benchmark": "side-by-side comparisons (ratios)",
                              "environment": environment(torch.device("cpu"), args.threads),
                              "repeats": args.repeats, "warmup": args.warmup}
    sections = [("query_vs_pair", query_vs_pair), ("batch_vs_single", batch_vs_single),
                ("torch_vs_onnxruntime", torch_vs_onnxruntime)]
    if not args.no_open3d:
        sections.insert(0, ("solver_vs_open3d", solver_vs_open3d))
    for name, fn in sections:
        result[name] = fn(args)
        print(name, json.dumps({k: v for k, v in result[name].items() if "over" in k or isinstance(v, dict)
                                and any("over" in kk for kk in v)}, default=str)[:400], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
