"""The edge-promoting loss and LeCam in the training step: bitwise resume, which network the gradients
reach, and the anime-style preset end to end."""

import pytest
import torch
from test_training import _assert_bitwise_equal, _weights

from cyclegan import checkpoint as ckpt_io
from cyclegan.training import build_train_step, train

BOTH = {"loss.lambda_edge_promote": 1.0, "loss.lambda_lecam": 0.3, "loss.pool_size": 3}


@pytest.mark.parametrize("extra", [
    {},
    {"train.diffaug": "translation,cutout", "loss.edge_promote_direction": "both",
     "model.discriminator.name": "dual", "model.discriminator.n_layers": 2, "loss.gan": "hinge"},
], ids=["lsgan", "dual-hinge-diffaug-both"])
def test_resume_is_bitwise_identical_with_edge_promote_and_lecam(tiny_config, tmp_path, extra):
    n = 8
    common = {"train.epochs": 3, "train.seed": 3, **BOTH, **extra}
    straight = train(tiny_config(**common, **{"train.max_steps": 2 * n}), tmp_path / "a", progress=False)
    first = train(tiny_config(**common, **{"train.max_steps": n}), tmp_path / "b", progress=False)
    second = train(tiny_config(**common, **{"train.max_steps": 2 * n}), tmp_path / "b", resume=True,
                   progress=False)
    assert straight.step == second.step == 2 * n and first.step == n
    _assert_bitwise_equal(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    sa = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "a"))
    sb = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "b"))
    for name in ("D_A", "D_B"):
        assert sa["lecam"][name]["steps"] == sb["lecam"][name]["steps"] == 2 * n
        assert torch.equal(sa["lecam"][name]["real"], sb["lecam"][name]["real"])
    assert (tmp_path / "a" / "edge_smoothed" / "B" / "edge_smooth.json").is_file()


def test_edge_term_reaches_the_style_discriminator_only(tiny_config):
    cfg = tiny_config(**BOTH)
    step = build_train_step(cfg, torch.device("cpu"))
    real = {d: torch.rand(2, 3, 16, 16) * 2 - 1 for d in "AB"}
    fake = {d: torch.rand(2, 3, 16, 16) * 2 - 1 for d in "AB"}
    smooth = torch.rand(2, 3, 16, 16) * 2 - 1
    grads = {}
    for with_smooth in (False, True):
        step.opt_d.zero_grad(set_to_none=True)
        losses = {}
        pred = step.models.D_B(real["B"]), step.models.D_B(fake["B"])
        loss = step.small_data_terms("D_B", step.models.D_B, *pred, smooth if with_smooth else None, losses)
        loss.backward()
        grads[with_smooth] = [p.grad.clone() for p in step.models.D_B.parameters()]
        assert ("edge_promote_D_B" in losses) == with_smooth and "lecam_D_B" in losses
        assert all(p.grad is None for p in step.models.D_A.parameters())
        assert all(p.grad is None for p in step.models.G_A.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(grads[False], grads[True]))


def test_tiny_anime_style_run_trains_resumes_and_translates(tiny_dataroot, tmp_path):
    from click.testing import CliRunner

    from cyclegan.cli import main

    sets = ["model.generator.ngf=8", "model.discriminator.ndf=8", "model.discriminator.n_layers=2",
            "data.load_size=24", "data.crop_size=16", "data.num_workers=0", "train.tensorboard=false",
            "train.epochs=2", "optim.decay_epochs=1"]
    args = ["train", "--preset", "anime-style", "--dataroot", str(tiny_dataroot), "--out",
            str(tmp_path / "run"), "--quiet", *[arg for s in sets for arg in ("--set", s)]]
    r = CliRunner().invoke(main, [*args, "--max-steps", "4"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main,
                           ["train", "--resume", "--out", str(tmp_path / "run"), "--quiet", "--max-steps",
                            "8"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main,
                           ["translate", str(tiny_dataroot / "testA"), "--checkpoint", str(tmp_path / "run"),
                                  # fp32: auto would add an ONNX export, whose choice test_runtime.py pins
                                  "--out", str(tmp_path / "out"), "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
