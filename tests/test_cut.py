"""CUT / FastCUT, generator EMA and DiffAugment inside real training runs (tiny, CPU)."""

import json
import math

import pytest
import torch

from cyclegan import checkpoint as ckpt_io
from cyclegan.errors import CheckpointError
from cyclegan.training import train


def _cut_config(tiny_config, **extra):
    return tiny_config(**{"model.kind": "cut", "loss.nce_patches": 16, "loss.nce_mlp_dim": 8,
                          "loss.pool_size": 0, "train.epochs": 2, **extra})


@pytest.mark.parametrize("kind", ["cut", "fastcut"])
def test_one_sided_run_writes_g_d_and_heads_and_resumes_bitwise(tiny_config, tmp_path, kind):
    extra = {"model.kind": kind}
    if kind == "fastcut":
        extra.update({"loss.nce_idt": False, "loss.flip_equivariance": True, "loss.lambda_nce": 10.0})
    straight = train(_cut_config(tiny_config, **extra, **{"train.max_steps": 10}), tmp_path / "a",
                     progress=False)
    train(_cut_config(tiny_config, **extra, **{"train.max_steps": 5}), tmp_path / "b", progress=False)
    train(_cut_config(tiny_config, **extra, **{"train.max_steps": 10}), tmp_path / "b", resume=True,
          progress=False)
    assert straight.step == 10
    ckpt = ckpt_io.resolve_checkpoint(tmp_path / "a")
    assert sorted(p.name for p in ckpt.glob("*.safetensors")) == ["D_B.safetensors", "F.safetensors",
                                                                 "G_A.safetensors"]
    other = ckpt_io.resolve_checkpoint(tmp_path / "b")
    for name in ("G_A", "D_B", "F"):
        a, b = ckpt_io.load_weights(ckpt, name), ckpt_io.load_weights(other, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    log = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines() if "G_total" in x]
    assert {"G_gan", "nce", "D_B"} <= set(log[-1]) and (("nce_idt" in log[-1]) == (kind == "cut"))


def test_one_sided_checkpoint_translates_a2b_and_refuses_b2a(tiny_config, tmp_path):
    train(_cut_config(tiny_config, **{"train.max_steps": 3}), tmp_path / "r", progress=False)
    g, cfg = ckpt_io.load_generator(tmp_path / "r", direction="a2b")
    assert cfg.model.kind == "cut" and g(torch.rand(1, 3, 16, 16) * 2 - 1).shape == (1, 3, 16, 16)
    with pytest.raises(CheckpointError, match="one-sided and translates a2b only"):
        ckpt_io.load_generator(tmp_path / "r", direction="b2a")


def test_ema_is_saved_restored_and_preferred(tiny_config, tmp_path):
    cfg = tiny_config(**{"train.ema_decay": 0.9, "train.max_steps": 6, "train.epochs": 2})
    train(cfg, tmp_path / "a", progress=False)
    train(tiny_config(**{"train.ema_decay": 0.9, "train.max_steps": 3, "train.epochs": 2}), tmp_path / "b",
          progress=False)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    for run in ("a", "b"):
        names = {p.stem for p in ckpt_io.resolve_checkpoint(tmp_path / run).glob("*.safetensors")}
        assert {"G_A_ema", "G_B_ema"} <= names
    ema_a = ckpt_io.load_weights(ckpt_io.resolve_checkpoint(tmp_path / "a"), "G_A_ema")
    ema_b = ckpt_io.load_weights(ckpt_io.resolve_checkpoint(tmp_path / "b"), "G_A_ema")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)  # EMA weights resume exactly
    raw = ckpt_io.load_weights(ckpt_io.resolve_checkpoint(tmp_path / "a"), "G_A")
    assert any(not torch.equal(ema_a[k], raw[k]) for k in raw)
    g_ema, _ = ckpt_io.load_generator(tmp_path / "a")
    g_raw, _ = ckpt_io.load_generator(tmp_path / "a", ema=False)
    key = next(iter(raw))
    assert torch.equal(g_ema.state_dict()[key], ema_a[key]) and torch.equal(g_raw.state_dict()[key], raw[key])


def test_diffaug_run_trains_with_pool_and_relativistic_dual_head(tiny_config, tmp_path):
    cfg = tiny_config(**{"train.diffaug": "color,translation,cutout", "train.max_steps": 4,
                         "loss.gan": "relativistic", "model.discriminator.name": "dual",
                         "model.discriminator.n_layers": 2, "loss.pool_size": 2})
    result = train(cfg, tmp_path / "r", progress=False)
    assert result.step == 4 and all(math.isfinite(v) for v in result.last_log.values() if isinstance(v,
                                                                                                     float))


@pytest.mark.parametrize("preset", ["cut", "fastcut", "ghibli-small-data"])
def test_each_new_preset_trains_resumes_translates_and_evaluates(tiny_dataroot, tmp_path, preset):
    from PIL import Image

    from cyclegan.config import build_config
    from cyclegan.evaluate import evaluate_checkpoint
    from cyclegan.metrics.inception import RandomFeatureExtractor
    from cyclegan.translate import Translator

    def cfg(steps):
        return build_config(preset=preset, overrides={
            "data.dataroot": str(tiny_dataroot), "data.load_size": 20, "data.crop_size": 16,
            "data.num_workers": 0, "data.n_samples": 2, "model.generator.ngf": 4,
                                                      "model.generator.n_blocks": 2,
            "model.discriminator.ndf": 4, "model.discriminator.n_layers": 2, "train.epochs": 2,
            "train.max_steps": steps, "train.tensorboard": False, "train.log_every": 2,
            # PatchNCE keys only where a kind reads them, decay_epochs only with the linear policy (the
            # ghibli recipes' is constant): validation refuses a key the run would ignore
            **({"loss.nce_patches": 8, "loss.nce_mlp_dim": 8, "optim.decay_epochs": 1}
               if preset != "ghibli-small-data" else {})})

    run = tmp_path / "run"
    train(cfg(3), run, progress=False)
    assert train(cfg(5), run, resume=True, progress=False).step == 5

    photo = Image.new("RGB", (21, 13), (200, 120, 40))
    out = Translator.from_checkpoint(run, direction="a2b", device="cpu")(photo)
    assert out.size == (21, 13)

    result = evaluate_checkpoint(run, extractor=RandomFeatureExtractor(), device="cpu",
                                 out=tmp_path / "eval.json")
    assert "fid" in result["a2b"]
    assert ("b2a" in result) is (preset == "ghibli-small-data")  # CUT / FastCUT are one-sided


def test_translate_uses_ema_unless_told_not_to(tiny_config, tmp_path):
    import numpy as np

    from cyclegan.translate import Translator

    train(tiny_config(**{"train.ema_decay": 0.5, "train.max_steps": 4}), tmp_path / "r", progress=False)
    photo = (np.arange(16 * 16 * 3) % 251).astype(np.uint8).reshape(16, 16, 3)
    with_ema = Translator.from_checkpoint(tmp_path / "r", device="cpu")(photo)
    raw = Translator.from_checkpoint(tmp_path / "r", device="cpu", ema=False)(photo)
    g_ema, _ = ckpt_io.load_generator(tmp_path / "r")
    from cyclegan.image import to_model_range, to_uint8

    with torch.no_grad():
        direct = to_uint8(g_ema(to_model_range(torch.from_numpy(photo).permute(2, 0, 1)[None])))[0]
    assert not np.array_equal(with_ema, raw)
    assert np.abs(with_ema.astype(int) - direct.permute(1, 2, 0).numpy().astype(int)).max() <= 1


def test_evaluate_cli_on_a_one_sided_model(tiny_config, tiny_dataroot, tmp_path):
    from click.testing import CliRunner

    from cyclegan.cli import main

    train(_cut_config(tiny_config, **{"train.max_steps": 2}), tmp_path / "r", progress=False)
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "r"), "--no-inception",
                                    "--dataroot", str(tiny_dataroot), "--out", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert "a2b:" in res.output and "b2a" not in res.output


@pytest.mark.parametrize("kind", ["cut", "fastcut"])
def test_lecam_and_gradient_penalty_regularise_the_one_sided_discriminator(tiny_config, kind):
    # Both were accepted and ignored by the one-sided step before; they are D_B's own terms now.
    from cyclegan.training import build_train_step

    cfg = tiny_config(**{"model.kind": kind, "loss.gan": "wgangp", "loss.lambda_lecam": 0.5,
                         "model.generator.ngf": 4, "model.discriminator.ndf": 4, "loss.nce_patches": 8,
                         "loss.nce_mlp_dim": 8})
    step = build_train_step(cfg, torch.device("cpu"))
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    losses = step({"A": images, "B": images.flip(3)})
    assert {"gp_B", "lecam_D_B"} <= set(losses) and float(losses["gp_B"]) >= 0.0
    assert step.lecam["D_B"].steps == 1 and set(step.pools) == {"D_B"}
