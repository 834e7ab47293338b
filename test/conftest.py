"""Shared fixtures: small deterministic networks and the bundled demo pair."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "mickey_ros" / "data" / "demo"


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
