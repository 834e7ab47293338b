"""Trainer behaviour that follows the official training code: generators on P's device, no optimiser step without a
kept pair, fp16 backbone with a GradScaler, best checkpoints by VCRE and pose AUC, validations per epoch."""
from __future__ import annotations

import copy
import sys

import pytest
import torch

from conftest import REPO
from training import config as config_mod
from training.trainer import Trainer, mid_epoch_validations, pair_generator

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _demo_batch(indices):
    sys.path.insert(0, str(REPO / "test" / "training"))
    from ddp_grad_check import demo_batch

    return demo_batch(indices)


def _cfg(tmp_path, *extra):
    return config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.device=cpu", "train.curriculum=false",
                                     *extra])


# -- generators -----------------------------------------------------------------------------------------------
def test_pair_generator_lives_on_the_requested_device_and_is_seeded():
    gen = pair_generator(3, 5, 7, torch.device("cpu"))
    assert gen.device == torch.device("cpu")
    again = pair_generator(3, 5, 7, "cpu")
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=again))
    assert not torch.equal(torch.rand(4, generator=pair_generator(3, 5, 8)), torch.rand(4, generator=again))


def test_trainer_builds_the_loss_generators_on_the_device_of_P(tmp_path, monkeypatch):
    """The generators handed to the loss are made for P's device (a CPU generator with CUDA P raises in torch)."""
    import training.trainer as trainer_mod

    seen = {}
    real_gen, real_loss = trainer_mod.pair_generator, trainer_mod.mickey_loss

    def recording_generator(seed, step, index, device="cpu"):
        seen.setdefault("devices", []).append(torch.device(device))
        return real_gen(seed, step, index, device)

    def recording_loss(P, *args, **kwargs):
        seen["P"], seen["generators"] = P.device, args[-1]
        return real_loss(P, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "pair_generator", recording_generator)
    monkeypatch.setattr(trainer_mod, "mickey_loss", recording_loss)
    trainer = Trainer(_cfg(tmp_path))
    scalars = trainer.train_step(_demo_batch([0, 1]), [0, 1])
    assert seen["devices"] == [seen["P"], seen["P"]] == [trainer.device] * 2
    assert [g.device for g in seen["generators"]] == [seen["P"]] * 2
    assert scalars["kept_pairs"] == 2 and scalars["skipped_steps"] == 0


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_step(tmp_path, monkeypatch, precision):
    """A real Trainer.train_step on the GPU: per-pair generators on CUDA, finite gradients, an optimiser step (fp16:
    a first loss-scale overflow may skip a step, the GradScaler then lowers the scale)."""
    import training.trainer as trainer_mod

    devices = []
    real_loss = trainer_mod.mickey_loss

    def recording_loss(P, *args, **kwargs):
        devices.append((P.device, [g.device for g in args[-1]]))
        return real_loss(P, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "mickey_loss", recording_loss)
    trainer = Trainer(config_mod.resolve(None, [f"train.run_dir={tmp_path}", "train.device=cuda",
                                                "train.curriculum=false", f"train.precision={precision}"]))
    before = {n: p.detach().clone() for n, p in trainer.net.named_parameters() if p.requires_grad}
    for _ in range(3):
        scalars = trainer.train_step(_demo_batch([0, 1]), [0, 1])
        if trainer.skipped_steps < trainer.step:
            break
    assert scalars["kept_pairs"] == 2 and trainer.skipped_steps < trainer.step
    assert all(P.type == "cuda" and gens == [P, P] for P, gens in devices)
    assert any(not torch.equal(before[n], p) for n, p in trainer.net.named_parameters() if n in before)
    assert (trainer.scaler is not None) == (precision == "fp16")


# -- no pair kept: no optimiser step --------------------------------------------------------------------------
def test_a_step_without_kept_pairs_leaves_weights_and_optimiser_state_untouched(tmp_path, monkeypatch, caplog):
    """After one real step (Adam has momentum), a batch where the loss keeps no pair must not step: the official
    trainer skips the optimiser; an Adam step on zero gradients would still move the weights by momentum."""
    import training.trainer as trainer_mod

    trainer = Trainer(_cfg(tmp_path))
    assert trainer.train_step(_demo_batch([0]), [0])["skipped_steps"] == 0
    params = {n: p.detach().clone() for n, p in trainer.net.named_parameters()}
    opt_state = copy.deepcopy(trainer.opt.state_dict())
    real = trainer_mod.mickey_loss

    def nothing_kept(*args, **kwargs):
        out = real(*args, **kwargs)
        out.kept = torch.zeros_like(out.kept)
        out.surrogate = out.surrogate * 0.0  # what the loss returns without kept pairs: a graph-connected zero
        return out

    monkeypatch.setattr(trainer_mod, "mickey_loss", nothing_kept)
    scalars = trainer.train_step(_demo_batch([0]), [1])
    assert scalars["kept_pairs"] == 0 and scalars["no_pair_steps"] == 1 and scalars["skipped_steps"] == 1
    assert scalars["grad_norm"] != scalars["grad_norm"]  # NaN: no step
    assert trainer.step == 2 and "no pair kept by the loss; optimiser step skipped (1 so far)" in caplog.text
    for n, p in trainer.net.named_parameters():
        assert torch.equal(params[n], p), n
    after = trainer.opt.state_dict()
    assert after["param_groups"] == opt_state["param_groups"] and after["state"].keys() == opt_state["state"].keys()
    for i, state in opt_state["state"].items():
        for key, value in state.items():
            assert torch.equal(after["state"][i][key], value), (i, key)


def test_invalid_P_for_every_pair_skips_the_step(tmp_path, monkeypatch):
    """The same through the real loss: a non-finite P makes every pair invalid, so no pair is kept."""
    import training.trainer as trainer_mod

    trainer = Trainer(_cfg(tmp_path))
    real = trainer_mod.mickey_loss
    monkeypatch.setattr(trainer_mod, "mickey_loss", lambda P, *a, **k: real(P.detach() * float("nan"), *a, **k))
    params = {n: p.detach().clone() for n, p in trainer.net.named_parameters()}
    scalars = trainer.train_step(_demo_batch([0]), [0])
    assert scalars["no_pair_steps"] == 1 and scalars["invalid_pairs"] == 1
    assert trainer.opt.state_dict()["state"] == {}  # Adam never stepped
    assert all(torch.equal(params[n], p) for n, p in trainer.net.named_parameters())


# -- fp16 ------------------------------------------------------------------------------------------------------
def test_fp16_backbone_with_a_grad_scaler_on_cpu(tmp_path):
    """train.precision=fp16 with the frozen backbone of the official recipe: the backbone runs under fp16 autocast,
    the loss is scaled by a GradScaler, gradients are unscaled before the step, and resume restores the scaler."""
    trainer = Trainer(_cfg(tmp_path, "train.precision=fp16", "train.image_every=1", "model.freeze_backbone=true"))
    assert trainer.autocast_dtype == torch.float16 and trainer.scaler is not None
    scalars = trainer.train_step(_demo_batch([0]), [0])
    assert scalars["skipped_steps"] == 0 and scalars["grad_norm"] < 1e4  # unscaled (scale 65536)
    assert trainer.scaler.get_scale() == 65536.0
    _, out0, _, P, lo = trainer._last_outputs
    assert out0.depth.dtype == P.dtype == torch.float32 and lo.loss.dtype == torch.float64
    fp32 = Trainer(_cfg(tmp_path))
    with torch.no_grad():
        image = _demo_batch([0])["image0"]
        assert not torch.equal(fp32.step_module._features(image), trainer.step_module._features(image))
    trainer.scaler.update(1024.0)
    other = Trainer(_cfg(tmp_path, "train.precision=fp16", "model.freeze_backbone=true"))
    other.resume(trainer.save("fp16.ckpt"))
    assert other.scaler.get_scale() == 1024.0


def test_fp16_overflow_lowers_the_loss_scale_and_skips_only_that_step(tmp_path, caplog):
    """A trainable backbone backpropagates in fp16: an overflow skips the step and halves the scale (GradScaler);
    the next steps go through with unscaled, finite gradients."""
    trainer = Trainer(_cfg(tmp_path, "train.precision=fp16"))
    norms = [trainer.train_step(_demo_batch([0]), [0])["grad_norm"] for _ in range(3)]
    skipped = trainer.skipped_steps
    assert skipped < 3 and trainer.scaler.get_scale() == 65536.0 * 0.5 ** skipped
    assert sum(n == n for n in norms) == 3 - skipped and all(n < 1e4 for n in norms if n == n)
    assert skipped == 0 or "fp16: loss scale now 32768" in caplog.text


def test_fp16_without_autocast_support_is_one_line_naming_the_setting(tmp_path, monkeypatch):
    import training.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "fp16_autocast_works", lambda device: False)
    with pytest.raises(Exception, match=r"^train\.precision: fp16 autocast is not supported on cpu") as err:
        Trainer(_cfg(tmp_path, "train.precision=fp16"))
    assert "\n" not in str(err.value)
    with pytest.raises(Exception, match="train.precision: expected auto, fp32, bf16 or fp16, got 'fp8'"):
        Trainer(_cfg(tmp_path, "train.precision=fp8"))


# -- validation schedule and best checkpoints -------------------------------------------------------------------
def test_mid_epoch_validations():
    assert mid_epoch_validations(10, 1) == set()
    assert mid_epoch_validations(10, 2) == {5}  # official VAL_INTERVAL 0.5: middle (+ the epoch end)
    assert mid_epoch_validations(9, 3) == {3, 6}
    assert mid_epoch_validations(1, 4) == set()
    with pytest.raises(Exception, match="train.val_per_epoch: expected an integer >= 1, got 0"):
        mid_epoch_validations(10, 0)


def test_validation_keeps_best_checkpoints_by_vcre_and_by_pose_auc(tmp_path, monkeypatch):
    import training.evaluate as evaluate_mod
    from mickey_ros.mapfree import KEY_AUC_POSE, KEY_AUC_VCRE

    results = iter([{KEY_AUC_VCRE: 0.5, KEY_AUC_POSE: 0.2, "identity": {"median_rot_err_deg": 3.0}},
                    {KEY_AUC_VCRE: 0.4, KEY_AUC_POSE: 0.3, "identity": {"median_rot_err_deg": 3.0}}])
    monkeypatch.setattr(evaluate_mod, "evaluate_dataset", lambda *a, **k: (next(results), {}))
    trainer = Trainer(_cfg(tmp_path))
    ckpts = tmp_path / "checkpoints"
    trainer.step = 1
    trainer._validate(val_ds=None)
    assert {p.name for p in ckpts.iterdir()} == {"best.ckpt", "best_vcre.ckpt", "best_pose.ckpt"}
    trainer.step = 2
    trainer._validate(val_ds=None)  # pose AUC improves, VCRE AUC does not
    steps = {p.name: torch.load(p, weights_only=True)["step"] for p in ckpts.iterdir()}
    assert steps == {"best.ckpt": 1, "best_vcre.ckpt": 1, "best_pose.ckpt": 2}
    state = torch.load(ckpts / "best_pose.ckpt", weights_only=True)
    assert state["best_auc"] == 0.5 and state["best_pose_auc"] == 0.3
    other = Trainer(_cfg(tmp_path))
    other.resume(ckpts / "best_pose.ckpt")
    assert (other.best_auc, other.best_pose_auc) == (0.5, 0.3)


def test_val_per_epoch_validates_in_the_middle_and_at_the_end(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(Trainer, "train_step", lambda self, batch, idx: (setattr(self, "step", self.step + 1),
                                                                        {"loss": 0.0, "kept_pairs": 1})[1])
    monkeypatch.setattr(Trainer, "_validate", lambda self, ds: calls.append((self.epoch, self.batch_in_epoch)))

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"pair_id": i}

    trainer = Trainer(_cfg(tmp_path, "train.batch_size=1", "train.epochs=1", "train.val_per_epoch=2",
                           "train.val_every=0", "train.progress=false", "data.num_workers=0"))
    trainer.fit(Pairs(), val_ds=Pairs())
    assert calls == [(0, 2), (1, 0)]  # after batch 2 of 4, and at the epoch end


# -- official configs (official_mickey.md section 13) ------------------------------------------------------------
def _diff(a, b):
    return {f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]}


def test_warmup_and_overlap_score_configs_differ_from_official_as_section_13():
    configs = {n: config_mod.resolve(REPO / "training" / "configs" / f"{n}.yaml")
               for n in ("official", "official_warmup", "official_sc", "official_sc_warmup")}
    warm = configs["official_warmup"]
    assert (warm["data"]["resize"], warm["train"]["batch_size"]) == ([360, 480], 24)  # W x H = 360 x 480
    assert (warm["loss"]["num_samples"], warm["loss"]["null_hypothesis"]) == (64, False)
    assert configs["official_sc"]["data"]["min_overlap"] == 0.4 and configs["official_sc"]["data"]["max_overlap"] == 0.8
    new_only = {"train.run_dir"}
    warm_keys = {"data.resize", "train.batch_size", "loss.num_samples", "loss.null_hypothesis"}
    sc_keys = {"data.min_overlap", "data.max_overlap", "train.curriculum"}
    assert _diff(warm, configs["official"]) - new_only == warm_keys
    assert _diff(configs["official_sc"], configs["official"]) - new_only == sc_keys
    assert _diff(configs["official_sc_warmup"], warm) == sc_keys | {"train.run_dir"}
    for name in ("official", "official_warmup", "official_sc", "official_sc_warmup"):
        assert configs[name]["train"]["val_per_epoch"] == 2 and configs[name]["train"]["precision"] == "fp16"
