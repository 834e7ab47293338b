"""bench/bench_gpu.py --dry-run: the GPU benchmark's code runs on the CPU in CI so it cannot rot (issue 10 item 6)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "bench_gpu.py"


@pytest.mark.slow
def test_dry_run_measures_every_case(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["preset"] == "tiny" and result["image_size"] == "294x224" and result["paper_ms"] == 119.8
    cases = result["cases"]
    assert set(cases) >= {"torch_fp32", "torch_fp32_compile", "torch_bf16", "torch_bf16_compile"}
    pytest.importorskip("onnxruntime")
    assert "onnx_fp32_cpu" in cases
    for name, case in cases.items():
        assert "skipped" not in case, f"{name}: {case.get('skipped')}"
        for mode in ("pair", "query"):
            stats = case[mode]
            assert stats["repeats"] == 1 and stats["median_ms"] > 0
            assert stats["paper_ratio"] == pytest.approx(stats["median_ms"] / 119.8)
        assert case["query_over_pair"] == pytest.approx(case["query"]["median_ms"] / case["pair"]["median_ms"])
        assert case["peak_memory_mb"] is None  # CPU: no CUDA memory counter
    assert f"wrote {out}" in done.stdout


def test_cuda_without_a_gpu_is_one_line_exit_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run([sys.executable, str(SCRIPT), "--no-onnx", "--no-compile", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == "bench_gpu: --device cuda: no CUDA device here (use --dry-run on a CPU machine)"


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA device")
def test_gpu_run_of_the_tiny_preset(tmp_path):
    """Where a GPU exists: the real (non-dry) path on CUDA, the official preset at a small size."""
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--width", "294", "--height", "224", "--repeats", "2",
                           "--warmup", "1", "--no-compile", "--no-onnx", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    cases = json.loads(out.read_text())["cases"]
    for name in ("torch_fp32", "torch_fp16", "torch_bf16"):
        assert cases[name]["peak_memory_mb"] > 0 and cases[name]["pair"]["median_ms"] > 0
