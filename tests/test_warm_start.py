"""train.init_from from any model source: a run or checkpoint (every network by name, as before), or a
model file (an export, an imported model, pretrained:NAME) whose generators start G_A / G_B, refused
with one line where it cannot be fine-tuned or does not fit the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cyclegan import checkpoint as ckpt_io
from cyclegan.cli import main
from cyclegan.errors import CheckpointError, ConfigError
from cyclegan.export import export_generator
from cyclegan.hub import push
from cyclegan.importers import import_weights
from cyclegan.importers.onnx_foreign import OnnxImportOptions
from cyclegan.networks.foreign import OnnxConvention
from cyclegan.sources import pretrained_model_dir
from cyclegan.training import build_train_step, train
from cyclegan.training.models import check_init_from

CPU = torch.device("cpu")
FIXTURES = Path(__file__).parent / "fixtures"
ANIME_TF = FIXTURES / "tf" / "animeganv2" / "Hayao-8.ckpt"  # AnimeGANv2 at ngf 8, the authors' TF-1 format
OPSET9 = FIXTURES / "onnx" / "upsample_opset9.onnx"
ANIME_TF_RUN = {"model.generator.name": "animeganv2_tf", "model.generator.ngf": 8}


@pytest.fixture
def source_run(tiny_config, tmp_path) -> Path:
    """A tiny run of two iterations: what the fine-tuning tests start from."""
    return train(tiny_config(**{"train.max_steps": 2, "train.seed": 5}), tmp_path / "source",
                 progress=False).run_dir


def _export(run: Path, out: Path, direction: str = "a2b") -> Path:
    export_generator(run, fmt="safetensors", out=out, direction=direction)
    return out


def _state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in ckpt_io.unwrap(net).state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_export_starts_the_generator_it_holds(tiny_config, source_run, tmp_path):
    exported = _export(source_run, tmp_path / "g_a")
    cfg = tiny_config(**{"train.init_from": str(exported), "train.init_nets": "G_A"})
    models = build_train_step(cfg, CPU).models
    assert _same(_state(models.G_A), ckpt_io.load_weights(exported, "generator"))
    fresh = build_train_step(tiny_config(), CPU).models
    for name in ("G_B", "D_A", "D_B"):  # the others start as a new run's do
        assert _same(_state(getattr(models, name)), _state(getattr(fresh, name))), name
    # a B->A export starts G_B; asking it for G_A (or the A->B export for G_B) is one line
    b2a = _export(source_run, tmp_path / "g_b", direction="b2a")
    cfg = tiny_config(**{"train.init_from": str(b2a), "train.init_nets": "G_B"})
    models = build_train_step(cfg, CPU).models
    assert _same(_state(models.G_B), ckpt_io.load_weights(b2a, "generator"))
    with pytest.raises(ConfigError, match=r"^train.init_nets: G_B starts from a b2a generator, but .* holds "
                                          r"only its a2b generator; name G_A instead$"):
        check_init_from(tiny_config(**{"train.init_from": str(exported), "train.init_nets": "G_B"}))


def test_a_run_fine_tuned_from_an_export_trains_after_its_warmup(tiny_config, source_run, tmp_path):
    exported = _export(source_run, tmp_path / "g_a")
    cfg = tiny_config(**{"train.init_from": str(exported), "train.init_nets": "G_A",
                         "train.d_warmup_steps": 2, "train.max_steps": 2})
    warm = train(cfg, tmp_path / "warm", progress=False)
    ckpt = ckpt_io.resolve_checkpoint(warm.run_dir)
    source = ckpt_io.load_weights(exported, "generator")
    assert _same(ckpt_io.load_weights(ckpt, "G_A"), source)  # two iterations of warm-up: G_A as given
    more = train(tiny_config(**{"train.init_from": str(exported), "train.init_nets": "G_A",
                                "train.d_warmup_steps": 2, "train.max_steps": 3}),
                 tmp_path / "warm", resume=True, progress=False)
    assert more.step == 3
    assert not _same(ckpt_io.load_weights(ckpt_io.resolve_checkpoint(more.run_dir), "G_A"), source)


def test_an_imported_animeganv2_from_the_pretrained_cache_is_fine_tuned(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    folder = pretrained_model_dir("animeganv2_hayao_64")
    import_weights("animeganv2-tf", [ANIME_TF], folder)
    spec = "pretrained:animeganv2_hayao_64"
    cfg = tiny_config(**ANIME_TF_RUN, **{"train.init_from": spec, "train.init_nets": "G_A"})
    models = build_train_step(cfg, CPU).models
    assert _same(_state(models.G_A), ckpt_io.load_weights(folder, "generator"))
    # the same folder given as a path
    assert check_init_from(tiny_config(**ANIME_TF_RUN, **{"train.init_from": str(folder),
                                                          "train.init_nets": "G_A"})).generator_files
    # the run's generator must be the source's
    with pytest.raises(ConfigError) as e:
        check_init_from(tiny_config(**{"model.generator.ngf": 4, "train.init_from": spec,
                                       "train.init_nets": "G_A"}))
    assert str(e.value) == (f"train.init_from: {spec} holds generator animeganv2_tf ngf 8; set "
                            "model.generator.name animeganv2_tf and model.generator.ngf 8")
    with pytest.raises(ConfigError, match=r"; set model.generator.ngf 8$"):
        check_init_from(tiny_config(**{**ANIME_TF_RUN, "model.generator.ngf": 16, "train.init_from": spec,
                                       "train.init_nets": "G_A"}))
    # a one-direction model has no B->A generator; a model file has no discriminators
    with pytest.raises(ConfigError, match="^train.init_nets: G_B starts from a b2a generator"):
        check_init_from(tiny_config(**ANIME_TF_RUN, **{"train.init_from": spec,
                                                       "train.init_nets": "G_A,G_B"}))
    with pytest.raises(ConfigError, match=r"^train.init_nets: .* is a model file, which holds generators and "
                                          r"no D_A; name G_A and/or G_B"):
        check_init_from(tiny_config(**ANIME_TF_RUN, **{"train.init_from": spec,
                                                       "train.init_nets": "G_A,D_A"}))


def test_both_generators_of_a_two_direction_hub_model(tiny_config, source_run, tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")  # the hub extra, part of dev
    commit = "0123456789abcdef0123456789abcdef01234567"
    # a Hub cache holding me/tiny at one commit, as `hf download` leaves it (cyclegan push's layout)
    repo = tmp_path / "hf" / "models--me--tiny"
    push(source_run, "me/tiny", out=repo / "snapshots" / commit, dry_run=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = build_train_step(tiny_config(**{"train.init_from": "hf:me/tiny", "train.init_nets": "G_A,G_B"}),
                              CPU).models
    source = ckpt_io.resolve_checkpoint(source_run)
    assert _same(_state(models.G_A), ckpt_io.load_weights(source, "G_A"))
    assert _same(_state(models.G_B), ckpt_io.load_weights(source, "G_B"))


def test_a_resnet_option_that_differs_is_named(tiny_config, source_run, tmp_path):
    exported = _export(source_run, tmp_path / "g_a")
    with pytest.raises(ConfigError) as e:
        check_init_from(tiny_config(**{"model.generator.n_blocks": 3, "train.init_from": str(exported),
                                       "train.init_nets": "G_A"}))
    assert str(e.value) == (f"train.init_from: {exported} holds generator resnet ngf 8 (n_blocks 2); set "
                            "model.generator.n_blocks 2")


def test_models_that_cannot_be_fine_tuned_are_refused(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    kept = pretrained_model_dir("animeganv3_hayao_36")  # an import onnx kept for ONNX Runtime only
    options = OnnxImportOptions(convention=OnnxConvention(layout="nchw", value_range="0,1",
                                                          channels="bgr", multiple=2), convert=False)
    import_weights("onnx", [OPSET9], kept, options=options)
    script = tmp_path / "g.pt"  # a TorchScript file (what cyclegan export --format torchscript writes)
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 1)), str(script))
    for spec, why in (("pretrained:animeganv3_hayao_36", "is an ONNX graph imported with cyclegan import"),
                      (str(OPSET9), "is an ONNX model"), (str(script), "is a TorchScript file")):
        with pytest.raises(ConfigError, match=f"^train.init_from: .* {why}.*cannot be fine-tuned"):
            check_init_from(tiny_config(**{"train.init_from": spec, "train.init_nets": "G_A"}))


def test_a_checkpoint_without_a_named_network_is_refused_before_training(tiny_config, tmp_path):
    cfg = tiny_config(**{"train.max_steps": 1})
    step = build_train_step(cfg, CPU)
    ckpt = ckpt_io.save_checkpoint(tmp_path / "gens", config=cfg,
                                   networks={"G_A": step.models.G_A, "G_B": step.models.G_B})
    with pytest.raises(ConfigError, match=r"^train.init_nets: .* holds no D_A, D_B \(it holds G_A, G_B\)$"):
        check_init_from(tiny_config(**{"train.init_from": str(ckpt)}))
    with pytest.raises(CheckpointError, match="no such run or checkpoint"):
        check_init_from(tiny_config(**{"train.init_from": str(tmp_path / "nowhere")}))


def _cli_train(dataroot: Path, out: Path, *args: str):
    return CliRunner().invoke(main, ["train", "--dataroot", str(dataroot), "--preset", "tiny", "--quiet",
                                     "--out", str(out), "--set", "data.load_size=24", "--set",
                                     "data.crop_size=16", "--set", "train.tensorboard=false", *args])


def test_fine_tuning_on_the_command_line(tiny_dataroot, source_run, tmp_path):
    exported = _export(source_run, tmp_path / "g_a")
    ok = _cli_train(tiny_dataroot, tmp_path / "tuned", "--init-from", str(exported), "--init-nets", "G_A",
                    "--set", "train.d_warmup_steps=2", "--max-steps", "3")
    assert ok.exit_code == 0, ok.output
    assert ckpt_io.checkpoint_step(tmp_path / "tuned" / "checkpoints" / "latest") == 3
    # refused in one line, in flags, before the run folder is touched; --overwrite clears nothing
    bad = _cli_train(tiny_dataroot, tmp_path / "tuned", "--init-from", str(exported), "--init-nets", "D_A",
                     "--overwrite")
    assert bad.exit_code == 1 and bad.output.startswith("error: --init-nets: ")
    assert bad.output.count("\n") == 1 and "Traceback" not in bad.output
    assert ckpt_io.checkpoint_step(tmp_path / "tuned" / "checkpoints" / "latest") == 3
    wrong = _cli_train(tiny_dataroot, tmp_path / "other", "--init-from", str(exported), "--init-nets", "G_A",
                       "--generator", "animeganv2_tf")
    assert wrong.exit_code == 1 and wrong.output.startswith("error: --init-from: ")
    assert "set model.generator.name resnet" in wrong.output and not (tmp_path / "other").exists()


def test_a_checkpoint_of_another_architecture_is_refused_before_the_run_folder_is_touched(
        tiny_config, tiny_dataroot, source_run, tmp_path):
    kept = train(tiny_config(**{"train.max_steps": 1}), tmp_path / "kept", progress=False).run_dir
    before = sorted(p.relative_to(kept) for p in kept.rglob("*"))
    bad = _cli_train(tiny_dataroot, kept, "--init-from", str(source_run), "--overwrite",
                     "--set", "model.discriminator.ndf=4")
    assert bad.exit_code == 1 and "D_A.safetensors: does not match the configured network" in bad.output
    assert "model.discriminator of this run differs" in bad.output
    assert sorted(p.relative_to(kept) for p in kept.rglob("*")) == before  # --overwrite cleared nothing
