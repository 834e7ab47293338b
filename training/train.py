"""Train MicKey end to end from image pairs with metric relative poses (rosbag2 recordings or Map-free).

    python training/train.py --config training/configs/synthetic_tiny.yaml [section.key=value ...] [--resume CKPT]
    torchrun --nproc_per_node 2 training/train.py --config ...      # DDP: gloo on CPU, nccl on GPU

Configuration: defaults -> ``--config`` file -> overrides (unknown keys are errors); the resolved config is
written to ``<train.run_dir>/config.yaml``. Checkpoints: ``<run_dir>/checkpoints/last.ckpt`` every
``train.checkpoint_every`` steps, at the end and on SIGINT/SIGTERM; ``best_vcre.ckpt`` (also written as
``best.ckpt``) by validation VCRE AUC and ``best_pose.ckpt`` by validation pose AUC, as the official
trainer; ``train.val_per_epoch`` validations per epoch (official: 2).
``--resume`` continues exactly (model, optimiser moments, data order, RNG); the config's ``optim.lr`` and
``optim.eps`` win over the checkpoint's, so ``--resume CKPT optim.lr=3e-5`` lowers the rate for the rest of a run.
Checkpoints load with ``mickey_ros.model.load_checkpoint`` (and the ``mickey-ros --checkpoint`` option).
Exit codes: 0 done, 2 bad configuration or data (one line), 130 interrupted (checkpoint written).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `training` and `mickey_ros` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mickey_ros.errors import MickeyError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file with sections model, data, optim, loss, train")
    parser.add_argument("--resume", help="training checkpoint to continue from (exactly; a changed optim.lr or "
                        "optim.eps in the config or overrides applies from the resumed step on)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.batch_size=4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from training import config as config_mod
    from training.trainer import Trainer, build_dataset, init_distributed

    rank, world = 0, 1
    try:
        cfg = config_mod.resolve(args.config, args.overrides)
        rank, world = init_distributed()
        trainer = Trainer(cfg, rank, world)
        if args.resume:
            trainer.resume(args.resume)
        run_dir = Path(cfg["train"]["run_dir"])
        train_ds = build_dataset(cfg, "train", run_dir)
        val_ds = build_dataset(cfg, "val", run_dir)
        result = trainer.fit(train_ds, val_ds)
    except MickeyError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(f"train.py: step {result['step']}, epoch {result['epoch']}"
              f"{' (interrupted; checkpoint written)' if result['interrupted'] else ''}")
    return 130 if result["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
