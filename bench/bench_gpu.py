"""GPU benchmark, one prepared command: the official network at 720x540, per pair and per cached-reference query.

Method
------
* Network: the ``official`` preset (ViT-L/14 DINOv2 backbone + heads); ``--checkpoint mickey.ckpt`` (the official
  weights, which users bring) or, without it, seeded random weights: the arithmetic, and so the time, is the same
  (the solver's work is fixed: 20 x 100 hypotheses on 2048 sampled matches, official test-time defaults).
* Images: the bundled demo pair resized to ``--width x --height`` (default 720 x 540, the Map-free test size; the
  network sees the 714 x 532 crop to multiples of 14), K rescaled (half-pixel convention).
* Cases: PyTorch with the backbone under fp32 / fp16 / bf16 autocast (the heads and geometry stay fp32/fp64), each
  with ``torch.compile`` off and on (the backbone's ``backbone_features``); onnxruntime from a file written by
  ``export_onnx`` (fp32 and fp16) with each installed GPU provider (TensorRT, CUDA). A case that cannot run here
  (no provider, export or compile failure) is recorded with its reason, never dropped silently.
* Per case: ``pair`` = ``Relocalizer.estimate`` (two network runs + matching + solver) and ``query`` =
  ``estimate_query`` against a reference set once (one network run), each after ``--warmup`` calls, ``--repeats``
  timed calls (``time.perf_counter``, ``torch.cuda.synchronize`` inside the timed region), median, p25, p75, IQR,
  min, max in ms; peak CUDA memory (``torch.cuda.max_memory_allocated``, reset per case; onnxruntime's own arena
  is not seen by it: null); ``paper_ratio`` = median / 119.8 ms (the paper's per-pair time).
* ``--dry-run``: the same code on the CPU with the ``tiny`` preset at 294 x 224, fp32 + bf16, compile with the
  ``eager`` backend, 1 warm-up + 1 timed call, onnxruntime's CPU provider: CI runs it so the script cannot rot.

Run on a GPU machine: ``python bench/bench_gpu.py [--checkpoint mickey.ckpt]`` -> ``bench/results/gpu_cuda.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_solver import environment  # noqa: E402

from mickey_ros import Relocalizer  # noqa: E402
from mickey_ros.cli import read_image  # noqa: E402
from mickey_ros.geometry.camera import rescale_intrinsics  # noqa: E402
from mickey_ros.model import build_model  # noqa: E402

PAPER_MS = 119.8  # MicKey paper, per pair (official network, 720x540, GPU)
DEMO = REPO / "mickey_ros" / "data" / "demo"
K_DEMO = np.array([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])  # intrinsics.txt (294 x 224)
ORT_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _stats(times_ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times_ms, n=4) if len(times_ms) > 1 else [times_ms[0]] * 3
    return {"median_ms": statistics.median(times_ms), "p25_ms": q[0], "p75_ms": q[2], "iqr_ms": q[2] - q[0],
            "min_ms": min(times_ms), "max_ms": max(times_ms), "repeats": len(times_ms),
            "paper_ratio": statistics.median(times_ms) / PAPER_MS}


def _time(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(1e3 * (time.perf_counter() - start))
    return times


def _images(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The demo pair at ``width x height`` and its K (both images share it)."""
    im0, im1 = (read_image(DEMO / name, name) for name in ("im0.png", "im1.png"))
    h, w = im0.shape[:2]
    resize = lambda im: cv2.resize(im, (width, height), interpolation=cv2.INTER_LINEAR)  # noqa: E731
    return resize(im0), resize(im1), rescale_intrinsics(K_DEMO, width / w, height / h)


def _measure(reloc: Relocalizer, images: tuple, device: torch.device, warmup: int, repeats: int) -> dict:
    im0, im1, K = images
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result: dict[str, Any] = {"pair": _stats(_time(lambda: reloc.estimate(im0, K, im1, K), device, warmup, repeats))}
    reloc.set_reference(im0, K)
    result["query"] = _stats(_time(lambda: reloc.estimate_query(im1, K), device, warmup, repeats))
    result["query_over_pair"] = result["query"]["median_ms"] / result["pair"]["median_ms"]
    result["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                                and reloc.net.__class__.__name__ != "OnnxNetwork" else None)
    return result


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _torch_cases(net: torch.nn.Module, args: argparse.Namespace, device: torch.device, images: tuple) -> dict:
    cases = {}
    for precision in args.precisions:
        for compiled in (False, True):
            name = f"torch_{precision}" + ("_compile" if compiled else "")
            if compiled and not args.compile:
                continue
            try:
                reloc = Relocalizer(net, device=device, seed=0, precision=precision, max_side=None)
                if compiled:
                    reloc.net.backbone_features = torch.compile(net.backbone_features, backend=args.compile_backend)
                cases[name] = _measure(reloc, images, device, args.warmup, args.repeats)
            except Exception as err:  # noqa: BLE001 - a case that cannot run here is recorded, not fatal
                cases[name] = {"skipped": _first_line(err)}
            finally:
                net.__dict__.pop("backbone_features", None)  # undo the compiled instance attribute
            print(f"{name}: {_summary(cases[name])}", flush=True)
    return cases


def _onnx_cases(net: torch.nn.Module, args: argparse.Namespace, device: torch.device, images: tuple) -> dict:
    cases: dict[str, Any] = {}
    try:
        import onnxruntime as ort

        from mickey_ros.onnx_backend import OnnxNetwork
        from mickey_ros.onnx_export import export_onnx
    except ImportError as err:
        return {"onnxruntime": {"skipped": f"not installed ({_first_line(err)}): pip install -e \".[onnx]\""}}
    available = ort.get_available_providers()
    providers = ([p for p in ORT_GPU_PROVIDERS if p in available] if device.type == "cuda"
                 else ["CPUExecutionProvider"])
    if not providers:
        return {"onnxruntime": {"skipped": f"no GPU provider in onnxruntime (available: {', '.join(available)}); "
                                           "pip install onnxruntime-gpu"}}
    height, width = (v - v % 14 for v in images[0].shape[:2])
    with tempfile.TemporaryDirectory() as tmp:
        for fp16 in args.onnx_fp16:
            path = Path(tmp) / f"mickey_{'fp16' if fp16 else 'fp32'}.onnx"
            try:
                export_onnx(net, path, height, width, fp16=fp16)
            except Exception as err:  # noqa: BLE001
                cases[f"onnx_{'fp16' if fp16 else 'fp32'}"] = {"skipped": f"export failed: {_first_line(err)}"}
                continue
            for provider in providers:
                name = f"onnx_{'fp16' if fp16 else 'fp32'}_{provider.replace('ExecutionProvider', '').lower()}"
                try:
                    onnx_net = OnnxNetwork(path, device=device)
                    onnx_net._session.set_providers(list(dict.fromkeys([provider, "CPUExecutionProvider"])))
                    reloc = Relocalizer(onnx_net, device=device, seed=0)
                    cases[name] = _measure(reloc, images, device, args.warmup, args.repeats)
                    cases[name]["providers"] = onnx_net._session.get_providers()
                except Exception as err:  # noqa: BLE001
                    cases[name] = {"skipped": _first_line(err)}
                print(f"{name}: {_summary(cases[name])}", flush=True)
    return cases


def _summary(case: dict) -> str:
    if "skipped" in case:
        return f"skipped ({case['skipped']})"
    mem = f", peak {case['peak_memory_mb']:.0f} MB" if case.get("peak_memory_mb") is not None else ""
    return (f"pair {case['pair']['median_ms']:.1f} ms (x{case['pair']['paper_ratio']:.2f} of the paper's "
            f"{PAPER_MS} ms), query {case['query']['median_ms']:.1f} ms{mem}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, 294x224, 1 call per case (CI)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--checkpoint", default=None, help="official mickey.ckpt (default: random weights)")
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--height", type=int, default=540)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/gpu_<device type>.json")
    args = parser.parse_args(argv)
    args.preset, args.precisions, args.compile_backend, args.onnx_fp16 = "official", ("fp32", "fp16", "bf16"), \
        "inductor", (False, True)
    if args.dry_run:
        args.device, args.preset, args.width, args.height = "cpu", "tiny", 294, 224
        args.repeats, args.warmup, args.precisions, args.compile_backend, args.onnx_fp16 = 1, 1, ("fp32", "bf16"), \
            "eager", (False,)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats: expected >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: --device cuda: no CUDA device here (use --dry-run on a CPU machine)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    if args.checkpoint:
        from mickey_ros.model.checkpoint import load_checkpoint

        net, weights = load_checkpoint(args.checkpoint), str(args.checkpoint)
    else:
        net, weights = build_model(args.preset), "random (seeded; same arithmetic as trained weights)"
    net = net.to(device).eval()
    images = _images(args.width, args.height)
    result: dict[str, Any] = {
        "benchmark": "official network per pair and per cached query" + (" (dry run)" if args.dry_run else ""),
        "environment": environment(device, torch.get_num_threads()), "preset": args.preset, "weights": weights,
        "image_size": f"{args.width}x{args.height}", "paper_ms": PAPER_MS, "repeats": args.repeats,
        "warmup": args.warmup, "compile_backend": args.compile_backend,
    }
    result["cases"] = _torch_cases(net, args, device, images)
    if args.onnx:
        result["cases"].update(_onnx_cases(net, args, device, images))
    out = args.out or REPO / "bench" / "results" / f"gpu_{device.type}{'_dry_run' if args.dry_run else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
