"""The contract every registered part keeps, and every config option.

Parts: each model kind, generator, discriminator and GAN loss builds, takes one training step, resumes
bitwise from its saved state, and its generator exports (safetensors) and translates. Options: every key
of the schema, changed from a tiny baseline, either changes the trained weights after one step for each
kind that accepts it, or is refused by validation with a message naming it; keys that legitimately do
not change the weights of one step are listed in NO_STEP_EFFECT with the reason."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cyclegan import checkpoint as ckpt_io
from cyclegan.config import KINDS, Config, build_config
from cyclegan.errors import ConfigError
from cyclegan.export import export_generator
from cyclegan.losses import GAN_LOSSES
from cyclegan.modelfile import load_any_generator
from cyclegan.networks import DISCRIMINATORS, GENERATORS
from cyclegan.training import (
    TRAIN_STEPS,
    build_models,
    build_train_step,
    restore_training_state,
    training_state,
)

CPU = torch.device("cpu")
BASE = {"model.generator.ngf": 4, "model.generator.n_blocks": 1, "model.discriminator.ndf": 4,
        "model.discriminator.n_layers": 1, "data.load_size": 16, "data.crop_size": 16, "loss.pool_size": 2,
        "train.device": "cpu", "train.tensorboard": False}
ONE_SIDED_BASE = {"loss.nce_patches": 8, "loss.nce_mlp_dim": 8}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny CycleGAN checkpoint of BASE's networks: the distill kind's teacher, init_from's source."""
    run = tmp_path_factory.mktemp("teacher")
    cfg = build_config(preset="tiny", overrides={**BASE, "train.seed": 1})  # not the runs' initial weights
    networks = build_models(cfg, CPU).networks()
    ckpt_io.save_checkpoint(run / "checkpoints" / "latest", config=cfg, networks=networks)
    return str(run)


def kind_base(kind: str, teacher: str) -> dict:
    extra = {"cyclegan": {}, "distill": {"distill.teacher": teacher}}.get(kind, ONE_SIDED_BASE)
    return {**BASE, "model.kind": kind, **extra}


def batch(size: int = 16, seed: int = 0, *, smooth: str = "both") -> dict[str, torch.Tensor]:
    """Two uint8 images per domain, and the edge-smoothed copies of the domains ``smooth`` names, as the
    training loop adds them for loss.edge_promote_direction."""
    g = torch.Generator().manual_seed(seed)

    def images():
        return torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=g)

    out = {"A": images(), "B": images()}
    out.update({f"{d}_smooth": images() for d in ("A", "B") if smooth in (d.lower(), "both")})
    return out


def one_step(cfg: Config) -> dict[str, torch.Tensor]:
    """Everything one step trains: the checkpoint's networks, learned loss weights and LeCam anchors
    (the last two are saved in state.pt; LeCam's anchors are bias-corrected, so its decay shows in the
    raw averages before it shows in the weights)."""
    torch.manual_seed(0)
    step = build_train_step(cfg, CPU)
    step(batch(cfg.data.crop_size, smooth=cfg.loss.edge_promote_direction))
    out = {f"{name}.{k}": v.detach().clone() for name, net in step.checkpoint_networks().items()
           for k, v in net.state_dict().items()}
    if step.loss_weights is not None:
        out.update({f"loss_weights.{k}": v.detach().clone()
                    for k, v in step.loss_weights.state_dict().items()})
    for name, anchors in step.lecam.items():
        out.update({f"lecam_{name}.real": anchors.real.clone(), f"lecam_{name}.fake": anchors.fake.clone()})
    return out


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------
# Every registered part


def part_cases():
    yield from (("kind", k) for k in sorted(TRAIN_STEPS))
    yield from (("generator", g) for g in sorted(GENERATORS))
    yield from (("discriminator", d) for d in sorted(DISCRIMINATORS))
    yield from (("gan", g) for g in sorted(GAN_LOSSES))


def part_config(what: str, name: str, teacher: str) -> Config:
    if what == "kind":
        return build_config(preset="tiny", overrides=kind_base(name, teacher))
    if what == "generator":
        # widths and crop each generator accepts (U-Nets reach 1x1: the crop is their size multiple)
        probe = build_config(preset="tiny", overrides=BASE)
        from cyclegan.config import generator_size_multiple  # keeps the list above short
        gcfg = dataclasses.replace(probe.model.generator, name=name,
                                   n_blocks=probe.model.generator.n_blocks if name in _RESIDUAL else 9)
        crop = max(16, generator_size_multiple(gcfg))
        overrides = {**BASE, "model.generator.name": name, "data.crop_size": crop, "data.load_size": crop}
        if name not in _RESIDUAL:
            overrides.pop("model.generator.n_blocks")
        if name.startswith("unet"):
            overrides["model.generator.ngf"] = 2
        return build_config(preset="tiny", overrides=overrides)
    if what == "discriminator":
        overrides = {**BASE, "model.discriminator.name": name}
        if name == "pixel":
            overrides.pop("model.discriminator.n_layers")
        return build_config(preset="tiny", overrides=overrides)
    return build_config(preset="tiny", overrides={**BASE, "loss.gan": name})


_RESIDUAL = {n for n, o in GENERATORS.options.items()
             if o is not None and "n_blocks" in {f.name for f in dataclasses.fields(o)}}


@pytest.mark.parametrize(("what", "name"), list(part_cases()))
def test_every_part_builds_steps_resumes_bitwise_exports_and_translates(what, name, teacher, tmp_path):
    cfg = part_config(what, name, teacher)
    size = cfg.data.crop_size
    step = build_train_step(cfg, CPU)
    losses = step(batch(size, seed=1))
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    # Resume: save weights and state, continue in a fresh step, compare with the straight run.
    ckpt = ckpt_io.save_checkpoint(tmp_path / "ckpt", config=cfg, networks=step.checkpoint_networks(),
                                   state=training_state(step, global_step=1, epoch=0, epoch_step=1))
    torch.manual_seed(7)
    step(batch(size, seed=2))
    resumed = build_train_step(cfg, CPU, warm_start_nets=False)
    restore_training_state(resumed, ckpt)
    torch.manual_seed(7)
    resumed(batch(size, seed=2))
    for net_name, net in step.checkpoint_networks().items():
        other = resumed.checkpoint_networks()[net_name]
        for key, value in net.state_dict().items():
            assert torch.equal(value, other.state_dict()[key]), (net_name, key)
    # Export and translate the generator the checkpoint holds.
    exported = export_generator(ckpt, fmt="safetensors", out=tmp_path / "g.safetensors")
    assert exported is not None
    generator = load_any_generator(str(tmp_path / "g.safetensors"), device="cpu").model.eval()
    with torch.no_grad():
        out = generator(torch.zeros(1, 3, size, size))
    assert out.shape == (1, 3, size, size) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------
# Every config option: it changes the weights of one step for each kind that accepts it, or is refused

ATTENTION = {"model.generator.name": "attention"}
VQ = {**ATTENTION, "model.generator.vq_codebook_size": 4}
# key -> (value, context): the value differs from the baseline's; context is set in both runs
CHANGES: dict[str, tuple] = {
    "model.generator.ngf": (6, {}),
    "model.generator.n_blocks": (2, {}),
    "model.generator.norm": ("batch", {}),
    "model.generator.dropout": (0.5, {}),
    "model.generator.upsample": ("resize", {}),
    "model.generator.antialias": ("both", {}),
    "model.generator.antialias_filter": (5, {"model.generator.antialias": "both"}),
    "model.generator.antialias_up_filter": (3, {"model.generator.antialias": "both"}),
    "model.generator.se_reduction": (2, ATTENTION),
    "model.generator.cbam_every": (1, ATTENTION),
    "model.generator.self_attention": (False, ATTENTION),
    "model.generator.vq_codebook_size": (4, ATTENTION),
    "model.generator.vq_dim": (8, VQ),
    "model.generator.vq_ema_decay": (0.0, VQ),
    "model.discriminator.ndf": (6, {}),
    "model.discriminator.n_layers": (2, {}),
    "model.discriminator.norm": ("batch", {}),
    "model.discriminator.spectral_norm": (True, {}),
    "model.init": ("xavier", {}),
    "model.init_gain": (0.05, {}),
    "loss.gan": ("hinge", {}),
    "loss.lambda_gan": (2.0, {}),
    "loss.lambda_cyc": (3.0, {}),
    "loss.lambda_id": (1.0, {}),
    "loss.lambda_gp": (3.0, {"loss.gradient_penalty": True}),
    "loss.gradient_penalty": (True, {}),
    "loss.lambda_fm": (1.0, {}),
    "loss.lambda_edge": (1.0, {}),
    "loss.lambda_color": (1.0, {}),
    "loss.lambda_tone": (1.0, {}),
    "loss.color_pool": (2, {"loss.lambda_color": 1.0}),
    "loss.lambda_vq": (1.0, VQ),
    "loss.adaptive_weighting": ("uncertainty", {}),
    "loss.lambda_nce": (2.0, {}),
    "loss.nce_idt": (False, {}),
    "loss.nce_temperature": (0.2, {}),
    "loss.nce_patches": (4, {}),
    "loss.nce_mlp_dim": (4, {}),
    "loss.flip_equivariance": (True, {}),
    "loss.lambda_edge_promote": (1.0, {}),
    "loss.edge_promote_direction": ("both", {"loss.lambda_edge_promote": 1.0}),
    "loss.lambda_lecam": (1.0, {}),
    "loss.lecam_decay": (0.5, {"loss.lambda_lecam": 1.0}),
    "optim.lr": (1e-3, {}),
    "optim.d_lr_ratio": (3.0, {}),
    "train.seed": (3, {}),
    "train.precision": ("bf16", {}),
    "train.ema_decay": (0.9, {}),
    "train.diffaug": ("color,translation", {}),
    "train.init_from": (None, {}),  # the teacher run, with init_nets G_A: filled in by the test
    "train.init_nets": ("G_A", {}),
    "train.d_warmup_steps": (1, {}),  # one step inside the warm-up: the generators stay as built
    "distill.direction": ("b2a", {}),
    "distill.lambda_distill": (3.0, {}),
    "distill.lambda_feature": (0.5, {}),
    "distill.real": ("teacher", {}),
    "distill.inherit_discriminator": (False, {}),
}
_LOOP = "read by the training loop between steps (schedule, stopping, logging, checkpoints; test_training)"
_DATA = "shapes the images the loader yields; one step is given its batch (test_data)"
_SCHEDULE = "sets the learning rate the loop gives each epoch (test_schedules); one step runs at optim.lr"
NO_STEP_EFFECT: dict[str, str] = {
    "model.kind": "the axis of this matrix",
    "model.generator.name": "the axis of the parts contract above",
    "model.discriminator.name": "the axis of the parts contract above",
    "loss.pool_size": "the pool hands back the current fakes until it holds pool_size images (test_pool)",
    "loss.edge_smooth_dir": "where the loop reads the smoothed copies from; the step gets them in its batch",
    "optim.beta1": "Adam's bias correction makes its first update independent of the betas",
    "optim.beta2": "Adam's bias correction makes its first update independent of the betas",
    "train.grad_checkpointing": "recomputes the same activations in backward: same weights, less memory "
                                "(test_training)",
    "train.compile": "the same computation compiled (test_training); compiling costs more than this test",
    "train.compile_mode": "a torch.compile mode, with train.compile",
    "train.channels_last": "the same convolutions in another memory layout",
    "train.device": "auto is the CPU here",
    "train.num_threads": "threads do not change results",
    "train.batch_size": _DATA,
    "train.resolution_schedule": "the loop cuts each batch to its stage's crop before the step "
                                 "(test_resolution)",
    "distill.teacher": "which teacher: another teacher is another run (test_distill)",
    "distill.teacher_sha256": "a check of the teacher's weights on resume (test_distill), not a setting",
    "preset": "the name of the recipe the other keys came from",
    **{f"data.{f.name}": _DATA for f in dataclasses.fields(Config().data)},
    **{f"optim.{k}": _SCHEDULE for k in ("lr_policy", "decay_epochs", "step_epochs", "step_gamma",
                                          "lr_scaling", "t_0", "t_mult", "eta_min")},
    **{f"train.{k}": _LOOP for k in ("epochs", "max_steps", "max_minutes", "log_every", "save_latest_every",
                                      "save_epoch_every", "keep_epochs", "epoch_checkpoint_state",
                                      "async_checkpoint", "sample_every", "tensorboard", "eval_every",
                                      "eval_classifier", "classifier_min_accuracy", "inception_weights",
                                      "sample_every_minutes", "final_translations")},
}
_OFF = (0, False, None, "", "none")


def _flat(tree: dict, prefix: str = "") -> list[str]:
    return [k for key, v in tree.items()
            for k in (_flat(v, f"{prefix}{key}.") if isinstance(v, dict) else [prefix + key])]


def test_every_schema_key_is_classified_once():
    keys = set(_flat(Config().to_dict()))
    assert not set(CHANGES) & set(NO_STEP_EFFECT)
    assert keys == set(CHANGES) | set(NO_STEP_EFFECT), keys ^ (set(CHANGES) | set(NO_STEP_EFFECT))


def _reads(cfg: Config, key: str) -> bool:
    section, _, name = key.rpartition(".")
    if section in ("loss", "distill"):
        return key in KINDS[cfg.model.kind].options
    if section in ("model.generator", "model.discriminator"):
        registry = GENERATORS if section == "model.generator" else DISCRIMINATORS
        options = registry.options.get(getattr(cfg.model, section.split(".")[1]).name)
        return options is not None and name in {f.name for f in dataclasses.fields(options)}
    return True


@pytest.mark.parametrize("kind", sorted(TRAIN_STEPS))
def test_every_option_changes_one_step_or_is_refused(kind, teacher):
    base = kind_base(kind, teacher)
    baselines: dict[tuple, dict | None] = {}
    for key, (value, context) in CHANGES.items():
        changes = {key: value}
        if key == "train.init_from":
            changes = {key: teacher, "train.init_nets": "G_A"}
        ctx = tuple(sorted(context.items()))
        if ctx not in baselines:
            try:
                baselines[ctx] = one_step(build_config(preset="tiny", overrides={**base, **context}))
            except ConfigError:
                baselines[ctx] = None  # this kind refuses the context itself (e.g. CUT and attention)
        try:
            cfg = build_config(preset="tiny", overrides={**base, **context, **changes})
        except ConfigError as e:
            assert baselines[ctx] is None or key in str(e), (kind, key, str(e))
            continue
        assert baselines[ctx] is not None, (kind, key, "accepted with a context the kind refuses")
        changed = not same_weights(baselines[ctx], one_step(cfg))
        if value in _OFF and not _reads(cfg, key):
            assert not changed, (kind, key, "off, unread, yet the weights changed")  # accepted as "off"
        else:
            assert changed, (kind, key, "accepted, yet the weights after one step are the same")
