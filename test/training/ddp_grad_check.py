"""Helper process for test_trainer's DDP check (not a test): one train step on the demo pair, gradients saved.

    python test/training/ddp_grad_check.py OUT 0    # one process, pair 0 only (also run with 1)
    python -m torch.distributed.run --nproc_per_node 2 test/training/ddp_grad_check.py OUT   # pair = rank
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from training import config as config_mod  # noqa: E402
from training.trainer import Trainer, init_distributed  # noqa: E402


def demo_batch(indices):
    import cv2

    demo = REPO / "mickey_ros" / "data" / "demo"
    ims = [torch.from_numpy(cv2.imread(str(demo / f"im{i}.png"))[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
           for i in (0, 1)]
    T = torch.eye(4)
    T[:3] = torch.from_numpy(np.loadtxt(demo / "gt_pose.txt").reshape(3, 4))
    K = torch.tensor([[220.0, 0.0, 146.5], [0.0, 220.0, 111.5], [0.0, 0.0, 1.0]])
    n = len(indices)
    return {"image0": ims[0].expand(n, -1, -1, -1).contiguous(), "image1": ims[1].expand(n, -1, -1, -1).contiguous(),
            "K_color0": K.expand(n, 3, 3), "K_color1": K.expand(n, 3, 3), "Kori_color0": K.expand(n, 3, 3),
            "Kori_color1": K.expand(n, 3, 3), "T_0to1": T.expand(n, 4, 4), "pair_id": torch.tensor(indices),
            "pair_names": (["im0"] * n, ["im1"] * n)}


def main(out: str, pair: int | None) -> None:
    rank, world = init_distributed()
    cfg = config_mod.resolve(None, ["train.curriculum=false", "train.device=cpu", "train.seed=3",
                                    f"train.run_dir={out}/run{world}", "optim.grad_clip=1.0e9"])
    trainer = Trainer(cfg, rank, world)
    indices = [rank if pair is None else pair]
    batch = demo_batch(indices)
    if indices[0] == 1:  # the second pair differs from the first: swapped views, inverse pose
        batch["image0"], batch["image1"] = batch["image1"], batch["image0"]
        batch["T_0to1"] = torch.linalg.inv(batch["T_0to1"])
    scalars = trainer.train_step(batch, indices)
    grads = {n: p.grad.clone() for n, p in trainer.net.named_parameters() if p.grad is not None}
    name = f"grads_world{world}_rank{rank}.pt" if world > 1 else f"grads_single_pair{indices[0]}.pt"
    torch.save({"grads": grads, "loss": scalars["loss"]}, Path(out) / name)
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
