"""Dual-softmax matching with a learned dustbin -> correspondence probabilities.

Official behaviour (reference: official_mickey.md §6): the cosine similarities of unit descriptors are
divided by a temperature (0.1), one learned scalar (the dustbin score, init 1.0) is appended as an extra
last row, last column and corner, the ``(N0 + 1) x (N1 + 1)`` matrix is softmax-normalised over rows
and over columns, the two are multiplied, and the dustbin row/column are dropped. Multiplied by the
outer product of the keypoint scores this is the sampling distribution of the pose solver. There is no
mutual-nearest-neighbour step, no threshold and no top-k.
"""
from __future__ import annotations

import torch
from torch import nn

from mickey_ros.errors import InputError


def dual_softmax(desc0: torch.Tensor, desc1: torch.Tensor, dustbin: torch.Tensor | float,
                 temperature: float = 0.1) -> torch.Tensor:
    """Dual-softmax matching probabilities with a dustbin.

    Args:
        desc0: ``[B, N0, D]`` descriptors of view 0 (unit length).
        desc1: ``[B, N1, D]`` descriptors of view 1.
        dustbin: scalar dustbin score (a tensor keeps its gradient).
        temperature: similarities are divided by it.

    Returns:
        ``[B, N0, N1]`` ``softmax_dim1(S) * softmax_dim2(S)`` without the dustbin row/column, where
        ``S = [[desc0 desc1^T / temperature, dustbin], [dustbin, dustbin]]`` is ``[B, N0 + 1, N1 + 1]``.
    """
    B, N0, _ = desc0.shape
    N1 = desc1.shape[1]
    sim = torch.bmm(desc0, desc1.transpose(1, 2)) / temperature
    bin_ = torch.as_tensor(dustbin, dtype=sim.dtype, device=sim.device)
    full = torch.cat([sim, bin_.expand(B, N0, 1)], dim=2)
    full = torch.cat([full, bin_.expand(B, 1, N1 + 1)], dim=1)
    probs = full.softmax(dim=1) * full.softmax(dim=2)
    return probs[:, :N0, :N1]


class DualSoftmax(nn.Module):
    """Holds the learned ``dustbin_score`` (init ``dustbin_init``) and applies ``dual_softmax``."""

    def __init__(self, temperature: float = 0.1, dustbin_init: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.dustbin_init = dustbin_init
        self.dustbin_score = nn.Parameter(torch.tensor(float(dustbin_init)))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.dustbin_score.fill_(self.dustbin_init)

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor) -> torch.Tensor:
        """``[B, N0, D]``, ``[B, N1, D]`` -> ``[B, N0, N1]`` matching probabilities."""
        return dual_softmax(desc0, desc1, self.dustbin_score, self.temperature)


class DualSoftmaxMatcher(nn.Module):
    """Correspondence probabilities: dual softmax times the outer product of the keypoint scores.

    The submodule is named ``matching_mat`` as in the official checkpoint
    (``matcher.matching_mat.dustbin_score``).
    """

    def __init__(self, temperature: float = 0.1, dustbin_init: float = 1.0) -> None:
        super().__init__()
        self.matching_mat = DualSoftmax(temperature, dustbin_init)

    def reset_parameters(self) -> None:
        self.matching_mat.reset_parameters()

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor, scores0: torch.Tensor,
                scores1: torch.Tensor) -> torch.Tensor:
        """Sampling distribution over correspondences.

        Args:
            desc0: ``[B, N0, D]``; desc1: ``[B, N1, D]`` unit descriptors.
            scores0: ``[B, N0]``; scores1: ``[B, N1]`` keypoint scores.

        Returns:
            ``[B, N0, N1]`` = ``dual_softmax(desc0, desc1) * (scores0 (x) scores1)``.

        Raises:
            InputError: batch sizes, descriptor sizes or score lengths disagree.
        """
        check_match_inputs(desc0, desc1, scores0, scores1)
        kp_scores = scores0[:, :, None] * scores1[:, None, :]
        return self.matching_mat(desc0, desc1) * kp_scores


def check_match_inputs(desc0: torch.Tensor, desc1: torch.Tensor, scores0: torch.Tensor,
                       scores1: torch.Tensor) -> None:
    """Raise InputError unless desc ``[B, N0, D]``/``[B, N1, D]`` and scores ``[B, N0]``/``[B, N1]`` agree."""
    if desc0.ndim != 3 or desc1.ndim != 3:
        raise InputError(
            f"descriptors: expected [B, N, D] tensors, got {list(desc0.shape)} and {list(desc1.shape)}"
        )
    if desc0.shape[0] != desc1.shape[0] or desc0.shape[2] != desc1.shape[2]:
        raise InputError(
            f"descriptors: expected the same batch size and dimension D in both views, got "
            f"{list(desc0.shape)} and {list(desc1.shape)}"
        )
    if tuple(scores0.shape) != tuple(desc0.shape[:2]) or tuple(scores1.shape) != tuple(desc1.shape[:2]):
        raise InputError(
            f"scores: expected [B, N0] and [B, N1] = {list(desc0.shape[:2])} and {list(desc1.shape[:2])}, "
            f"got {list(scores0.shape)} and {list(scores1.shape)}"
        )
