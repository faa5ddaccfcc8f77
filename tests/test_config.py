"""Config building: precedence, validation messages, presets, JSON round trip."""

import dataclasses
import json

import pytest

from cyclegan.config import Config, build_config, config_from_dict, list_presets, parse_set, replace
from cyclegan.errors import ConfigError


def test_defaults_are_the_paper():
    cfg = build_config()
    assert cfg.model.generator.name == "resnet" and cfg.model.generator.n_blocks == 9
    assert cfg.model.discriminator.n_layers == 3
    assert (cfg.loss.gan, cfg.loss.lambda_cyc, cfg.loss.lambda_id, cfg.loss.pool_size) == ("lsgan", 10, 5, 50)
    assert (cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2) == (2e-4, 0.5, 0.999)
    assert (cfg.data.load_size, cfg.data.crop_size, cfg.train.epochs) == (286, 256, 200)


def test_precedence_preset_then_file_then_flags_then_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {epochs: 7, batch_size: 2}\nloss: {lambda_cyc: 3}\n")
    cfg = build_config(
        preset="ghibli",
        config_file=f,
        overrides={"train.epochs": 9, "train.seed": None},
        sets=["loss.lambda_cyc=4.5", "model.generator.upsample=resize"],
    )
    assert cfg.model.generator.n_blocks == 6  # preset
    assert cfg.train.batch_size == 2  # file
    assert cfg.train.epochs == 9  # flag beats file
    assert cfg.train.seed == 0  # None flag ignored
    assert cfg.loss.lambda_cyc == 4.5  # --set last
    assert cfg.model.generator.upsample == "resize"
    assert cfg.preset == "ghibli"


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["model.generator.name=nope"], "model.generator.name: 'nope' is not allowed; choose from "),
        (["train.precision=fp8"], "train.precision"),
        (["train.nope=1"], "unknown config key train.nope"),
        (["train.epochs=abc"], "train.epochs: expected an integer"),
        (["train.batch_size=0"], "train.batch_size: must be >= 1"),
        (["loss.gan=wasserstein"], "loss.gan"),
        (["optim.lr_policy=sometimes"], "optim.lr_policy"),
        (["data.load_size=100", "data.crop_size=128"], "data.load_size (100) must be >= data.crop_size"),
        (["model.generator.dropout=1.5"], "model.generator.dropout"),
        (["train=3"], "train: expected a mapping"),
        (["novalue"], "expected section.key=value"),
    ],
)
def test_invalid_values_name_the_key(sets, fragment):
    with pytest.raises(ConfigError) as e:
        build_config(sets=sets)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; choose from .*ghibli"):
        build_config(preset="nope")


def test_bad_yaml_file_is_one_line_error(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        build_config(config_file=f)
    with pytest.raises(ConfigError, match="not found"):
        build_config(config_file=tmp_path / "missing.yaml")


def test_json_round_trip_rebuilds_identical_config():
    cfg = build_config(preset="ghibli", sets=["train.max_steps=5"])
    again = config_from_dict(json.loads(cfg.to_json()))
    assert again == cfg and isinstance(again, Config)


def test_config_is_frozen_and_replace_validates():
    cfg = build_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]
    assert replace(cfg, **{"train.epochs": 3}).train.epochs == 3
    with pytest.raises(ConfigError):
        replace(cfg, **{"train.epochs": 0})


def test_parse_set_uses_yaml_scalars():
    assert parse_set("optim.lr=0.5") == ("optim.lr", 0.5)
    # PyYAML reads "1e-4" as a string; the typed field still gets a float.
    assert build_config(sets=["optim.lr=1e-4"]).optim.lr == 1e-4
    assert parse_set("train.compile=true") == ("train.compile", True)
    assert parse_set("data.dataroot=null") == ("data.dataroot", None)


def test_every_shipped_preset_builds_and_describes_itself():
    presets = list_presets()
    assert {"cyclegan", "ghibli", "tiny"} <= set(presets)
    for name, info in presets.items():
        assert info["description"], name
        assert build_config(preset=name).preset == name


def test_ghibli_preset_matches_seed_000():
    cfg = build_config(preset="ghibli")
    g = cfg.model.generator
    assert (g.name, g.n_blocks, g.ngf, g.upsample) == ("resnet", 6, 64, "transpose")
    assert (cfg.loss.gan, cfg.loss.lambda_cyc, cfg.loss.lambda_id) == ("lsgan", 10.0, 5.0)
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.train.save_latest_every) == (1, 50, 100)
    assert (cfg.data.load_size, cfg.data.crop_size) == (286, 256)


def test_crop_size_must_suit_the_generator():
    with pytest.raises(ConfigError, match=r"data.crop_size \(30\) must be a multiple of 4 for generator resnet"):
        build_config(sets=["data.crop_size=30", "data.load_size=30"])
    with pytest.raises(ConfigError, match="multiple of 128 for generator unet_128"):
        build_config(preset="tiny", sets=["model.generator.name=unet_128"])
    assert build_config(sets=["model.generator.name=unet_256"]).data.crop_size == 256

