"""Shared fixtures: small deterministic networks and the bundled demo pair."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "mickey_ros" / "data" / "demo"


@pytest.fixture()
def ros(monkeypatch):
    """A private rclpy context on loopback only, in a random DDS domain (real rclpy from the PyPI wheels)."""
    import os
    import random

    rclpy = pytest.importorskip("rclpy")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(100, 200)))
    monkeypatch.setenv("ROS_LOCALHOST_ONLY", "1")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)
    # rclpy futures left in reference cycles by the test (e.g. a task whose node was destroyed) are finalised here,
    # where their "exception was never retrieved" line belongs to this test, not to whichever test the garbage
    # collector happens to run in later (one reading stderr failed on it)
    gc.collect()


@pytest.fixture(scope="session")
def tiny_net():
    from mickey_ros.model import build_model

    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture(scope="session")
def demo_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image0, K0, image1, K1): the shipped demo images (uint8 RGB) and their intrinsics."""
    from mickey_ros.cli import read_image
    from mickey_ros.geometry.camera import intrinsics_from_values

    Ks = {}
    for line in (DEMO / "intrinsics.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, fx, fy, cx, cy, *_ = line.split()
            Ks[name] = intrinsics_from_values([fx, fy, cx, cy])
    return (read_image(DEMO / "im0.png", "image0"), Ks["im0.png"], read_image(DEMO / "im1.png", "image1"), Ks["im1.png"])
