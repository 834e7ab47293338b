"""Trainer with the pose-only auxiliary terms: the warm-up stage (MicKey loss off) and the combined stage."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("rosbags.rosbag2")
pytest.importorskip("skimage.data")

from training import config as config_mod  # noqa: E402
from training import trainer as trainer_mod  # noqa: E402
from training.trainer import Trainer, build_dataset  # noqa: E402


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from training.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic_aux")
    generate(root / "train", scenes=1, frames=6, width=168, height=126, seed=5, depth=False)
    return root


def _trainer(bags, tmp_path, *extra):
    cfg = config_mod.resolve(None, [
        f"data.train=[{bags / 'train'}]", "data.num_workers=0", "data.max_baseline_m=3.0", "data.max_angle_deg=60.0",
        "model.preset=small", "train.batch_size=2", f"train.run_dir={tmp_path}", "train.progress=false",
        "train.device=cpu", "train.image_every=0", "loss.num_draws=2", "loss.hypotheses_per_draw=4",
        "loss.num_samples=64", *extra])
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    ds = build_dataset(cfg, "train", tmp_path)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    return trainer, batch


def _grad(module):
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(sum(g.abs().sum() for g in grads)) if grads else 0.0


def test_warmup_stage_skips_the_mickey_loss_and_trains_depth_descriptors_and_backbone(bags, tmp_path, monkeypatch):
    trainer, batch = _trainer(bags, tmp_path, "aux.mickey_weight=0.0", "aux.epipolar_weight=1.0",
                              "aux.triangulation_weight=1.0", "aux.keypoint_epipolar_weight=0.2")

    def fail(*args, **kwargs):
        raise AssertionError("the MicKey loss must not run with aux.mickey_weight=0")

    monkeypatch.setattr(trainer_mod, "mickey_loss", fail)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    scalars = trainer.train_step(batch, [0, 1])
    assert "loss" not in scalars and scalars["aux_total"] > 0 and "aux_epipolar" in scalars
    e = trainer.net.extractor
    assert _grad(e.dsc_head) > 0 and _grad(trainer.net.backbone) > 0
    if "aux_triangulation" in scalars:  # at random init a pair may have no usable triangulation
        assert _grad(e.depth_head) > 0
    assert _grad(e.det_head) == 0.0  # scores only learn from the MicKey loss
    changed = [k for k, v in trainer.net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("extractor.dsc_head.") for k in changed)


def test_combined_stage_adds_the_weighted_terms(bags, tmp_path, monkeypatch):
    trainer, batch = _trainer(bags, tmp_path, "aux.epipolar_weight=1.0")
    seen = {}
    real = trainer_mod.mickey_loss

    def spy(*args, **kwargs):
        seen["called"] = True
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "mickey_loss", spy)
    scalars = trainer.train_step(batch, [0, 1])
    assert seen["called"] and "loss" in scalars and scalars["aux_epipolar"] > 0


def test_freeze_batchnorm_keeps_running_statistics_while_training(bags, tmp_path):
    trainer, batch = _trainer(bags, tmp_path, "aux.mickey_weight=0.0", "aux.epipolar_weight=1.0",
                              "train.freeze_batchnorm=true")
    bns = [m for m in trainer.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and trainer.net.extractor.dsc_head.att_layer.training
    before = [m.running_mean.clone() for m in bns]
    trainer.train_step(batch, [0, 1])
    assert all(torch.equal(m.running_mean, b) for m, b in zip(bns, before))


def test_recalibrated_batchnorm_statistics_are_the_average_over_the_batches(bags, tmp_path):
    trainer, _ = _trainer(bags, tmp_path, "train.freeze_batchnorm=true")
    ds = build_dataset(trainer.cfg, "train", tmp_path)
    stem_bn = trainer.net.backbone.patch_embed.conv0[1]
    conv = trainer.net.backbone.patch_embed.conv0[0]
    used = trainer.recalibrate_batchnorm(ds, 2)
    assert used == 2 and not stem_bn.training  # frozen again afterwards
    from training.trainer import epoch_batches, epoch_order

    batches = epoch_batches(epoch_order(ds, trainer.cfg, 0), 2, 0, 1)[:2]
    means = []
    with torch.no_grad():
        for idx in batches:
            b = torch.utils.data.default_collate([ds[i] for i in idx])
            x = torch.cat([b["image0"], b["image1"]])
            means.append(conv(x).mean(dim=(0, 2, 3)))
    assert torch.allclose(stem_bn.running_mean, torch.stack(means).mean(0), atol=1e-5)
