"""Relocalizer(depth_flip=True): each image's depth averaged with its mirror image's (test-time augmentation)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mickey_ros.errors import InputError
from mickey_ros.model.default import load_default_network
from mickey_ros.model.mickey import MicKeyOutput
from mickey_ros.pipeline import Relocalizer, flip_average_depth


def _output(depth: torch.Tensor) -> MicKeyOutput:
    B, h, w = depth.shape
    gen = torch.Generator().manual_seed(0)
    return MicKeyOutput(kpts=torch.rand(B, h * w, 2, generator=gen), depth=depth.reshape(B, h * w),
                        scores=torch.rand(B, h * w, generator=gen),
                        descriptors=torch.rand(B, h * w, 4, generator=gen), grid_hw=(h, w))


def test_flip_average_depth_mirrors_the_columns_back():
    depth = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    flipped = torch.tensor([[[30.0, 20.0, 10.0], [60.0, 50.0, 40.0]]])  # the mirror image's grid: column 0 = right
    out = _output(depth)
    averaged = flip_average_depth(out, _output(flipped))
    expected = torch.tensor([[5.5, 11.0, 16.5, 22.0, 27.5, 33.0]])
    torch.testing.assert_close(averaged.depth, expected)
    assert averaged.kpts is out.kpts and averaged.scores is out.scores and averaged.descriptors is out.descriptors
    assert averaged.grid_hw == (2, 3)


def test_flip_average_depth_rejects_another_grid():
    with pytest.raises(ValueError, match="grids differ"):
        flip_average_depth(_output(torch.ones(1, 2, 3)), _output(torch.ones(1, 3, 2)))


@pytest.fixture(scope="module")
def net():
    return load_default_network()


def test_depth_flip_makes_the_depth_mirror_symmetric(net, demo_pair):
    """With depth_flip the depth of the mirrored image is the mirrored depth (exactly, up to float sums); without
    it the network's own asymmetry shows: a test that fails if the mirror were not applied or not undone."""
    image0, K0, image1, K1 = demo_pair
    mirrored = np.ascontiguousarray(image0[:, ::-1])
    K0m = K0.copy()
    K0m[0, 2] = image0.shape[1] - 1 - K0[0, 2]
    maps = {}
    for flip in (False, True):
        reloc = Relocalizer(net, seed=0, depth_flip=flip)
        a = reloc.estimate(image0, K0, image1, K1)
        b = reloc.estimate(mirrored, K0m, image1, K1)
        maps[flip] = (a.depth0, b.depth0[:, ::-1])
    plain, sym = maps[False], maps[True]
    np.testing.assert_allclose(sym[0], sym[1], rtol=1e-5)
    assert np.abs(np.log(plain[0] / plain[1])).max() > 0.01
    np.testing.assert_allclose(sym[0], (plain[0] + plain[1]) / 2, rtol=1e-5)  # the mean of the two passes


def test_depth_flip_changes_only_the_depth(net, demo_pair):
    image0, K0, image1, K1 = demo_pair
    plain = Relocalizer(net, seed=0)
    flip = Relocalizer(net, seed=0, depth_flip=True)
    views = [r._prepare(image0, K0, "image0", "K0") for r in (plain, flip)]
    outs = [r._extract(v) for r, v in zip((plain, flip), views)]
    for field in ("kpts", "scores", "descriptors"):
        torch.testing.assert_close(getattr(outs[0], field), getattr(outs[1], field), rtol=0, atol=0)
    assert not torch.equal(outs[0].depth, outs[1].depth)
    assert flip.estimate(image0, K0, image1, K1).success


def test_depth_flip_batch_equals_one_by_one(net, demo_pair):
    image0, K0, image1, K1 = demo_pair
    reloc = Relocalizer(net, seed=0, depth_flip=True)
    pairs = [(image0, K0, image1, K1), (image1, K1, image0, K0)]
    for single, batched in zip([reloc.estimate(*p) for p in pairs], reloc.estimate_batch(pairs)):
        assert single.success and batched.success
        np.testing.assert_array_equal(single.T_0to1, batched.T_0to1)
        np.testing.assert_array_equal(single.depth0, batched.depth0)


def test_depth_flip_runs_the_backbone_twice(net, demo_pair, monkeypatch):
    image0, K0, image1, K1 = demo_pair
    reloc = Relocalizer(net, seed=0, depth_flip=True)
    seen = []
    real = reloc.net.backbone_features
    monkeypatch.setattr(reloc.net, "backbone_features", lambda x: seen.append(x.shape[0]) or real(x))
    reloc.estimate(image0, K0, image1, K1)
    assert seen == [1, 1, 1, 1]
    seen.clear()
    reloc.estimate_batch([(image0, K0, image1, K1)])
    assert seen == [2, 2]  # the two images, then their mirrors


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_depth_flip_rejects_a_non_boolean(net, value):
    with pytest.raises(InputError, match=r"depth_flip: expected True or False, got"):
        Relocalizer(net, depth_flip=value)


def test_depth_flip_is_off_by_default(net):
    assert Relocalizer(net).depth_flip is False
