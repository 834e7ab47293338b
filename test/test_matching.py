"""Dual-softmax matcher (official_mickey.md §6) against a loop reference in float64."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mickey_ros.errors import InputError
from mickey_ros.matching import DualSoftmaxMatcher, dual_softmax


def ref_dual_softmax(d0: np.ndarray, d1: np.ndarray, dustbin: float, temperature: float) -> np.ndarray:
    """[N0, D], [N1, D] -> [N0, N1]: S/temperature plus dustbin row, column and corner; softmax per column
    times softmax per row; the dustbin row and column dropped."""
    n0, n1 = len(d0), len(d1)
    full = [[dustbin] * (n1 + 1) for _ in range(n0 + 1)]
    for i in range(n0):
        for j in range(n1):
            full[i][j] = sum(a * b for a, b in zip(d0[i], d1[j])) / temperature
    out = np.zeros((n0, n1))
    for i in range(n0):
        row_max = max(full[i])
        row_den = sum(math.exp(v - row_max) for v in full[i])
        for j in range(n1):
            col = [full[r][j] for r in range(n0 + 1)]
            col_max = max(col)
            col_den = sum(math.exp(v - col_max) for v in col)
            out[i, j] = math.exp(full[i][j] - col_max) / col_den * math.exp(full[i][j] - row_max) / row_den
    return out


def unit_descriptors(g: torch.Generator, *shape: int) -> torch.Tensor:
    d = torch.randn(*shape, generator=g, dtype=torch.float64)
    return d / d.norm(dim=-1, keepdim=True)


@pytest.fixture
def views() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """B = 2 pairs, N0 = 5, N1 = 7, D = 6, with a few near-duplicate descriptors so matches are peaked."""
    g = torch.Generator().manual_seed(0)
    d0 = unit_descriptors(g, 2, 5, 6)
    d1 = unit_descriptors(g, 2, 7, 6)
    d1[:, :3] = d0[:, [2, 0, 4]] + 0.05 * unit_descriptors(g, 2, 3, 6)
    d1 = d1 / d1.norm(dim=-1, keepdim=True)
    s0 = torch.rand(2, 5, generator=g, dtype=torch.float64)
    s1 = torch.rand(2, 7, generator=g, dtype=torch.float64)
    return d0, d1, s0 / s0.sum(1, keepdim=True), s1 / s1.sum(1, keepdim=True)


@pytest.mark.parametrize("dustbin, temperature", [(1.0, 0.1), (-2.5, 0.1), (0.3, 0.5)])
def test_dual_softmax_matches_reference(views, dustbin, temperature):
    d0, d1, _, _ = views
    probs = dual_softmax(d0, d1, dustbin, temperature)
    assert probs.shape == (2, 5, 7)
    for b in range(2):
        expected = ref_dual_softmax(d0[b].tolist(), d1[b].tolist(), dustbin, temperature)
        np.testing.assert_allclose(probs[b].numpy(), expected, rtol=1e-10, atol=1e-15)


def test_matcher_is_dual_softmax_times_score_outer_product(views):
    d0, d1, s0, s1 = views
    matcher = DualSoftmaxMatcher().double()
    assert matcher.matching_mat.temperature == 0.1
    assert matcher.matching_mat.dustbin_score.item() == 1.0  # official initial value
    matcher.load_state_dict({"matching_mat.dustbin_score": torch.tensor(0.4, dtype=torch.float64)})
    out = matcher(d0, d1, s0, s1)
    for b in range(2):
        expected = ref_dual_softmax(d0[b].tolist(), d1[b].tolist(), 0.4, 0.1)
        expected *= np.outer(s0[b].numpy(), s1[b].numpy())
        np.testing.assert_allclose(out[b].detach().numpy(), expected, rtol=1e-10, atol=1e-18)


def test_dustbin_is_learned_and_changes_the_output(views):
    d0, d1, s0, s1 = views
    matcher = DualSoftmaxMatcher().double()
    base = matcher(d0, d1, s0, s1).detach()
    with torch.no_grad():
        matcher.matching_mat.dustbin_score.fill_(3.0)  # a strong dustbin absorbs probability mass
    out = matcher(d0, d1, s0, s1)
    assert out.sum() < base.sum()
    out.sum().backward()
    assert matcher.matching_mat.dustbin_score.grad is not None
    assert matcher.matching_mat.dustbin_score.grad.abs() > 0


@pytest.mark.parametrize("n0, n1", [(5, 7), (7, 5), (1, 4), (6, 1)])
def test_rows_and_columns_sum_to_at_most_one(n0, n1):
    g = torch.Generator().manual_seed(n0 * 10 + n1)
    d0, d1 = unit_descriptors(g, 3, n0, 8), unit_descriptors(g, 3, n1, 8)
    d1[:, 0] = d0[:, 0]  # one exact match: a peaked row/column
    probs = dual_softmax(d0, d1, torch.tensor(-1.0, dtype=torch.float64), 0.05)
    assert probs.shape == (3, n0, n1)
    assert (probs >= 0).all()
    assert probs.sum(dim=2).max() <= 1.0 + 1e-12
    assert probs.sum(dim=1).max() <= 1.0 + 1e-12
    assert probs[:, 0, 0].min() > 0.5  # the exact match dominates both its row and its column


def test_extreme_similarities_stay_finite():
    g = torch.Generator().manual_seed(5)
    d0, d1 = unit_descriptors(g, 1, 4, 8), unit_descriptors(g, 1, 6, 8)
    probs = dual_softmax(d0.float(), d1.float(), 1.0, 1e-3)  # logits up to 1000 in float32
    assert torch.isfinite(probs).all()
    assert probs.sum(dim=2).max() <= 1.0 + 1e-5


def test_gradients_reach_descriptors_and_scores(views):
    d0, d1, s0, s1 = (t.clone().requires_grad_(True) for t in views)
    DualSoftmaxMatcher().double()(d0, d1, s0, s1).square().sum().backward()
    for t in (d0, d1, s0, s1):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().max() > 0


@pytest.mark.parametrize("shapes, match", [
    (((2, 5), (2, 7, 6), (2, 5), (2, 7)), r"descriptors: expected \[B, N, D\] tensors, got \[2, 5\] and \[2, 7, 6\]"),
    (((2, 5, 6), (1, 7, 6), (2, 5), (1, 7)), r"descriptors: expected the same batch size and dimension D"),
    (((2, 5, 6), (2, 7, 4), (2, 5), (2, 7)), r"descriptors: expected the same batch size .*\[2, 7, 4\]"),
    (((2, 5, 6), (2, 7, 6), (2, 7), (2, 7)), r"scores: expected \[B, N0\] and \[B, N1\] = \[2, 5\] and \[2, 7\]"),
    (((2, 5, 6), (2, 7, 6), (2, 5), (2, 7, 1)), r"scores: .*got \[2, 5\] and \[2, 7, 1\]"),
])
def test_bad_inputs_raise_input_error(shapes, match):
    tensors = [torch.ones(s, dtype=torch.float64) for s in shapes]
    with pytest.raises(InputError, match=match):
        DualSoftmaxMatcher().double()(*tensors)
