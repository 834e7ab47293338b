"""Relocalizer.estimate_batch: the network on many pairs at once, poses equal to estimate's (issue 10 item 3)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mickey_ros.cli import read_image
from mickey_ros.errors import ImageError, IntrinsicsError
from mickey_ros.model.default import load_default_network
from mickey_ros.pipeline import Relocalizer

DEMO = Path(__file__).resolve().parents[1] / "mickey_ros" / "data" / "demo"
K = np.array([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def reloc():
    return Relocalizer(load_default_network(), seed=0, min_confidence=0.0)  # flipped views: every pose kept


@pytest.fixture(scope="module")
def images():
    im0, im1 = read_image(DEMO / "im0.png", "im0"), read_image(DEMO / "im1.png", "im1")
    return im0, im1, np.ascontiguousarray(im1[:, ::-1]), np.ascontiguousarray(im0[::-1])


def _same(a, b):
    assert a.success == b.success and a.reason == b.reason
    np.testing.assert_array_equal(a.T_0to1, b.T_0to1)
    assert (a.num_inliers, a.num_matches, a.confidence) == (b.num_inliers, b.num_matches, b.confidence)


def test_batch_equals_one_by_one(reloc, images):
    im0, im1, flipped, upside = images
    pairs = [(im0, K, im1, K), (im1, K, im0, K), (im0, K, flipped, K), (upside, K, im1, K)]
    for single, batched in zip([reloc.estimate(*p) for p in pairs], reloc.estimate_batch(pairs)):
        assert single.success
        _same(single, batched)
        np.testing.assert_array_equal(single.kpts3d0, batched.kpts3d0)


def test_shared_reference_is_extracted_once(reloc, images, monkeypatch):
    im0, im1, flipped, upside = images
    seen = []
    real = reloc.net.backbone_features
    monkeypatch.setattr(reloc.net, "backbone_features", lambda x: seen.append(x.shape[0]) or real(x))
    results = reloc.estimate_batch([(im0, K, im1, K), (im0, K, flipped, K), (im0, K, upside, K)])
    assert seen == [4]  # one batch: the reference once + three queries
    _same(results[2], reloc.estimate(im0, K, upside, K))
    seen.clear()
    K_other = K.copy()
    K_other[0, 0] = 230.0  # the same image object with another K is another view
    reloc.estimate_batch([(im0, K, im1, K), (im0, K_other, im1, K)])
    assert seen == [3]


def test_sizes_are_batched_separately(images, monkeypatch):
    reloc = Relocalizer(load_default_network(), seed=0, max_side=None, min_confidence=0.0)  # two sizes
    im0, im1, _, _ = images
    small0, small1 = (np.ascontiguousarray(im[:168, :252]) for im in (im0, im1))
    seen = []
    real = reloc.net.backbone_features
    monkeypatch.setattr(reloc.net, "backbone_features", lambda x: seen.append(tuple(x.shape)) or real(x))
    results = reloc.estimate_batch([(im0, K, im1, K), (small0, K, small1, K)])
    assert sorted(seen) == [(2, 3, 168, 252), (2, 3, 224, 294)]
    monkeypatch.undo()
    _same(results[1], reloc.estimate(small0, K, small1, K))


def test_bad_and_unusable_pairs(reloc, images):
    im0, im1, _, _ = images
    grey = np.full_like(im0, 128)
    bad_K = K.copy()
    bad_K[0, 0] = 0.0
    pairs = [(im0, K, im1, K), (im0, bad_K, im1, K), (grey, K, im1, K), ("nope", K, im1, K)]
    with pytest.raises(IntrinsicsError, match="K0"):
        reloc.estimate_batch(pairs)
    results = reloc.estimate_batch(pairs, return_errors=True)
    _same(results[0], reloc.estimate(im0, K, im1, K))
    assert isinstance(results[1], IntrinsicsError) and "K0" in str(results[1])
    assert not results[2].success and "image0 is nearly constant" in results[2].reason
    assert isinstance(results[3], ImageError)
    assert reloc.estimate_batch([]) == []
