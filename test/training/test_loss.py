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


# -- refinement (official vectorised version: keep the mask that generated the best-count pose) ----------------
_CUBE = [[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (2.0, 4.0)]  # the minimal set: exact matches
_NEAR = [[0.5, 0.5, 3.0], [-0.5, -0.5, 3.0], [0.5, -0.5, 3.0], [-0.5, 0.5, 3.0]]  # shifted 0.1 m in x: inliers


def _refine_case(extra_shift_x):
    """14 matches: 8 exact (the minimal set), 4 shifted 0.1 m in x, one at the centre shifted by
    ``extra_shift_x`` and one far outlier (0.4 m). Camera 1 = camera 0 up to these shifts."""
    X0 = torch.tensor(_CUBE + _NEAR + [[0.0, 0.0, 3.0], [0.2, 0.1, 2.5]], dtype=torch.float64)
    shift = torch.tensor([0.0] * 8 + [0.1] * 4 + [extra_shift_x, 0.4], dtype=torch.float64)
    X1 = X0.clone()
    X1[:, 0] += shift
    mask = torch.zeros(1, 1, 14, dtype=torch.float64)
    mask[..., :8] = 1.0
    return X0, X1, mask


def _mask_of(indices, n=14):
    m = torch.zeros(n, dtype=torch.float64)
    m[list(indices)] = 1.0
    return m


def test_refinement_keeps_the_minimal_set_when_it_generated_the_best_count():
    """The minimal set's pose (identity) has 12 hard inliers (> 8); Kabsch on those 12 (t = 0.4 / 12 m in x) still
    has 12, which is no gain: the result is the minimal set itself, not its inlier set."""
    from training.loss import refine_masks

    X0, X1, mask = _refine_case(-0.2)  # the centre point stays an outlier (0.2 m, then 0.233 m)
    final = refine_masks(X0[None], X1[None], mask, LossConfig())
    assert torch.equal(final[0, 0], _mask_of(range(8)))


def test_refinement_grows_while_the_count_grows_and_keeps_the_generating_mask():
    """Minimal set -> 12 inliers (0..11); Kabsch on them moves 0.0333 m in x, so the centre point (0.18 m away)
    comes within 0.15 m: 13 inliers. Kabsch on those 13 still has 13: no gain. The best count (13) was generated
    by the 12-inlier mask, which is the result (not the 13-point inlier set of that pose)."""
    from training.loss import refine_masks

    X0, X1, mask = _refine_case(0.18)
    final = refine_masks(X0[None], X1[None], mask, LossConfig())
    assert torch.equal(final[0, 0], _mask_of(range(12)))
    assert torch.equal(refine_masks(X0[None], X1[None], mask, LossConfig(num_refinements=1))[0, 0],
                       _mask_of(range(8)))  # one step: only the minimal set's pose was scored
    assert torch.equal(refine_masks(X0[None], X1[None], mask, LossConfig(num_refinements=0))[0, 0],
                       _mask_of(range(8)))


def test_pair_loss_uses_the_pose_of_the_generating_mask(monkeypatch):
    """End to end through ``_pair_loss`` with the draws fixed (Q = J = 1, no null hypothesis): the hypothesis loss
    is the VCRE loss of Kabsch on the minimal set (its pose had the best count), not of a refit on its inliers."""
    import training.loss as loss_mod
    from mickey_ros.geometry.kabsch import kabsch_float64

    X0, X1, _ = _refine_case(-0.2)
    n = len(X0)
    P = torch.full((n, n), 1e-3, dtype=torch.float64).diagonal_scatter(torch.linspace(1.0, 2.0, n, dtype=torch.float64))
    flat = (torch.arange(n) * (n + 1))[None]  # the diagonal: match i <-> i, in order
    monkeypatch.setattr(loss_mod, "sample_correspondences", lambda p, m, q, g: (flat, p.flatten()[flat]))
    monkeypatch.setattr(loss_mod, "minimal_sets", lambda w, j, k, g: torch.arange(8)[None, None])
    K = torch.eye(3, dtype=torch.float64)  # X = z [u, v, 1]
    kpts0, kpts1 = X0[:, :2] / X0[:, 2:], X1[:, :2] / X1[:, 2:]
    T_gt = torch.eye(4, dtype=torch.float64)
    T_gt[0, 3] = 0.05
    cfg = LossConfig(num_samples=n, num_draws=1, hypotheses_per_draw=1, null_hypothesis=False)
    res = loss_mod._pair_loss(P, kpts0, kpts1, X0[:, 2], X1[:, 2], K, K, K_DEMO.double(), K_DEMO.double(), T_gt,
                              cfg, None)

    def loss_of(indices):
        R, t = kabsch_float64(X0, X1, _mask_of(indices))
        return float(symmetric_vcre_loss(R, t, T_gt, K_DEMO.double(), K_DEMO.double(), cfg))

    assert float(res.draw_losses[0]) == pytest.approx(loss_of(range(8)), rel=1e-12)
    assert abs(loss_of(range(8)) - loss_of(range(12))) > 1e-3  # the refit on the 12 inliers would differ


# -- expected loss with the null hypothesis and the REINFORCE coefficients, against numpy ----------------------
def _numpy_kabsch(A, B):
    """Plain Kabsch ``B ~ R A + t`` (numpy, det R = +1)."""
    a, b = A.mean(0), B.mean(0)
    U, _, Vt = np.linalg.svd((A - a).T @ (B - b))
    R = Vt.T @ np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))]) @ U.T
    return R, b - R @ a


def test_null_hypothesis_and_per_draw_aggregation_match_an_independent_numpy_computation(monkeypatch):
    """Fixed draws (Q = 2 draws of M = 12 of the 16 matches) and minimal sets (J = 3 of 8 each), no refinement: per
    hypothesis numpy Kabsch, soft-inlier score (tau 0.3 m, beta 5 / tau), loss tanh(symmetric VCRE / 80);
    ``L_k = softmax([score / 20, 0.35 M / 20]) . [loss, 0.8]``, pair loss ``mean_k L_k`` and the REINFORCE
    coefficient of entry (i, j) ``(1/Q) sum_k [drawn in k] (L_k - mean L)`` (official section 8, steps 6-7)."""
    import training.loss as loss_mod

    rng = np.random.default_rng(4)
    n, Q, J = 16, 2, 3
    R_true = _numpy_kabsch(rng.normal(size=(5, 3)), rng.normal(size=(5, 3)))[0]  # some rotation
    t_true = np.array([0.3, -0.1, 0.2])
    X0 = np.c_[rng.uniform(-1, 1, (n, 2)), rng.uniform(2, 4, n)]
    X1 = X0 @ R_true.T + t_true + rng.normal(0, 0.06, (n, 3))
    X1[12:] += rng.uniform(0.4, 0.9, (4, 3))  # 4 outliers
    K = K_DEMO.double().numpy()
    kpts0, kpts1 = ((X @ K.T)[:, :2] / X[:, 2:] for X in (X0, X1))
    M = 12
    order = np.stack([np.arange(4, 16), rng.permutation(n)[:M]])  # draw k: the matches (i, i) in this order
    sets = np.array([[np.arange(0, 8), np.arange(2, 10), np.arange(4, 12)],
                     [rng.permutation(M)[:8] for _ in range(J)]])  # positions in each draw
    flat = torch.from_numpy(order * (n + 1))  # entry (i, i) of the 16 x 16 P
    monkeypatch.setattr(loss_mod, "sample_correspondences", lambda p, m, q, g: (flat, p.flatten()[flat]))
    monkeypatch.setattr(loss_mod, "minimal_sets", lambda w, j, k, g: torch.from_numpy(sets))
    P = torch.from_numpy(np.full((n, n), 1e-3) + np.diag(rng.uniform(0.5, 1.5, n)))[None].requires_grad_(True)
    T_gt = make_T(R_true, t_true)
    Kt = K_DEMO.double()[None]
    cfg = LossConfig(num_samples=M, num_draws=Q, hypotheses_per_draw=J, num_refinements=0)
    out = mickey_loss(P, torch.from_numpy(kpts0)[None], torch.from_numpy(kpts1)[None], torch.from_numpy(X0[:, 2])[None],
                      torch.from_numpy(X1[:, 2])[None], Kt, Kt, Kt, Kt, torch.from_numpy(T_gt)[None], cfg)
    out.surrogate.backward()

    L = np.zeros(Q)
    null_weights = []
    for k in range(Q):
        A, B = X0[order[k]], X1[order[k]]
        scores, losses = [], []
        for s in sets[k]:
            R, t = _numpy_kabsch(A[s], B[s])
            d = np.sqrt(((A @ R.T + t - B) ** 2).sum(1) + 1e-6)
            scores.append(np.sum(1 / (1 + np.exp(-5 / 0.3 * (0.3 - d)))))
            v0 = _numpy_vcre(R, t, T_gt, K)
            v1 = _numpy_vcre(R.T, -R.T @ t, np.linalg.inv(T_gt), K)
            losses.append(np.tanh((v0 + v1) / 2 / 80))
        logits = np.array(scores + [0.35 * M]) / 20
        w = np.exp(logits - logits.max())
        w /= w.sum()
        L[k] = w[:J] @ np.array(losses) + w[J] * 0.8
        null_weights.append(w[J])
    assert 0.1 < min(null_weights) and max(null_weights) < 0.5  # precondition: the null hypothesis weighs in
    assert abs(L[0] - L[1]) > 1e-3  # precondition: the draws differ, so the coefficients are not all zero
    assert float(out.pair_loss[0]) == pytest.approx(L.mean(), rel=1e-10)
    assert float(out.loss) == pytest.approx(L.mean(), rel=1e-10)
    coef = np.zeros(n * n)
    for k in range(Q):
        np.add.at(coef, order[k] * (n + 1), (L[k] - L.mean()) / Q)
    assert np.abs(coef).max() > 1e-4 and np.count_nonzero(coef) < 2 * M  # precondition: entries in one draw only
    got = (P.grad * (P.detach() + 1e-16))[0].flatten().numpy()  # d surrogate / d log(P + eps)
    np.testing.assert_allclose(got, coef, rtol=1e-9, atol=1e-15)


# -- REINFORCE scale: summed over the kept pairs (official), the direct term averaged ---------------------------
def _random_pair_inputs(seed, B):
    g = torch.Generator().manual_seed(seed)
    N0, N1 = 30, 40
    P = torch.rand(B, N0, N1, dtype=torch.float64, generator=g)
    kpts0 = torch.rand(B, N0, 2, dtype=torch.float64, generator=g) * 200
    kpts1 = torch.rand(B, N1, 2, dtype=torch.float64, generator=g) * 200
    depth0 = torch.rand(B, N0, dtype=torch.float64, generator=g) + 1.5
    depth1 = torch.rand(B, N1, dtype=torch.float64, generator=g) + 1.5
    return [x.requires_grad_(True) for x in (P, kpts0, kpts1, depth0, depth1)]


def test_reinforce_gradient_is_the_sum_over_kept_pairs():
    """Batch of two kept pairs vs each pair alone (same per-pair generator seeds): d surrogate / d P of each pair is
    its single-pair gradient (sum over pairs, not divided by 2); the direct gradient (depth) is half of it (mean)."""
    cfg = LossConfig(num_samples=64, num_draws=6, hypotheses_per_draw=5)
    K = K_DEMO.double()
    T = torch.eye(4, dtype=torch.float64)
    T[0, 3] = 0.3
    batch = _random_pair_inputs(0, 2)
    out = mickey_loss(*batch, K.expand(2, 3, 3), K.expand(2, 3, 3), K.expand(2, 3, 3), K.expand(2, 3, 3),
                      T.expand(2, 4, 4), cfg, None, [torch.Generator().manual_seed(s) for s in (10, 11)])
    assert out.kept.tolist() == [True, True]
    out.surrogate.backward()
    for b in (0, 1):
        single = [x.detach()[b:b + 1].clone().requires_grad_(True) for x in batch]
        one = mickey_loss(*single, K[None], K[None], K[None], K[None], T[None], cfg, None,
                          [torch.Generator().manual_seed(10 + b)])
        one.surrogate.backward()
        coef = (single[0].grad * (single[0].detach() + 1e-16))[0]  # d / d log(P + eps) of the pair alone
        assert float(coef.abs().sum()) > 0
        torch.testing.assert_close(batch[0].grad[b], single[0].grad[0], rtol=1e-12, atol=0.0)
        torch.testing.assert_close(batch[3].grad[b], single[3].grad[0] / 2, rtol=1e-12, atol=1e-18)
