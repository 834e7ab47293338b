"""Training augmentation: the mirrored pair is geometrically exact, colour jitter leaves geometry alone, every pair's
augmentation is its own (batch layout free), and the config rejects bad values in one line."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from training import config as config_mod
from training.augment import _gaussian_blur, augment_batch, augment_generator, camera_effects, flip_pair, jitter_colour

W, H = 294, 224


def _pair(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    K0 = torch.tensor([[220.0, 0.0, 140.2], [0.0, 221.0, 111.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    K1 = torch.tensor([[230.0, 0.0, 150.7], [0.0, 229.0, 108.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    angle = torch.tensor([0.1, -0.25, 0.05], dtype=torch.float64)
    theta = angle.norm()
    k = angle / theta
    Kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.eye(3, dtype=torch.float64) + torch.sin(theta) * Kx + (1 - torch.cos(theta)) * Kx @ Kx
    T[:3, 3] = torch.tensor([0.4, -0.05, 0.2], dtype=torch.float64)
    return {"image0": torch.rand(3, H, W, generator=g), "image1": torch.rand(3, H, W, generator=g),
            "depth0": torch.rand(H, W, generator=g) * 4 + 1, "depth1": torch.rand(H, W, generator=g) * 4 + 1,
            "K_color0": K0, "K_color1": K1, "T_0to1": T}


def _project(K: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    x = X @ K.T
    return x[:, :2] / x[:, 2:]


def _unproject(K: torch.Tensor, uv: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.cat([uv, torch.ones_like(uv[:, :1])], 1) @ torch.linalg.inv(K).T * z[:, None]


def test_flipped_pair_maps_mirrored_pixels_onto_mirrored_pixels():
    item = _pair()
    g = torch.Generator().manual_seed(1)
    uv0 = torch.rand(50, 2, generator=g, dtype=torch.float64) * torch.tensor([W - 1.0, H - 1.0])
    z0 = torch.rand(50, generator=g, dtype=torch.float64) * 4 + 1
    X1 = _unproject(item["K_color0"], uv0, z0) @ item["T_0to1"][:3, :3].T + item["T_0to1"][:3, 3]
    uv1 = _project(item["K_color1"], X1)

    flipped = flip_pair(item)
    T = flipped["T_0to1"]
    assert torch.allclose(T[:3, :3] @ T[:3, :3].T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.linalg.det(T[:3, :3]) == pytest.approx(1.0, abs=1e-12)  # a rotation, not a reflection
    mirrored0 = torch.stack([(W - 1) - uv0[:, 0], uv0[:, 1]], 1)
    X1f = _unproject(flipped["K_color0"], mirrored0, z0) @ T[:3, :3].T + T[:3, 3]
    uv1f = _project(flipped["K_color1"], X1f)
    assert torch.allclose(uv1f[:, 0], (W - 1) - uv1[:, 0], atol=1e-9)
    assert torch.allclose(uv1f[:, 1], uv1[:, 1], atol=1e-9)
    assert torch.allclose(X1f[:, 2], X1[:, 2], atol=1e-12)  # depth in camera 1 unchanged: depth maps just mirror


def test_flip_mirrors_images_and_depth_and_is_its_own_inverse():
    item = _pair()
    flipped = flip_pair(item)
    for key in ("image0", "image1", "depth0", "depth1"):
        assert torch.equal(flipped[key][..., 0], item[key][..., -1])
        assert torch.equal(flipped[key][..., 17], item[key][..., W - 1 - 17])
    twice = flip_pair(flipped)
    for key, value in item.items():
        assert torch.allclose(twice[key], value, atol=1e-12), key


def test_colour_jitter_is_seeded_in_range_and_changes_only_the_images():
    image = _pair()["image0"]
    a = jitter_colour(image, 0.4, torch.Generator().manual_seed(3))
    b = jitter_colour(image, 0.4, torch.Generator().manual_seed(3))
    c = jitter_colour(image, 0.4, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == image.shape and a.dtype == image.dtype and 0 <= a.min() and a.max() <= 1
    assert (a - image).abs().mean() > 0.01
    batch = {k: v[None] for k, v in _pair().items()}
    out = augment_batch(batch, 0.0, 0.5, seed=0, step=0, global_indices=[0])
    for key in ("depth0", "depth1", "K_color0", "K_color1", "T_0to1"):
        assert torch.equal(out[key], batch[key]), key
    assert not torch.equal(out["image0"], batch["image0"]) and not torch.equal(out["image1"], batch["image1"])


def test_each_pair_is_augmented_by_its_own_generator_whatever_the_batch():
    pairs = [_pair(s) for s in range(3)]
    batch = {k: torch.stack([p[k] for p in pairs]) for k in pairs[0]}
    original = {k: v.clone() for k, v in batch.items()}
    full = augment_batch(batch, 0.5, 0.3, seed=5, step=11, global_indices=[7, 2, 9])
    alone = augment_batch({k: v[1:2] for k, v in batch.items()}, 0.5, 0.3, seed=5, step=11, global_indices=[2])
    for key in full:
        assert torch.equal(full[key][1:2], alone[key]), key
        assert torch.equal(batch[key], original[key]), key  # the input batch is not modified
    assert augment_batch(batch, 0.0, 0.0, seed=5, step=11, global_indices=[7, 2, 9]) is batch
    # the flips drawn over many steps are about half (probability 0.5), and differ between steps
    flips = [float(torch.rand(1, generator=augment_generator(5, step, 2))) < 0.5 for step in range(200)]
    assert 70 < sum(flips) < 130


def _smooth_image() -> torch.Tensor:
    """``[3, H, W]`` an image with edges and flat areas (JPEG and blur change it visibly; noise is measurable)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    checker = ((x * 8).floor() + (y * 6).floor()) % 2
    return torch.stack([0.2 + 0.6 * checker, 0.3 + 0.4 * x, 0.5 * y + 0.2 * checker])


def test_camera_effects_are_seeded_in_range_grey_when_asked_and_leave_geometry_alone():
    image = _smooth_image()
    a = camera_effects(image, 1.0, False, torch.Generator().manual_seed(3))
    b = camera_effects(image, 1.0, False, torch.Generator().manual_seed(3))
    c = camera_effects(image, 1.0, False, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == image.shape and 0 <= a.min() and a.max() <= 1 and (a - image).abs().mean() > 0.005
    grey = camera_effects(image, 1.0, True, torch.Generator().manual_seed(3))
    assert (grey[0] - grey[1]).abs().mean() < 0.02 and (grey[1] - grey[2]).abs().mean() < 0.02  # JPEG chroma only
    batch = {k: v[None] for k, v in _pair().items()}
    out = augment_batch(batch, 0.0, 0.0, seed=0, step=0, global_indices=[0], camera=1.0)
    for key in ("depth0", "depth1", "K_color0", "K_color1", "T_0to1"):
        assert torch.equal(out[key], batch[key]), key
    assert not torch.equal(out["image0"], batch["image0"])
    # over many pairs at full strength, about 30 % are grey, and both images of a grey pair are
    greys = []
    for step in range(60):
        o = augment_batch({k: v[None] for k, v in {"image0": image, "image1": image}.items()}, 0.0, 0.0, seed=0,
                          step=step, global_indices=[0], camera=1.0)
        g0, g1 = (bool((o[k][0, 0] - o[k][0, 2]).abs().mean() < 0.02) for k in ("image0", "image1"))
        assert g0 == g1
        greys.append(g0)
    assert 8 <= sum(greys) <= 30


def test_blur_keeps_the_mean_and_smooths_an_edge():
    image = _smooth_image()
    blurred = _gaussian_blur(image, 1.5)
    assert blurred.shape == image.shape
    assert abs(float(blurred.mean() - image.mean())) < 1e-3
    assert float(blurred.diff(dim=-1).abs().max()) < 0.5 * float(image.diff(dim=-1).abs().max())


@pytest.mark.parametrize(("override", "match"), [
    ("data.augment_camera=2", r"data\.augment_camera: expected a number in \[0, 1\], got 2"),
    ("data.augment_flip=1.5", r"data\.augment_flip: expected a number in \[0, 1\], got 1\.5"),
    ("data.augment_color=-0.1", r"data\.augment_color: expected a number in \[0, 1\], got -0\.1"),
])
def test_config_rejects_augmentation_out_of_range(override, match):
    with pytest.raises(config_mod.ConfigError, match=match):
        config_mod.resolve(None, [override])


def test_train_step_with_augmentation_runs_and_differs_from_without(tmp_path):
    from training.trainer import Trainer, build_network

    sys.path.insert(0, str(REPO / "test" / "training"))
    from ddp_grad_check import demo_batch

    losses = {}
    for flip, colour in ((0.0, 0.0), (1.0, 0.5)):
        torch.manual_seed(0)
        cfg = config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.device=cpu", "train.curriculum=false",
                                        f"data.augment_flip={flip}", f"data.augment_color={colour}"])
        trainer = Trainer(cfg)
        losses[flip] = trainer.train_step(demo_batch([0]), [0])["loss"]
    assert np.isfinite(losses[0.0]) and np.isfinite(losses[1.0]) and losses[0.0] != losses[1.0]
    with pytest.raises(Exception, match="model.cache_features: features are cached per image name"):
        build_network(config_mod.resolve(None, ["model.cache_features=true", "model.freeze_backbone=true",
                                                "data.augment_flip=0.5"]))
