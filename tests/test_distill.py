"""Distillation (model.kind distill): a student learns a tiny trained teacher; tiny shapes, CPU only."""

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from cyclegan import checkpoint as ckpt_io
from cyclegan.cli import main
from cyclegan.config import build_config
from cyclegan.data import find_images
from cyclegan.errors import CheckpointError, ConfigError, DataError
from cyclegan.evaluate import evaluate_reference, load_test_images
from cyclegan.export import export_generator
from cyclegan.image import to_model_range
from cyclegan.metrics.generate import translate_uint8
from cyclegan.metrics.reconstruction import cycle_l1
from cyclegan.networks import build_generator, distill_channels
from cyclegan.training import build_train_step, distill_run_config, teacher_fingerprint, train

# A tiny student: 2 depthwise-separable blocks at ngf 4.
STUDENT = {"model.generator.n_blocks": 2, "data.n_samples": 2, "train.tensorboard": False,
           "train.log_every": 4}


def _student(name: str) -> dict:
    """STUDENT's settings for ``name``: animeganv2 has a fixed layer table, so no n_blocks (refused)."""
    return STUDENT if name != "animeganv2" else {k: v for k, v in STUDENT.items()
                                                 if k != "model.generator.n_blocks"}


@pytest.fixture(scope="module")
def teacher(tiny_dataroot, tmp_path_factory):
    """A tiny CycleGAN (ResNet-2 at ngf 8, PatchGAN at ndf 8) trained 6 steps on 16 px crops."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    cfg = build_config(preset="tiny", overrides={"data.dataroot": str(tiny_dataroot), "data.load_size": 20,
                                                 "data.crop_size": 16, "train.max_steps": 6,
                                                 "train.tensorboard": False, "train.log_every": 2})
    train(cfg, run, progress=False)
    return run


def _config(teacher, out, *, student_ngf=4, **overrides):
    return distill_run_config(out, teacher=teacher, student_ngf=student_ngf,
                              overrides={**STUDENT, **overrides})


def _weights(run, names):
    ckpt = ckpt_io.resolve_checkpoint(run)
    return {name: ckpt_io.load_weights(ckpt, name) for name in names}


def test_distillation_reduces_student_teacher_l1(teacher, tmp_path, tiny_dataroot):
    # The adversarial term off, so what is measured is the distillation terms' work alone.
    cfg = _config(teacher, tmp_path / "s", **{"train.max_steps": 36, "train.epochs": 10, "optim.lr": 1e-3,
                                              "optim.lr_policy": "constant", "loss.lambda_gan": 0.0})
    assert cfg.model.kind == "distill" and cfg.model.generator.name == "mobile_resnet"
    torch.manual_seed(cfg.train.seed)  # the run builds its student right after this seed
    fresh = build_generator(cfg.model.generator, init=cfg.model.init, init_gain=cfg.model.init_gain).eval()
    assert train(cfg, tmp_path / "s", progress=False).step == 36

    teacher_net, _ = ckpt_io.load_generator(teacher)
    student, saved = ckpt_io.load_generator(tmp_path / "s")
    assert saved.model.kind == "distill"
    images, _ = load_test_images(find_images(tiny_dataroot / "testA"), size=16)
    target = translate_uint8(teacher_net, images)
    before = float(cycle_l1(target, translate_uint8(fresh, images)).mean())
    after = float(cycle_l1(target, translate_uint8(student, images)).mean())
    assert after < 0.85 * before, (before, after)
    log = [json.loads(x) for x in (tmp_path / "s" / "log.jsonl").read_text().splitlines()
           if "distill_l1" in x]
    assert {"G_gan", "distill_l1", "feature", "G_total", "D_B"} <= set(log[-1])
    assert log[-1]["distill_l1"] < log[0]["distill_l1"] and log[-1]["feature"] < log[0]["feature"]


@pytest.mark.parametrize("student", ["mobile_resnet", "animeganv2"])
def test_resume_is_bitwise_identical(teacher, tmp_path, student):
    # The feature loss (projections P and their Adam moments), the image pool and EMA all resume.
    extra = {"train.epochs": 3, "train.seed": 5, "train.ema_decay": 0.9, "loss.pool_size": 3}
    ngf = 4 if student == "mobile_resnet" else 8
    kw = {"student": student, "student_ngf": ngf, "overrides": {**_student(student), **extra}}
    straight = distill_run_config(tmp_path / "a", teacher=teacher, **{**kw, "overrides": {
        **kw["overrides"], "train.max_steps": 16}})
    assert train(straight, tmp_path / "a", progress=False).step == 16
    first = distill_run_config(tmp_path / "b", teacher=teacher, **{**kw, "overrides": {
        **kw["overrides"], "train.max_steps": 8}})
    train(first, tmp_path / "b", progress=False)
    resumed = distill_run_config(tmp_path / "b", resume=True, overrides={"train.max_steps": 16})
    assert train(resumed, tmp_path / "b", resume=True, progress=False).step == 16

    names = ("G_A", "D_B", "P", "G_A_ema")
    a, b = _weights(tmp_path / "a", names), _weights(tmp_path / "b", names)
    for name in names:
        assert a[name].keys() == b[name].keys()
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    sa = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "a"))
    sb = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "b"))
    for key in ("exp_avg", "exp_avg_sq"):
        for i in sa["opt_g"]["state"]:
            assert torch.equal(sa["opt_g"]["state"][i][key], sb["opt_g"]["state"][i][key])


@pytest.mark.parametrize(("student", "ngf", "channels"), [("mobile_resnet", 4, [16, 16, 16, 16]),
                                                         ("animeganv2", 8, [16, 32, 32, 16])])
def test_feature_projections_map_each_student_map_to_the_teachers(teacher, tmp_path, student, ngf, channels):
    cfg = distill_run_config(tmp_path / "s", teacher=teacher, student=student, student_ngf=ngf,
                             overrides=_student(student))
    step = build_train_step(cfg, torch.device("cpu"))
    teacher_channels = distill_channels(step.teacher)
    assert teacher_channels == [32] * 4  # the tiny teacher: ResNet at ngf 8 -> 4 ngf at the bottleneck
    assert distill_channels(step.models.G_A) == channels
    assert [tuple(p.weight.shape) for p in step.models.P.maps] == [(32, c, 1, 1) for c in channels]
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    t_out, t_feats = step.teacher_tap(x)
    s_out, s_feats = step.student_tap(x)
    for projected, target in zip(step.models.P(s_feats), t_feats):
        assert projected.shape == target.shape == (2, 32, 4, 4)
    assert s_out.shape == t_out.shape == (2, 3, 16, 16)


def test_new_run_inherits_the_teachers_discriminator(teacher, tmp_path):
    step = build_train_step(_config(teacher, tmp_path / "s"), torch.device("cpu"))
    d_b = ckpt_io.load_weights(ckpt_io.resolve_checkpoint(teacher), "D_B")
    assert all(torch.equal(step.models.D_B.state_dict()[k], v) for k, v in d_b.items())
    fresh = build_train_step(_config(teacher, tmp_path / "s", **{"distill.inherit_discriminator": False}),
                             torch.device("cpu"))
    assert any(not torch.equal(fresh.models.D_B.state_dict()[k], v) for k, v in d_b.items())


def test_the_student_is_an_ordinary_one_sided_checkpoint(teacher, tmp_path):
    cfg = _config(teacher, tmp_path / "s", **{"train.max_steps": 2, "distill.lambda_feature": 0.0})
    train(cfg, tmp_path / "s", progress=False)
    ckpt = ckpt_io.resolve_checkpoint(tmp_path / "s")
    # no P without the feature loss
    assert sorted(p.stem for p in ckpt.glob("*.safetensors")) == ["D_B", "G_A"]
    g, saved = ckpt_io.load_generator(tmp_path / "s")
    assert saved.model.generator.name == "mobile_resnet" and g(torch.zeros(1, 3, 16, 16)).shape == (1, 3, 16,
                                                                                                    16)
    with pytest.raises(CheckpointError, match="one-sided"):
        ckpt_io.load_generator(tmp_path / "s", direction="b2a")


def test_without_b_images_the_teachers_outputs_are_the_real_ones(teacher, tmp_path, tiny_dataroot):
    cfg = distill_run_config(tmp_path / "s", teacher=teacher, data_a=tiny_dataroot / "trainA", student_ngf=4,
                             overrides={**STUDENT, "train.max_steps": 2})
    assert cfg.distill.real == "teacher"
    step = build_train_step(cfg, torch.device("cpu"))
    seen = []
    step.gan = dataclasses.replace(step.gan, discriminator=lambda real, fake: seen.append(real) or
                                   (real - fake).abs().mean())
    batch = {"A": torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8),
             "B": torch.zeros(1, 3, 16, 16, dtype=torch.uint8)}
    with torch.no_grad():  # what D_B makes of the teacher's translation of A, before its step
        expected = step.models.D_B(step.teacher(to_model_range(batch["A"])))
    step(batch)
    assert torch.equal(seen[0].detach(), expected)  # its real images: the teacher's outputs, not batch B


def test_an_exported_teacher_teaches_a_torchscript_one_outputs_only(teacher, tmp_path):
    export_generator(teacher, fmt="safetensors", out=tmp_path / "st")
    export_generator(teacher, fmt="torchscript", out=tmp_path / "g.pt")
    cfg = distill_run_config(tmp_path / "a", teacher=tmp_path / "st", student_ngf=4,
                             overrides={**STUDENT, "train.max_steps": 2})
    assert train(cfg, tmp_path / "a", progress=False).step == 2  # features and all; no D to inherit
    cfg = distill_run_config(tmp_path / "b", teacher=tmp_path / "g.pt", student_ngf=4,
                             overrides={**STUDENT, "train.max_steps": 2})
    with pytest.raises(ConfigError, match="exposes no distillation features"):
        train(cfg, tmp_path / "b", progress=False)
    cfg = build_config(base=cfg.to_dict(), overrides={"distill.lambda_feature": 0.0})
    assert train(cfg, tmp_path / "b", progress=False).step == 2  # the refused run left nothing behind


def test_a_changed_teacher_refuses_the_resume(teacher, tmp_path):
    cfg = _config(teacher, tmp_path / "s", **{"train.max_steps": 2})
    assert cfg.distill.teacher_sha256 == teacher_fingerprint(ckpt_io.load_generator(teacher)[0])
    train(cfg, tmp_path / "s", progress=False)
    changed = build_config(base=cfg.to_dict(),
                           overrides={"distill.teacher_sha256": "0" * 64, "train.max_steps": 4})
    with pytest.raises(CheckpointError, match="weights changed since this run started"):
        train(changed, tmp_path / "s", resume=True, progress=False)


def test_config_choices_and_refusals(teacher, tmp_path, tiny_dataroot):
    # Only --data-a: the teacher's outputs are D_B's real images; the teacher's data otherwise.
    only_a = distill_run_config(tmp_path / "s", teacher=teacher, data_a=tiny_dataroot / "trainA")
    assert only_a.distill.real == "teacher" and only_a.data.dataroot is None
    assert only_a.data.data_b == only_a.data.data_a
    default = distill_run_config(tmp_path / "s", teacher=teacher)
    assert default.distill.real == "b" and default.data.dataroot == str(tiny_dataroot)
    # teacher's D, student ngf 16
    assert default.model.discriminator.ndf == 8 and default.model.generator.ngf == 16
    b2a = distill_run_config(tmp_path / "s", teacher=teacher, direction="b2a")
    assert b2a.data.data_a.endswith("trainB") and b2a.data.data_b.endswith("trainA")
    with pytest.raises(DataError, match="--data-b needs --data-a"):
        distill_run_config(tmp_path / "s", teacher=teacher, data_b=tiny_dataroot / "trainB")
    with pytest.raises(ConfigError, match="needs a teacher"):
        build_config(overrides={"model.kind": "distill"})
    with pytest.raises(ConfigError, match="exposes no intermediate features"):
        distill_run_config(tmp_path / "s", teacher=teacher, student="attention")
    assert distill_run_config(tmp_path / "s", teacher=teacher, student="unet_128",
                              overrides={"distill.lambda_feature": 0.0, "data.crop_size": 128,
                                         "data.load_size": 128}).model.generator.name == "unet_128"
    with pytest.raises(ConfigError, match="distill.real"):
        distill_run_config(tmp_path / "s", teacher=teacher, sets=["distill.real=c"])


def test_cli_distill_translate_and_evaluate_reference(teacher, tmp_path, tiny_dataroot):
    out = tmp_path / "student"
    runner = CliRunner()
    result = runner.invoke(main, ["distill", "--teacher", str(teacher), "--out", str(out), "--student",
                                  "animeganv2", "--student-ngf", "4", "--max-steps", "2", "--quiet",
                                  "--set", "data.n_samples=2", "--set", "train.tensorboard=false"])
    assert result.exit_code == 0, result.output
    assert "max_steps: step 2" in result.stderr
    result = runner.invoke(main,
                           ["translate", str(tiny_dataroot / "testA"), "--checkpoint", str(out), "--out",
                                  str(tmp_path / "translated"), "--precision", "fp32", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "translated").iterdir())) == 4
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(out), "--reference", str(teacher)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "eval_reference.json").read_text())
    assert record["a2b"]["n"] == 4 and record["a2b"]["reference_direction"] == "a2b"
    assert 0 < record["a2b"]["psnr"] < 100 and -1 <= record["a2b"]["ssim"] <= 1 and record["a2b"]["l1"] > 0
    assert "b2a" not in record  # the student is one-sided
    assert "a2b vs reference a2b: psnr" in result.stdout


def test_evaluate_reference_of_a_model_against_itself(teacher, tmp_path):
    record = evaluate_reference(teacher, teacher, out=tmp_path / "r.json")
    for direction in ("a2b", "b2a"):  # two-sided on both sides: both directions compared
        assert record[direction]["identical"] == record[direction]["n"] == 4
        assert record[direction]["psnr"] is None and record[direction]["l1"] == 0.0
    assert json.loads((tmp_path / "r.json").read_text())["a2b"]["ssim"] == pytest.approx(1.0)
