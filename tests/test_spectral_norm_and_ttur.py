"""Recipe options of the quality-per-minute search (bench/quality_race.py): spectral normalisation in the
PatchGAN (model.discriminator.spectral_norm) and two time-scale learning rates (optim.d_lr_ratio)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from cyclegan.checkpoint import load_state
from cyclegan.config import DiscriminatorConfig, build_config, replace
from cyclegan.errors import ConfigError
from cyclegan.networks import build_discriminator
from cyclegan.training import build_train_step, train


def _convs(net: nn.Module) -> list[nn.Conv2d]:
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", ["patch", "pixel"])
def test_spectral_norm_bounds_every_conv(name):
    torch.manual_seed(0)
    net = build_discriminator(DiscriminatorConfig(name=name, ndf=8, n_layers=2, spectral_norm=True))
    plain = build_discriminator(DiscriminatorConfig(name=name, ndf=8, n_layers=2))
    assert all(parametrize.is_parametrized(c, "weight") for c in _convs(net))
    assert not any(parametrize.is_parametrized(c, "weight") for c in _convs(plain))
    net.train()
    x = torch.randn(2, 3, 32, 32)
    for _ in range(30):  # one power iteration per training forward
        net(x)
    for conv in _convs(net):
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, rel=0.05)
    # N(0, 0.02) initialisation reached the stored original weights, not the recomputed ones
    assert all(c.parametrizations.weight.original.std() < 0.05 for c in _convs(net))


def test_spectral_norm_refused_where_it_does_not_apply():
    with pytest.raises(ConfigError, match="model.discriminator.spectral_norm"):
        build_config(preset="tiny",
                     sets=["model.discriminator.name=dual", "model.discriminator.spectral_norm=true"])
    with pytest.raises(ConfigError, match="optim.d_lr_ratio"):
        build_config(preset="tiny", sets=["optim.d_lr_ratio=0"])


def test_two_time_scale_learning_rates(tiny_config, tmp_path):
    cfg = tiny_config(**{"optim.d_lr_ratio": 4.0, "optim.lr": 1e-4, "model.discriminator.spectral_norm": True,
                         "train.max_steps": 2})
    step = build_train_step(cfg, torch.device("cpu"))
    assert step.opt_g.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert step.opt_d.param_groups[0]["lr"] == pytest.approx(4e-4)
    # the loop sets every epoch's rate with the same ratio (here the linear policy's first epoch) and the
    # run resumes with spectral-normalised discriminators
    result = train(cfg, tmp_path / "run", progress=False)
    state = load_state(tmp_path / "run" / "checkpoints" / "latest")
    lr_g, lr_d = state["opt_g"]["param_groups"][0]["lr"], state["opt_d"]["param_groups"][0]["lr"]
    assert lr_d == pytest.approx(4 * lr_g) and lr_g > 0
    again = train(replace(cfg, **{"train.max_steps": 3}), tmp_path / "run", resume=True, progress=False)
    assert (result.step, again.step) == (2, 3)
