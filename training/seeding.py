"""Per-pair random generators: one stream per (seed, optimiser step, pair), independent of batch layout, DataLoader
workers and world size, so an exact resume replays them."""
from __future__ import annotations

import torch


def pair_generator(seed: int, step: int, global_index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The random generator of one pair at one step.

    It lives on ``device`` (for the loss: the device of ``P``; torch samples with a generator only on the
    generator's own device, a CPU generator with CUDA ``P`` raises). The same seed gives different streams on CPU
    and CUDA.
    """
    gen = torch.Generator(device=device)
    return gen.manual_seed(((seed * 1_000_003 + step) * 10_007 + global_index) % (2**63 - 1))
