"""The training loss (official section 8): VCRE, REINFORCE coefficients, curriculum, gradients, overfitting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DEMO
from mickey_ros.geometry.se3 import make_T
from training.loss import LossConfig, curriculum_mask, mickey_loss, symmetric_vcre_loss, vcre, virtual_grid

K_DEMO = torch.tensor([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])


def _demo_batch(batch=2):
    from mickey_ros.cli import read_image

    ims = [torch.from_numpy(read_image(DEMO / f"im{i}.png", "image")).permute(2, 0, 1).float() / 255 for i in (0, 1)]
    T = torch.eye(4, dtype=torch.float64)
    T[:3] = torch.from_numpy(np.loadtxt(DEMO / "gt_pose.txt").reshape(3, 4))
    K = K_DEMO.expand(batch, 3, 3)
    return ims[0].expand(batch, -1, -1, -1), ims[1].expand(batch, -1, -1, -1), K, T.expand(batch, 4, 4)


def _run(net, im0, im1, K, T, generator, config=LossConfig(), topk=None):
    out0, out1 = net(im0), net(im1)
    P = net.match(out0, out1)
    return mickey_loss(P, out0.kpts, out1.kpts, out0.depth, out1.depth, K, K, K, K, T, config, topk, generator)


def _numpy_vcre(R, t, T_gt, K, clip=720.0):
    grid = np.array([[x, y, z] for x in np.arange(7) * 0.3 - 0.9 for y in (-0.45, -0.15, 0.15, 0.45)
                     for z in np.arange(7) * 0.3 + 1.8])
    T_est = make_T(R, t)
    moved = (np.linalg.inv(T_gt) @ T_est @ np.c_[grid, np.ones(len(grid))].T).T[:, :3]

    def proj(X):
        uvw = X @ K.T
        return np.clip(uvw[:, :2] / (uvw[:, 2:] + 1e-16), 0, clip)

    return np.mean(np.sqrt(((proj(moved) - proj(grid)) ** 2).sum(1) + 1e-6))


def test_virtual_grid_is_the_official_196_points():
    g = virtual_grid()
    assert g.shape == (196, 3)
    assert sorted(set(np.round(g[:, 0].numpy(), 6))) == pytest.approx(np.arange(7) * 0.3 - 0.9)
    assert sorted(set(np.round(g[:, 1].numpy(), 6))) == pytest.approx([-0.45, -0.15, 0.15, 0.45])
    assert sorted(set(np.round(g[:, 2].numpy(), 6))) == pytest.approx(np.arange(7) * 0.3 + 1.8)


def test_vcre_matches_an_independent_numpy_version_and_is_zero_at_the_truth():
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    T_gt = make_T(np.eye(3), [0.3, 0.0, 0.1])
    for _ in range(5):
        axis = rng.normal(size=3)
        angle = rng.uniform(0, 0.3)
        Kx = np.cross(np.eye(3), axis / np.linalg.norm(axis))
        R = np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx
        t = rng.normal(0, 0.3, 3)
        got = vcre(torch.from_numpy(R), torch.from_numpy(t), torch.from_numpy(T_gt), torch.from_numpy(K))
        assert float(got) == pytest.approx(_numpy_vcre(R, t, T_gt, K), rel=1e-10)
    at_truth = vcre(torch.from_numpy(T_gt[:3, :3]), torch.from_numpy(T_gt[:3, 3]), torch.from_numpy(T_gt),
                    torch.from_numpy(K))
    assert float(at_truth) == pytest.approx(1e-3, rel=1e-6)  # sqrt(0 + 1e-6)


def test_symmetric_loss_is_soft_clipped_and_bounded():
    K = torch.tensor([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]], dtype=torch.float64)
    T_gt = torch.from_numpy(make_T(np.eye(3), [0.3, 0.0, 0.1]))
    far = symmetric_vcre_loss(torch.eye(3, dtype=torch.float64), torch.tensor([50.0, 0, 0], dtype=torch.float64),
                              T_gt, K, K)
    assert 0.9 < float(far) < 1.0  # tanh saturates; clipping to [0, 720] keeps the raw error finite
    raw = symmetric_vcre_loss(torch.eye(3, dtype=torch.float64), torch.tensor([50.0, 0, 0], dtype=torch.float64),
                              T_gt, K, K, LossConfig(soft_clipping=False))
    assert float(far) == pytest.approx(np.tanh(float(raw) / 80))


def test_curriculum_keeps_the_lowest_losses():
    losses = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4])
    valid = torch.ones(8, dtype=torch.bool)
    assert curriculum_mask(losses, valid, 30).nonzero().flatten().tolist() == [1, 5]  # B = 8, 30 % -> 2 pairs
    assert curriculum_mask(losses, valid, 80).sum() == 6
    assert curriculum_mask(losses, valid, None).all()
    assert curriculum_mask(losses, valid, 1).nonzero().flatten().tolist() == [1]  # at least one pair
    valid[1] = False
    losses[1] = float("nan")
    assert curriculum_mask(losses, valid, 30).nonzero().flatten().tolist() == [3, 5]  # of 7 valid pairs -> 2


def test_gradients_reach_all_four_heads_and_the_dustbin(tiny_net):
    import copy

    net = copy.deepcopy(tiny_net).train()
    im0, im1, K, T = _demo_batch(2)
    out = _run(net, im0, im1, K, T, torch.Generator().manual_seed(0))
    assert out.kept.all() and out.invalid == [] and torch.isfinite(out.loss)
    out.surrogate.backward()
    for head in net.heads():
        grads = [p.grad for p in head.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), type(head).__name__
        assert sum(float(g.abs().sum()) for g in grads) > 0, type(head).__name__
    dustbin = net.matcher.matching_mat.dustbin_score.grad
    assert dustbin is not None and torch.isfinite(dustbin) and float(dustbin) != 0.0


def test_reinforce_coefficients_have_zero_sum_and_live_on_drawn_entries():
    torch.manual_seed(1)
    N0, N1 = 30, 40
    P = torch.rand(1, N0, N1, dtype=torch.float64)
    P[0, :, 20:] = 0.0  # never drawn
    P.requires_grad_(True)
    kpts0 = torch.rand(1, N0, 2, dtype=torch.float64) * 200
    kpts1 = torch.rand(1, N1, 2, dtype=torch.float64) * 200
    depth0 = torch.rand(1, N0, dtype=torch.float64) + 1.5
    depth1 = torch.rand(1, N1, dtype=torch.float64) + 1.5
    K = K_DEMO.double()[None]
    T = torch.eye(4, dtype=torch.float64)[None]
    cfg = LossConfig(num_samples=64, num_draws=6, hypotheses_per_draw=5)
    out = mickey_loss(P, kpts0, kpts1, depth0, depth1, K, K, K, K, T, cfg, None, torch.Generator().manual_seed(0))
    out.surrogate.backward()
    coef = (P.grad * (P.detach() + 1e-16))[0]  # d surrogate / d log(P + eps)
    assert float(coef[:, 20:].abs().max()) == 0.0
    assert float(coef.sum()) == pytest.approx(0.0, abs=1e-12)  # sum_k M (L_k - mean L) / Q = 0
    assert float(coef.abs().sum()) > 0


def test_invalid_pairs_are_left_out_with_a_reason(tiny_net):
    im0, im1, K, T = _demo_batch(2)
    with torch.no_grad():
        out0, out1 = tiny_net(im0), tiny_net(im1)
        P = tiny_net.match(out0, out1).clone()
    P[1, 0, 0] = float("nan")
    out = mickey_loss(P, out0.kpts, out1.kpts, out0.depth, out1.depth, K, K, K, K, T,
                      generator=torch.Generator().manual_seed(0))
    assert out.kept.tolist() == [True, False]
    assert out.invalid == ["pair 1: matching probabilities are not finite and non-negative"]
    assert torch.isnan(out.pair_loss[1]) and torch.isfinite(out.pair_loss[0])
    with pytest.raises(Exception, match=r"T_0to1: expected shape \[2, 4, 4\]"):
        mickey_loss(P, out0.kpts, out1.kpts, out0.depth, out1.depth, K, K, K, K, T[:1])


def test_geometry_stays_float64_under_autocast(tiny_net):
    im0, im1, K, T = _demo_batch(1)
    with torch.no_grad():
        out0, out1 = tiny_net(im0), tiny_net(im1)
        P = tiny_net.match(out0, out1)
    args = (P, out0.kpts, out1.kpts, out0.depth, out1.depth, K, K, K, K, T)
    plain = mickey_loss(*args, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = mickey_loss(*args, generator=torch.Generator().manual_seed(3))
    assert auto.loss.dtype == torch.float64 and float(auto.loss) == float(plain.loss)


@pytest.mark.slow
def test_overfitting_one_pair_halves_the_loss():
    from mickey_ros.model import build_model

    torch.manual_seed(0)
    net = build_model("tiny").train()
    im0, im1, K, T = _demo_batch(1)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3, eps=1e-6)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        out = _run(net, im0, im1, K, T, gen)
        opt.zero_grad()
        out.surrogate.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        losses.append(float(out.loss))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
