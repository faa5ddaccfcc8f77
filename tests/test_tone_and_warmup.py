"""The tone loss (loss.lambda_tone: pooled RGB of output against input) and the discriminator warm-up
(train.d_warmup_steps: the first N iterations step the discriminators only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cyclegan import checkpoint as ckpt_io
from cyclegan.config import build_config
from cyclegan.errors import ConfigError
from cyclegan.losses import tone_loss
from cyclegan.training import TrainStep, build_models, build_train_step, train

CPU = torch.device("cpu")
TINY = {"model.generator.ngf": 4, "model.generator.n_blocks": 1, "model.discriminator.ndf": 4,
        "model.discriminator.n_layers": 1, "data.load_size": 16, "data.crop_size": 16, "loss.pool_size": 2,
        "train.device": "cpu", "train.tensorboard": False}
KIND_EXTRA = {"cyclegan": {}, "cut": {"loss.nce_patches": 8, "loss.nce_mlp_dim": 8},
              "fastcut": {"loss.nce_patches": 8, "loss.nce_mlp_dim": 8}}
# what trains with the generators, and the discriminators, of each kind
GENERATOR_SIDE = {"cyclegan": ("G_A", "G_B"), "cut": ("G_A", "F"), "distill": ("G_A",)}
DISCRIMINATORS = {"cyclegan": ("D_A", "D_B"), "cut": ("D_B",), "distill": ("D_B",)}


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {d: torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=g) for d in ("A", "B")}


def _weights(step) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {k: v.detach().clone() for k, v in net.state_dict().items()}
            for name, net in step.checkpoint_networks().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """A tiny CycleGAN checkpoint: the distill kind's teacher."""
    run = tmp_path_factory.mktemp("teacher")
    cfg = build_config(preset="tiny", overrides={**TINY, "train.seed": 1})
    networks = build_models(cfg, CPU).networks()
    ckpt_io.save_checkpoint(run / "checkpoints" / "latest", config=cfg, networks=networks)
    return str(run)


def _config(kind: str, teacher: str, **overrides):
    extra = {"distill.teacher": teacher} if kind == "distill" else KIND_EXTRA[kind]
    return build_config(preset="tiny", overrides={**TINY, "model.kind": kind, **extra, **overrides})


# ----------------------------------------------------------------------------------------------
# The tone loss


def test_tone_loss_is_the_l1_of_pooled_rgb():
    # [1, 3, 2, 2]: pooled by 2, output is (R 0.5, G 0, B 0) and source (R -0.5, G 0.25, B 0)
    output = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[-1.0, -1.0], [1.0, 1.0]]]])
    source = torch.stack([torch.full((2, 2), -0.5), torch.full((2, 2), 0.25), torch.zeros(2, 2)])[None]
    assert tone_loss(output, source, pool=2).item() == pytest.approx((1.0 + 0.25 + 0.0) / 3)
    # pool 1: plain per-pixel L1 (R: 1.5 + 0.5 + 0.5 + 1.5; G: 0.25 x 4; B: 1 x 4; 9 over 12 values)
    assert tone_loss(output, source, pool=1).item() == pytest.approx(9 / 12)


def test_tone_loss_punishes_inverted_tones_and_leaves_texture_free():
    ramp = torch.linspace(-0.8, 0.8, 16)
    image = torch.stack([ramp[None, :].expand(16, 16), ramp[:, None].expand(16, 16),
                         torch.full((16, 16), 0.3)])[None]  # [1, 3, 16, 16]: smooth regions of colour
    checker = 0.2 * (torch.arange(16)[:, None] + torch.arange(16)[None, :]).remainder(2).mul(2).sub(1)
    textured = image + checker  # the same tones with new texture (a checkerboard averages out)
    assert tone_loss(image, image, pool=4).item() == 0.0
    assert tone_loss(textured, image, pool=4).item() < 1e-6
    assert tone_loss(-image, image, pool=4).item() > 0.3  # brightness inverted
    assert tone_loss(-image, image, pool=4) > tone_loss(textured, image, pool=4)


def test_lambda_tone_changes_what_one_step_trains(teacher):
    torch.manual_seed(0)
    plain = build_train_step(_config("cyclegan", teacher), CPU)
    plain(_batch())
    torch.manual_seed(0)
    toned = build_train_step(_config("cyclegan", teacher, **{"loss.lambda_tone": 5.0}), CPU)
    losses = toned(_batch())
    assert losses["tone_A"] > 0 and losses["tone_B"] > 0 and "tone_A" not in plain(_batch(1))
    for name in ("G_A", "G_B"):
        assert not _same(_weights(plain)[name], _weights(toned)[name]), name


def test_lambda_tone_is_a_weighted_term_and_refused_by_one_sided_kinds(teacher):
    step = build_train_step(_config("cyclegan", teacher, **{"loss.lambda_tone": 1.0, "loss.lambda_id": 0.0,
                                                             "loss.adaptive_weighting": "uncertainty"}), CPU)
    assert "tone" in step.loss_weights.names
    assert "weight_tone" in step(_batch())
    for kind in ("cut", "distill"):
        with pytest.raises(ConfigError, match="loss.lambda_tone"):
            _config(kind, teacher, **{"loss.lambda_tone": 1.0})


# ----------------------------------------------------------------------------------------------
# The discriminator warm-up


@pytest.mark.parametrize("kind", ["cyclegan", "cut", "distill"])
def test_warmup_steps_the_discriminators_only_then_the_generators(kind, teacher):
    cfg = _config(kind, teacher, **{"train.d_warmup_steps": 2, "train.ema_decay": 0.5,
                                    "loss.lambda_lecam": 0.1, "train.diffaug": "color,translation"})
    step = build_train_step(cfg, CPU)
    start = _weights(step)
    for iteration in (0, 1):
        losses = step(_batch(iteration), iteration=iteration)
        assert "G_total" not in losses and all(d in losses for d in DISCRIMINATORS[kind]), losses.keys()
    warm = _weights(step)
    for name in GENERATOR_SIDE[kind]:  # generators (and what trains with them) and their EMA unchanged
        assert _same(start[name], warm[name]), name
    for name in step.ema:
        assert _same(start[f"{name}_ema"], warm[f"{name}_ema"]), name
    for name in DISCRIMINATORS[kind]:
        assert not _same(start[name], warm[name]), name
    assert all(pool.images for pool in step.pools.values())  # the fakes went through the pools
    losses = step(_batch(2), iteration=2)  # warm-up over: the generators train
    assert "G_total" in losses
    trained = _weights(step)
    for name in (*GENERATOR_SIDE[kind], *(f"{n}_ema" for n in step.ema)):
        assert not _same(warm[name], trained[name]), name


def _run_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    ckpt = ckpt_io.resolve_checkpoint(run)
    return {p.stem: ckpt_io.load_weights(ckpt, p.stem) for p in sorted(ckpt.glob("*.safetensors"))}


@pytest.mark.parametrize("kind", ["cyclegan", "cut"])
def test_a_run_stopped_inside_the_warmup_resumes_bitwise(kind, tiny_config, tmp_path):
    common = {"model.kind": kind, **KIND_EXTRA[kind], "train.seed": 3, "train.d_warmup_steps": 4,
              "loss.pool_size": 3, "loss.lambda_lecam": 0.1, "train.ema_decay": 0.9}
    straight = train(tiny_config(**common, **{"train.max_steps": 6}), tmp_path / "a", progress=False)
    first = train(tiny_config(**common, **{"train.max_steps": 2}), tmp_path / "b", progress=False)
    assert (straight.step, first.step, first.status) == (6, 2, "max_steps")
    second = train(tiny_config(**common, **{"train.max_steps": 6}), tmp_path / "b", resume=True,
                   progress=False)
    assert second.step == 6
    a, b = _run_weights(tmp_path / "a"), _run_weights(tmp_path / "b")
    assert a.keys() == b.keys() and "G_A" in a
    for name in a:
        assert _same(a[name], b[name]), name


def test_log_averages_each_loss_over_the_iterations_that_reported_it(tiny_config, tmp_path, monkeypatch):
    # Iterations 1-3 are a discriminator warm-up (no generator losses), 4 trains both: the window of
    # the log line at iteration 4 must average G_total over its one iteration, not over four.
    original = TrainStep.__call__

    def constant_generator_loss(self, batch, **kwargs):
        losses = original(self, batch, **kwargs)
        return {**losses, "G_total": torch.tensor(2.0)} if "G_total" in losses else losses

    monkeypatch.setattr(TrainStep, "__call__", constant_generator_loss)
    train(tiny_config(**{"train.max_steps": 4, "train.log_every": 4, "train.d_warmup_steps": 3}),
          tmp_path / "run", progress=False)
    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    (line,) = [r for r in records if r.get("step") == 4 and "G_total" in r]
    assert line["G_total"] == 2.0
