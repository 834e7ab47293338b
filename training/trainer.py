"""The MicKey trainer: data, model, the official loss, DDP, checkpoints with exact resume.

Determinism (what makes ``--resume`` exact): the pair order of epoch ``e`` is a permutation seeded by
``(seed, e)``, sharded over ranks; the loss draws of pair ``i`` at step ``s`` use a generator seeded by
``(seed, s, i)`` (so a pair's draws do not depend on the other pairs or on the number of processes); the
checkpoint holds model, optimiser, config, step, epoch, position in the epoch and the RNG states.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mickey_ros import deps
from mickey_ros.errors import CheckpointError, DatasetError, InputError
from mickey_ros.geometry.pose_eval import flatten as flatten_metrics
from mickey_ros.model import build_model, load_checkpoint
from mickey_ros.model.checkpoint import read_file, save_checkpoint
from mickey_ros.model.mickey import PRESETS, MicKey
from mickey_ros.pipeline import resolve_device
from training import config as config_mod
from training.augment import augment_batch
from training.aux_loss import aux_loss
from training.data.build import build_dataset, find_bags  # noqa: F401  (re-exported)
from training.loss import mickey_loss
from training.seeding import pair_generator  # noqa: F401  (re-exported; the loss's generators)

log = logging.getLogger("mickey_ros.training")


# -- data -------------------------------------------------------------------------------------------------------
# build_dataset and find_bags live in training.data.build (shared with evaluate.py); re-exported here


def epoch_order(dataset: Dataset, cfg: dict, epoch: int) -> list[int]:
    """Pair indices of one epoch: a seeded permutation of all pairs, or, with ``data.pairs_per_scene = n``,
    ``n`` pairs drawn per scene with replacement and shuffled (the official scene-balanced sampler)."""
    seed, per_scene = cfg["train"]["seed"], cfg["data"]["pairs_per_scene"]
    if per_scene:
        from training.data.datasets import SceneBalancedSampler

        sampler = SceneBalancedSampler(dataset, per_scene, seed)
        sampler.set_epoch(epoch)
        return list(sampler)
    return torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def epoch_batches(order: list[int], batch_size: int, rank: int, world: int) -> list[list[int]]:
    """This rank's batches: ``order`` cut into global batches of ``batch_size * world`` (the incomplete last one
    dropped), each split into ``world`` consecutive shards."""
    per_step = batch_size * world
    return [order[s + rank * batch_size: s + (rank + 1) * batch_size]
            for s in range(0, len(order) - per_step + 1, per_step)]


# -- model ------------------------------------------------------------------------------------------------------
def build_network(cfg: dict) -> MicKey:
    m = cfg["model"]
    if m["checkpoint"]:
        net = load_checkpoint(m["checkpoint"], backbone_weights=m["backbone_weights"] or None)
    else:
        if m["preset"] not in PRESETS:
            raise InputError(f"model.preset: expected one of {', '.join(PRESETS)}, got {m['preset']!r}")
        preset_cfg = PRESETS[m["preset"]]
        if m["freeze_backbone"] is not None and m["freeze_backbone"] != preset_cfg.freeze_backbone:
            net = build_model(dataclasses.replace(preset_cfg, freeze_backbone=m["freeze_backbone"]))
        else:
            net = build_model(m["preset"])
        if m["backbone_weights"]:
            state = read_file(m["backbone_weights"], what="backbone weights")
            try:
                net.backbone.load_state_dict(state)
            except (RuntimeError, TypeError) as err:
                raise CheckpointError(f"model.backbone_weights: {m['backbone_weights']} does not fit the "
                                      f"{m['preset']} backbone ({str(err).splitlines()[0]})") from err
    ref = m["depth_focal_ref"]
    if ref is not None and float(ref) != net.config.depth_focal_ref:
        state, input_size = net.state_dict(), net.input_size
        net = MicKey(dataclasses.replace(net.config, depth_focal_ref=float(ref)), preset=net.preset)
        net.load_state_dict(state)
        net.input_size = input_size
    if m["cache_features"] and not net.config.freeze_backbone:
        raise InputError("model.cache_features: needs a frozen backbone (set model.freeze_backbone=true)")
    d = cfg["data"]
    if m["cache_features"] and (d["augment_flip"] > 0 or d["augment_color"] > 0 or d["augment_camera"] > 0):
        raise InputError("model.cache_features: features are cached per image name; expected data.augment_flip, "
                         f"data.augment_color and data.augment_camera 0, got {d['augment_flip']:g}, "
                         f"{d['augment_color']:g} and {d['augment_camera']:g}")
    return net


def fp16_autocast_works(device: torch.device) -> bool:
    """Whether float16 autocast really runs a matmul in float16 on ``device`` (older CPU builds disable it)."""
    import warnings

    x = torch.ones(2, 2, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.autocast(device.type, dtype=torch.float16):
                return (x @ x).dtype == torch.float16
        except (RuntimeError, TypeError, ValueError):
            return False


class StepModule(nn.Module):
    """What DDP wraps: images (or cached backbone features) of both views -> outputs and ``P``.

    ``autocast_dtype`` (bf16 on CUDA; fp16 as the official training) applies to the backbone only; the heads,
    the matcher and the loss run in float32 / float64, so metric depth and keypoints keep their precision (as the
    Relocalizer does).
    """

    def __init__(self, net: MicKey, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.net = net
        self.autocast_dtype = autocast_dtype

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            return self.net.backbone_features(x)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, features: bool = False, focal0: torch.Tensor | None = None,
                focal1: torch.Tensor | None = None) -> tuple[Any, Any, torch.Tensor]:
        """``focal0/1``: ``[B]`` fx of the network inputs (pixels), for a focal-relative depth head."""
        f0, f1 = (x0, x1) if features else (self._features(x0), self._features(x1))
        out0, out1 = self.net.forward_heads(f0.float(), focal0), self.net.forward_heads(f1.float(), focal1)
        return out0, out1, self.net.match(out0, out1)


class FeatureCache:
    """Frozen-backbone features per image (name + size), kept on the CPU; at most ``capacity`` images."""

    def __init__(self, net: MicKey, capacity: int = 4096) -> None:
        self.net, self.capacity = net, capacity
        self.store: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0

    def __call__(self, images: torch.Tensor, names: list[str]) -> torch.Tensor:
        """``[B, 3, H, W]`` images and their unique names -> ``[B, C, H/14, W/14]`` backbone features."""
        keys = [f"{n}|{images.shape[-2]}x{images.shape[-1]}" for n in names]
        feats: list[torch.Tensor | None] = [self.store.get(k) for k in keys]
        missing = [i for i, f in enumerate(feats) if f is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                computed = self.net.backbone_features(images[missing]).cpu()
            for i, f in zip(missing, computed):
                feats[i] = f
                if len(self.store) < self.capacity:
                    self.store[keys[i]] = f
        return torch.stack(feats).to(images.device)  # type: ignore[arg-type]


# -- trainer ----------------------------------------------------------------------------------------------------
def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker start: leave SIGINT / SIGTERM to the main process. A signal sent to the whole process group
    (systemd's default KillMode, ``kill -- -PGID``, Ctrl-C) would otherwise kill the workers first, and the main
    process would die with "DataLoader worker is killed by signal" instead of checkpointing; it stops them itself
    when it exits (and a worker whose parent has gone exits on its own)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Trainer:
    def __init__(self, cfg: dict, rank: int = 0, world: int = 1) -> None:
        self.cfg, self.rank, self.world = cfg, rank, world
        t = cfg["train"]
        self.run_dir = Path(t["run_dir"])
        self.device = resolve_device(t["device"])
        if world > 1 and self.device.type == "cuda":
            import os

            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        precision = t["precision"] if t["precision"] != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, "bad")
        if self.autocast_dtype == "bad":
            raise InputError(f"train.precision: expected auto, fp32, bf16 or fp16, got {precision!r}")
        if precision == "fp16" and not fp16_autocast_works(self.device):
            raise InputError(f"train.precision: fp16 autocast is not supported on {self.device.type} by this torch; "
                             "use fp32 or bf16 there")
        # fp16 (the official backbone precision) needs loss scaling against gradient underflow in the backbone
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        torch.manual_seed(t["seed"])
        self.net = build_network(cfg).to(self.device)
        self._train_mode()
        # DINOv2's mask_token is never used by MicKey's forward: a trainable unused parameter would keep DDP from
        # ever finishing its gradient reduction (gradients silently not averaged), so it is frozen here.
        self.net.backbone.mask_token.requires_grad_(False)
        self.loss_cfg = config_mod.loss_config(cfg)
        self.aux_cfg = config_mod.aux_config(cfg)
        self.cache = FeatureCache(self.net) if cfg["model"]["cache_features"] else None
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=cfg["optim"]["lr"], eps=cfg["optim"]["eps"])
        step_module = StepModule(self.net, self.autocast_dtype)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            step_module = DistributedDataParallel(step_module, device_ids=[self.device.index]
                                                  if self.device.type == "cuda" else None)
        self.step_module = step_module
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_auc = -math.inf  # best validation VCRE AUC (best.ckpt = best_vcre.ckpt)
        self.best_pose_auc = -math.inf  # best validation pose AUC (best_pose.ckpt)
        self.skipped_steps = 0  # optimiser steps skipped: NaN/Inf gradients or no pair kept
        self.no_pair_steps = 0  # ... of which: no pair kept by the loss (and no auxiliary term)
        self.stop_signal: int | None = None
        self._last_outputs: tuple | None = None
        self.writer = None
        self.metrics_file = self.run_dir / "metrics.jsonl"

    # -- one optimiser step ------------------------------------------------------------------------------------
    def topk(self) -> float | None:
        t = self.cfg["train"]
        return min(t["topk_init"] + t["topk_step"] * self.epoch, t["topk_max"]) if t["curriculum"] else None

    def train_step(self, batch: dict[str, Any], global_indices: list[int]) -> dict[str, float]:
        """Forward, loss, backward and (unless a gradient is not finite) one Adam step; returns scalars."""
        dev = self.device
        # the size this run trains at, recorded in its checkpoints: the Relocalizer brings images to it by default
        # (a run resumed or warm-started at another data.resize records its own size, not the checkpoint's). With
        # data.resize that is the resize target, before the top-left crop to multiples of 14 (672 x 203 trains on
        # 672 x 196 crops): the Relocalizer resizes to it and crops the same rows, where recording the crop would make
        # it squash the whole image into 672 x 196 (3.5 % vertically) and evaluate on inputs the run never saw.
        resize = self.cfg["data"]["resize"]
        self.net.input_size = ((int(resize[0]), int(resize[1])) if resize
                               else (int(batch["image0"].shape[-1]), int(batch["image0"].shape[-2])))
        d = self.cfg["data"]
        batch = augment_batch(batch, d["augment_flip"], d["augment_color"], self.cfg["train"]["seed"], self.step,
                              global_indices, d["augment_camera"])
        im0, im1 = batch["image0"].to(dev), batch["image1"].to(dev)
        features = self.cache is not None
        if features:
            names0, names1 = batch["pair_names"]
            im0, im1 = self.cache(im0, list(names0)), self.cache(im1, list(names1))
        K0, K1, T_0to1 = batch["K_color0"].to(dev), batch["K_color1"].to(dev), batch["T_0to1"].to(dev).double()
        out0, out1, P = self.step_module(im0, im1, features, K0[:, 0, 0], K1[:, 0, 0])
        gens = [pair_generator(self.cfg["train"]["seed"], self.step, i, P.device) for i in global_indices]
        lo = mickey_loss(P.float(), out0.kpts, out1.kpts, out0.depth, out1.depth, K0, K1,
                         batch["Kori_color0"].to(dev), batch["Kori_color1"].to(dev), T_0to1, self.loss_cfg,
                         self.topk(), gens) if self.aux_cfg.mickey_weight > 0 else None
        ao = aux_loss(out0, out1, K0, K1, T_0to1, self.aux_cfg,  # auxiliary terms (0 when off)
                      batch.get("depth0"), batch.get("depth1"))
        total = ao.total if lo is None else self.aux_cfg.mickey_weight * lo.surrogate + ao.total
        self.opt.zero_grad(set_to_none=True)
        grad_norm = self._backward_and_step(total, lo)
        self.step += 1
        every = self.cfg["train"]["image_every"]
        # kept only for the TensorBoard picture of this step (P alone is B x N0 x N1 floats)
        self._last_outputs = (batch, out0, out1, P.detach(), lo) if every and self.step % every == 0 else None
        if lo is None:
            return {"grad_norm": grad_norm, "skipped_steps": self.skipped_steps, **ao.scalars}
        kept = lo.kept
        return {"loss": float(lo.loss), "grad_norm": grad_norm, "kept_pairs": int(kept.sum()),
                "invalid_pairs": len(lo.invalid), "skipped_steps": self.skipped_steps,
                "no_pair_steps": self.no_pair_steps,
                "rot_err_deg": float(np.nanmean(lo.rotation_error_deg.cpu().numpy())) if len(kept) else float("nan"),
                "trans_err_m": float(np.nanmean(lo.translation_error_m.cpu().numpy())) if len(kept) else float("nan"),
                "topk": self.topk() or 100.0, **ao.scalars}

    def _backward_and_step(self, total: torch.Tensor, lo: Any) -> float:
        """Backward of ``total``, then one Adam step unless this batch teaches nothing or a gradient is not finite.

        "Teaches nothing": no pair kept by the loss on any process and no auxiliary term. The official trainer
        skips the optimiser step then; stepping would still move the weights by Adam's momentum. The backward
        always runs, so DDP's gradient reduction stays in step on every process. With fp16 a GradScaler scales
        the loss; gradients are unscaled before the finiteness check and the clipping.

        Returns:
            The gradient norm before clipping; NaN when the step was skipped.
        """
        scaler = self.scaler
        (scaler.scale(total) if scaler is not None else total).backward()
        if not self._kept_anything(lo):
            self.skipped_steps += 1
            self.no_pair_steps += 1
            log.warning("step %d: no pair kept by the loss; optimiser step skipped (%d so far)", self.step,
                        self.no_pair_steps)
            return float("nan")
        if scaler is not None:
            scaler.unscale_(self.opt)
        if not all(torch.isfinite(p.grad).all() for p in self.params if p.grad is not None):
            self.skipped_steps += 1
            if scaler is not None:
                scaler.update()  # lowers the loss scale after an overflow
                log.warning("step %d: NaN/Inf gradients (fp16: loss scale now %g); optimiser step skipped (%d so far)",
                            self.step, scaler.get_scale(), self.skipped_steps)
            else:
                log.warning("step %d: NaN/Inf gradients; optimiser step skipped (%d so far)", self.step,
                            self.skipped_steps)
            return float("nan")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg["optim"]["grad_clip"]))
        if scaler is not None:
            scaler.step(self.opt)
            scaler.update()
        else:
            self.opt.step()
        return grad_norm

    def _kept_anything(self, lo: Any) -> bool:
        """Whether the batch has a learning signal: an auxiliary term, or a pair kept by the loss on some process."""
        if self.aux_cfg.active:
            return True
        kept = 0 if lo is None else int(lo.kept.sum())
        if self.world > 1:
            count = torch.tensor([kept], dtype=torch.int64, device=self.device)
            dist.all_reduce(count)
            kept = int(count.item())
        return kept > 0

    # -- checkpoints -------------------------------------------------------------------------------------------
    def save(self, name: str) -> Path:
        path = self.run_dir / "checkpoints" / name
        save_checkpoint(self.net, path, optimizer=self.opt.state_dict(), training_config=self.cfg, step=self.step,
                        epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, best_auc=self.best_auc,
                        skipped_steps=self.skipped_steps,
                        no_pair_steps=self.no_pair_steps, best_pose_auc=self.best_pose_auc,
                        grad_scaler=self.scaler.state_dict() if self.scaler is not None else None,
                        rng=_rng_state())
        return path

    def resume(self, path: str | Path) -> None:
        state = read_file(path, what="--resume checkpoint")
        if not isinstance(state, dict) or "optimizer" not in state or "step" not in state:
            raise CheckpointError(f"--resume {path}: not a training checkpoint (no optimizer state / step)")
        try:
            self.net.load_state_dict(state["state_dict"])
            self.opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"--resume {path}: does not fit this model/config "
                                  f"({str(err).splitlines()[0]})") from err
        self._apply_config_lr(path)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch, self.best_auc = int(state["batch_in_epoch"]), float(state["best_auc"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.no_pair_steps = int(state.get("no_pair_steps", 0))
        self.best_pose_auc = float(state.get("best_pose_auc", -math.inf))
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        _set_rng_state(state["rng"])

    def _apply_config_lr(self, path: str | Path) -> None:
        """The config's ``optim.lr`` and ``optim.eps`` win over the checkpoint's (Adam's moments are kept).

        An unchanged config resumes exactly; ``--resume CKPT optim.lr=3e-5`` continues at the new rate (without
        this, ``load_state_dict`` would silently keep the checkpoint's rate and ignore the override)."""
        lr, eps = float(self.cfg["optim"]["lr"]), float(self.cfg["optim"]["eps"])
        changed = [g for g in self.opt.param_groups if g["lr"] != lr or g["eps"] != eps]
        if changed:
            log.warning("--resume %s: optimiser lr %g, eps %g in the checkpoint; continuing with the config's "
                        "optim.lr %g, optim.eps %g (Adam moments kept)", path, changed[0]["lr"], changed[0]["eps"],
                        lr, eps)
        for group in self.opt.param_groups:
            group["lr"], group["eps"] = lr, eps

    # -- the loop ----------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batches: list[list[int]]) -> DataLoader:
        workers = self.cfg["data"]["num_workers"]
        return DataLoader(dataset, batch_sampler=batches, num_workers=workers, persistent_workers=False,
                          pin_memory=self.device.type == "cuda", worker_init_fn=_ignore_stop_signals)

    def _train_mode(self) -> None:
        """Train mode; with ``train.freeze_batchnorm`` the BatchNorm layers stay in eval mode (they use and keep their
        running statistics, so the network trains as it will run)."""
        self.net.train()
        if self.cfg["train"]["freeze_batchnorm"]:
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def recalibrate_batchnorm(self, dataset: Dataset, num_batches: int) -> int:
        """Re-estimate every BatchNorm's running statistics as the exact average over ``num_batches`` training
        batches (no gradients, weights unchanged): running statistics that fit the current weights.

        Returns:
            The number of batches used.
        """
        t = self.cfg["train"]
        order = epoch_order(dataset, self.cfg, 0)
        batches = epoch_batches(order, t["batch_size"], self.rank, self.world)[:num_batches]
        bns = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.net.train()
        used = 0
        with torch.no_grad():
            for batch in self._loader(dataset, batches):
                images = torch.cat([batch["image0"], batch["image1"]]).to(self.device)  # as a training step sees them
                focal = torch.cat([batch["K_color0"][:, 0, 0], batch["K_color1"][:, 0, 0]]).to(self.device)
                self.net.forward_heads(self.net.backbone_features(images), focal)
                used += 1
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        self._train_mode()
        log.info("BatchNorm statistics re-estimated over %d batches", used)
        return used

    def fit(self, train_ds: Dataset, val_ds: Dataset | None = None) -> dict[str, Any]:
        t = self.cfg["train"]
        if t["recalibrate_batchnorm"] and self.step == 0:
            self.recalibrate_batchnorm(train_ds, t["recalibrate_batchnorm"])
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config_mod.save(self.cfg, self.run_dir / "config.yaml")
            self.writer = _tensorboard(self.run_dir)
        batches_per_epoch = len(epoch_order(train_ds, self.cfg, 0)) // (t["batch_size"] * self.world)
        if batches_per_epoch == 0:
            raise DatasetError(f"train: {len(train_ds)} pairs are fewer than one global batch "
                               f"({t['batch_size']} x {self.world} processes)")
        mid_epoch = mid_epoch_validations(batches_per_epoch, t["val_per_epoch"])
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = _progress(t["progress"] and self.rank == 0, t["max_steps"] or t["epochs"] * batches_per_epoch,
                        self.step)
        try:
            while self.epoch < t["epochs"] and not self._done():
                order = epoch_order(train_ds, self.cfg, self.epoch)
                batches = epoch_batches(order, t["batch_size"], self.rank, self.world)
                start = self.batch_in_epoch
                for batch_idx, batch in enumerate(self._loader(train_ds, batches[start:]), start):
                    first = batch_idx * t["batch_size"] * self.world + self.rank * t["batch_size"]
                    scalars = self.train_step(batch, list(range(first, first + len(batch["pair_id"]))))
                    self.batch_in_epoch = batch_idx + 1
                    self._log(scalars, bar)
                    if self.rank == 0 and t["checkpoint_every"] and self.step % t["checkpoint_every"] == 0:
                        self.save("last.ckpt")
                    if val_ds is not None and ((t["val_every"] and self.step % t["val_every"] == 0)
                                               or self.batch_in_epoch in mid_epoch):
                        self._validate(val_ds)
                    if self.stop_signal is not None or self._done():
                        break
                if self.stop_signal is not None:
                    break
                if self.batch_in_epoch >= len(batches):
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if val_ds is not None:
                        self._validate(val_ds)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            if bar is not None:
                bar.close()
        if self.rank == 0:
            path = self.save("last.ckpt")
            if self.stop_signal is not None:
                log.warning("signal %d: wrote %s; continue with --resume %s", self.stop_signal, path, path)
            if self.writer is not None:
                self.writer.close()
        return {"step": self.step, "epoch": self.epoch, "interrupted": self.stop_signal is not None}

    def _done(self) -> bool:
        return bool(self.cfg["train"]["max_steps"]) and self.step >= self.cfg["train"]["max_steps"]

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum  # finish the current step, then checkpoint and stop

    def _log(self, scalars: dict[str, float], bar: Any) -> None:
        if self.rank != 0:
            return
        with self.metrics_file.open("a") as f:
            f.write(json.dumps({"step": self.step, "epoch": self.epoch, **scalars}) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{scalars[k]:.4g}" for k in ("loss", "kept_pairs", "aux_total") if k in scalars})
        t = self.cfg["train"]
        if self.writer is not None and self.step % t["log_every"] == 0:
            for k, v in scalars.items():
                self.writer.add_scalar(f"train/{k}", v, self.step)
        if self.writer is not None and self._last_outputs is not None:
            self.writer.add_image("train/matches", _match_image(*self._last_outputs), self.step, dataformats="HWC")

    def _validate(self, val_ds: Dataset) -> dict[str, Any] | None:
        if self.rank != 0:
            return None
        from training.evaluate import evaluate_dataset

        self.net.eval()
        try:
            metrics, _ = evaluate_dataset(self.net, val_ds, device=self.device, seed=self.cfg["train"]["seed"],
                                          max_pairs=self.cfg["train"]["val_max_pairs"])
        finally:
            self._train_mode()
        with self.metrics_file.open("a") as f:
            f.write(json.dumps({"step": self.step, "epoch": self.epoch, "val": metrics}) + "\n")
        if self.writer is not None:
            for k, v in flatten_metrics(metrics).items():
                self.writer.add_scalar(f"val/{k}", v, self.step)
        from mickey_ros.mapfree import KEY_AUC_POSE, KEY_AUC_VCRE

        better_vcre, better_pose = metrics[KEY_AUC_VCRE] > self.best_auc, metrics[KEY_AUC_POSE] > self.best_pose_auc
        self.best_auc = max(self.best_auc, metrics[KEY_AUC_VCRE])  # both bests first: each file holds both
        self.best_pose_auc = max(self.best_pose_auc, metrics[KEY_AUC_POSE])
        if better_vcre:  # best.ckpt = best_vcre.ckpt (the name before best_pose.ckpt existed)
            shutil.copyfile(self.save("best_vcre.ckpt"), self.run_dir / "checkpoints" / "best.ckpt")
        if better_pose:
            self.save("best_pose.ckpt")
        return metrics


def mid_epoch_validations(batches: int, per_epoch: int) -> set[int]:
    """Batch counts within an epoch after which to validate besides the epoch end: ``per_epoch - 1`` evenly
    spaced points (``train.val_per_epoch``; the official ``VAL_INTERVAL: 0.5`` is 2: the middle and the end)."""
    if isinstance(per_epoch, bool) or not isinstance(per_epoch, int) or per_epoch < 1:
        raise InputError(f"train.val_per_epoch: expected an integer >= 1, got {per_epoch!r}")
    return {round(k * batches / per_epoch) for k in range(1, per_epoch)} - {0, batches}


def _rng_state() -> dict[str, Any]:
    """torch, Python and numpy global RNG states as plain containers (loadable with ``weights_only``)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("%s; TensorBoard logging off, metrics still go to %s",
                    deps.missing_message("tensorboard", "train", "TensorBoard logging"), run_dir / "metrics.jsonl")
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _progress(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        log.warning("%s; no progress bar", deps.missing_message("tqdm", "train", "a progress bar"))
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def _match_image(batch: dict, out0: Any, out1: Any, P: torch.Tensor, lo: Any) -> np.ndarray:
    """Top matches of the first pair drawn side by side (uint8 HWC) for TensorBoard."""
    import cv2

    im0 = (batch["image0"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    im1 = (batch["image1"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    h = max(im0.shape[0], im1.shape[0])
    canvas = np.zeros((h, im0.shape[1] + im1.shape[1], 3), np.uint8)
    canvas[:im0.shape[0], :im0.shape[1]], canvas[:im1.shape[0], im0.shape[1]:] = im0, im1
    p = P[0].detach().float()
    top = torch.topk(p.flatten(), min(50, p.numel())).indices
    k0, k1 = out0.kpts[0].detach().cpu().numpy(), out1.kpts[0].detach().cpu().numpy()
    for flat in top.tolist():
        i, j = divmod(flat, p.shape[1])
        a = tuple(int(v) for v in k0[i])
        b = (int(k1[j][0]) + im0.shape[1], int(k1[j][1]))
        cv2.line(canvas, a, b, (0, 255, 0), 1, cv2.LINE_AA)
    return canvas


def init_distributed() -> tuple[int, int]:
    """``(rank, world)`` from torchrun's environment (gloo on CPU, nccl on CUDA); ``(0, 1)`` without it."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), world
