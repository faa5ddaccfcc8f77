"""Config building: precedence, validation messages, presets, JSON round trip."""

import dataclasses
import json
import os
import re
import typing

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from cyclegan.cli import main
from cyclegan.config import (
    PRESET_DIR,
    Config,
    LossConfig,
    build_config,
    config_from_dict,
    dotted,
    list_presets,
    load_config_json,
    parse_set,
    replace,
    validate,
)
from cyclegan.errors import ConfigError, short_repr


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


def test_preset_names_cannot_leave_the_presets_folder(tmp_path):
    """`preset: ../x` in a --config file once read any YAML file by relative path."""
    outside = tmp_path / "evil.yaml"
    outside.write_text("train: {epochs: 7}\n")
    relative = os.path.relpath(outside.with_suffix(""), PRESET_DIR)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(f"preset: {relative}\n")
    for kwargs in ({"preset": relative}, {"config_file": cfg_file}):
        with pytest.raises(ConfigError, match="unknown preset"):
            build_config(**kwargs)


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


def test_ghibli_preset_matches_its_documented_recipe():
    cfg = build_config(preset="ghibli")
    g = cfg.model.generator
    assert (g.name, g.n_blocks, g.ngf, g.upsample) == ("resnet", 6, 64, "transpose")
    assert (cfg.loss.gan, cfg.loss.lambda_cyc, cfg.loss.lambda_id) == ("lsgan", 10.0, 5.0)
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.train.save_latest_every) == (1, 50, 100)
    assert (cfg.data.load_size, cfg.data.crop_size) == (286, 256)


def test_crop_size_must_suit_the_generator():
    with pytest.raises(ConfigError,
                       match=r"data.crop_size \(30\) must be a multiple of 4 for generator resnet"):
        build_config(sets=["data.crop_size=30", "data.load_size=30"])
    with pytest.raises(ConfigError, match="multiple of 128 for generator unet_128"):
        build_config(preset="tiny", sets=["model.generator.name=unet_128"])
    assert build_config(sets=["model.generator.name=unet_256"]).data.crop_size == 256



# ----------------------------------------------------------------------------------------------
# Every float is finite, whatever the source


def _runner() -> CliRunner:
    # Click 8.1 mixes stderr into stdout unless asked; 8.2+ always keeps them apart (and has no flag).
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def _one_error_line(result) -> str:
    """Non-zero exit, no traceback, exactly one ``error: ...`` line on stderr; returns it."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"crashed: {result.exception!r}"
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _float_keys(cls=Config, prefix: str = "") -> list[str]:
    """Every float-typed field of the config, found by walking the dataclasses (so a field added
    later is swept too)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += _float_keys(tp, f"{prefix}{f.name}.")
        elif tp is float or float in typing.get_args(tp):
            keys.append(prefix + f.name)
    return keys


FLOAT_KEYS = _float_keys()


def test_the_float_sweep_sees_the_known_float_fields():
    assert {"optim.lr", "loss.lambda_gan", "loss.lambda_cyc", "model.generator.dropout",
            "train.max_minutes", "data.val_fraction"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("raw", [".nan", ".inf", "-.inf", "nan", "inf", "-inf"])
def test_non_finite_floats_are_refused_naming_the_key(key, raw):
    # ".inf" / ".nan" are YAML floats; "inf" / "nan" are strings that float() would still accept.
    with pytest.raises(ConfigError) as e:
        build_config(sets=[f"{key}={raw}"])
    message = str(e.value)
    assert message.startswith(f"{key}: must be a finite number, got "), message
    assert "\n" not in message


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_validate_refuses_non_finite_floats_in_a_config_built_directly(key):
    # A Config made in code (not from a dict) still goes through validate's generic sweep.
    section_path, name = key.rsplit(".", 1)
    cfg = Config()

    def set_in(obj, path: list[str]):
        if not path:
            return dataclasses.replace(obj, **{name: float("nan")})
        child = getattr(obj, path[0])
        return dataclasses.replace(obj, **{path[0]: set_in(child, path[1:])})

    bad = set_in(cfg, section_path.split("."))
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}: must be a finite number, got nan$"):
        validate(bad)


def test_non_finite_values_never_reach_config_json():
    # json.dumps would write NaN / Infinity, which is not JSON.
    with pytest.raises(ValueError):
        dataclasses.replace(Config(),
                            loss=dataclasses.replace(Config().loss, lambda_cyc=float("nan"))).to_json()


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_cli_lr_non_finite_is_one_line_and_creates_nothing(tmp_path, value):
    out = tmp_path / "run"
    result = _runner().invoke(
        main, ["train", "--out", str(out), "--dataroot", str(tmp_path / "data"), "--lr", value],
    )
    line = _one_error_line(result)
    assert "optim.lr: must be a finite number" in line, line
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# Hostile YAML and huge values give short one-line errors


def _alias_bomb(levels: int = 8) -> str:
    """The "billion laughs" document: each level is a list of 10 aliases to the one before, so a
    loader that follows aliases builds 10**levels strings from a few hundred bytes."""
    # The levels hide under "description" (a key presets and config files may carry and the
    # config ignores); the last one sits under a real key, whose type error echoes it.
    lines = ['description:', '  - &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"  - &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]")
    lines.append(f"train: {{precision: *l{levels - 1}}}")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_before_building_anything(tmp_path):
    f = tmp_path / "bomb.yaml"
    f.write_text(_alias_bomb())
    assert f.stat().st_size < 600
    with pytest.raises(ConfigError) as e:
        build_config(config_file=f)
    message = str(e.value)
    assert str(f) in message and "alias" in message, message
    assert len(message) < 300 and "\n" not in message


def test_any_yaml_anchor_or_alias_in_a_config_file_is_refused(tmp_path):
    f = tmp_path / "anchors.yaml"
    f.write_text("model:\n  generator: &g {ngf: 8}\n  discriminator: {ndf: 8}\n")
    with pytest.raises(ConfigError, match=r"anchors.yaml: .*anchors and aliases .*not allowed.*line 2"):
        build_config(config_file=f)


def test_no_shipped_preset_uses_yaml_anchors():
    # The YAML events, not the text: a comment may say "Loshchilov & Hutter".
    for path in PRESET_DIR.glob("*.yaml"):
        events = list(yaml.parse(path.read_text()))
        assert not any(isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None) for e in events), path


def test_an_oversized_config_file_is_refused_without_parsing(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text("train: {epochs: 3}\n" + "#" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml: .*bytes.*at most"):
        build_config(config_file=f)


def test_a_deeply_nested_config_file_is_one_line_error(tmp_path):
    f = tmp_path / "deep.yaml"
    f.write_text("train: {precision: " + "[" * 20000 + "]" * 20000 + "}\n")
    with pytest.raises(ConfigError, match="deep.yaml: ") as e:
        build_config(config_file=f)
    assert len(str(e.value)) < 300


HUGE = "x" * 1_000_000


@pytest.mark.parametrize(
    "sets",
    [
        [f"train.precision={HUGE}"],  # not an allowed choice
        [f"model.generator.ngf={HUGE}"],  # not an integer
        [f"optim.lr={HUGE}"],  # not a number
        [f"train.compile={HUGE}"],  # not a boolean
        [f"train.init_nets={HUGE}"],  # not a list of networks
        [f"train.diffaug={HUGE}"],  # not a DiffAugment policy
        [f"{HUGE}.x=1", f"{HUGE}.x.y=1"],  # not a section
        [HUGE],  # no "="
        [f"train.epochs=-{'1' * 5000}"],  # an integer beyond Python's str() limit of 4300 digits
        [f"train.epochs=-{'1' * 4000}"],  # below the limit: still far too long to echo
        ["train.precision=" + "[" * 5000 + "]" * 5000],  # nested past the recursion limit
        ["train.precision=[" + ",".join(["x" * 100] * 1000) + "]"],
        ["train.precision=[&a [x, x, x, x, x, x, x, x], *a, *a, *a, *a, *a, *a, *a, *a]"],
    ],
    ids=["choice", "int", "float", "bool", "init_nets", "diffaug", "not-a-section", "no-equals",
         "int-over-str-limit", "long-int", "deep-nesting", "long-list", "alias"],
)
def test_huge_values_give_a_short_one_line_error(sets):
    with pytest.raises(ConfigError) as e:
        build_config(sets=sets)
    message = str(e.value)
    assert len(message) < 300 and "\n" not in message, message[:500]


def test_a_huge_unknown_key_is_cut_in_the_message():
    # This message lists the section's valid keys, so it is long by design; the key itself is cut.
    with pytest.raises(ConfigError) as short:
        build_config(sets=["train.nope=1"])
    with pytest.raises(ConfigError) as huge:
        build_config(sets=[f"train.{HUGE}=1"])
    assert len(str(huge.value)) <= len(str(short.value)) + 80


def test_unknown_keys_of_mixed_types_are_named():
    # YAML allows integer keys; sorting them with strings must not crash.
    with pytest.raises(ConfigError, match="unknown config key train.1"):
        config_from_dict({"train": {1: 2, "zzz": 3}})


def test_short_repr_caps_any_value():
    assert short_repr("abc") == "'abc'"
    assert len(short_repr("x" * 10_000)) <= 80 and "..." in short_repr("x" * 10_000)
    assert len(short_repr([["y" * 100] * 100] * 100)) <= 80
    assert len(short_repr(-(10**5000))) <= 80  # str() of such an int raises ValueError


# ----------------------------------------------------------------------------------------------
# A checkpoint whose config describes networks too large to build


@pytest.fixture
def giant_checkpoint(tmp_path):
    """A checkpoint folder whose config.json asks for a ResNet generator of ngf 131072 (190 TB of
    weights); the weights files do not matter, the config is refused first."""
    tree = Config().to_dict()
    tree["model"]["generator"]["ngf"] = 131072
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(tree))
    return ckpt


@pytest.mark.parametrize("command", ["translate", "export", "evaluate"])
def test_a_checkpoint_too_large_to_build_is_one_line_error(tmp_path, giant_checkpoint, command):
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16)).save(image)
    for split in ("testA", "testB"):
        (tmp_path / "data" / split).mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(tmp_path / "data" / split / "x.png")
    args = {
        "translate": ["translate", str(image), "--checkpoint", str(giant_checkpoint), "--out",
                      str(tmp_path / "out")],
        "export": ["export", "--checkpoint", str(giant_checkpoint), "--format", "safetensors", "--out",
                   str(tmp_path / "out")],
        "evaluate": ["evaluate", "--checkpoint", str(giant_checkpoint), "--dataroot", str(tmp_path / "data"),
                     "--no-inception", "--out", str(tmp_path / "out" / "eval.json")],
    }[command]
    line = _one_error_line(_runner().invoke(main, args))
    assert "config.json" in line and "model.generator.ngf 131072" in line and "parameters" in line, line
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# --crop-size / --load-size: the flags official CycleGAN users type first


def test_train_crop_size_and_load_size_flags_set_the_config(tmp_path, monkeypatch):
    seen = {}

    def fake_train(cfg, out, **kwargs):  # stop before any data or training work
        seen["cfg"] = cfg
        raise ConfigError("stopped by the test")

    monkeypatch.setattr("cyclegan.training.train", fake_train)
    result = _runner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--dataroot", str(tmp_path),
                                     "--crop-size", "128", "--load-size", "143"])
    assert "stopped by the test" in _one_error_line(result)
    assert (seen["cfg"].data.crop_size, seen["cfg"].data.load_size) == (128, 143)


def test_train_crop_size_flag_is_validated(tmp_path):
    result = _runner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--dataroot", str(tmp_path),
                                     "--crop-size", "128", "--load-size", "100"])
    assert result.exit_code == 1
    assert "data.load_size (100) must be >= data.crop_size (128)" in _one_error_line(result)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------
# Small style sets: edge-promoting loss and LeCam


def test_edge_promote_and_lecam_are_off_by_default_and_settable():
    loss = build_config().loss
    assert (loss.lambda_edge_promote, loss.lambda_lecam, loss.edge_smooth_dir) == (0.0, 0.0, None)
    assert (loss.edge_promote_direction, loss.lecam_decay) == ("b", 0.99)
    cfg = build_config(sets=["loss.lambda_edge_promote=1", "loss.edge_promote_direction=both",
                             "loss.lambda_lecam=0.3", "loss.lecam_decay=0.9"])
    assert (cfg.loss.lambda_edge_promote, cfg.loss.edge_promote_direction) == (1.0, "both")
    assert (cfg.loss.lambda_lecam, cfg.loss.lecam_decay) == (0.3, 0.9)


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["loss.lambda_edge_promote=-1"], "loss.lambda_edge_promote: must be >= 0.0"),
        (["loss.lambda_lecam=-0.1"], "loss.lambda_lecam: must be >= 0.0"),
        (["loss.edge_promote_direction=ab"],
         "loss.edge_promote_direction: 'ab' is not allowed; choose from a, b, both"),
        (["model.kind=cut", "loss.edge_promote_direction=a"], "model.kind cut has one discriminator"),
        (["loss.edge_smooth_dir=smooth", "loss.edge_promote_direction=both"], "one folder holds one domain"),
        (["loss.lecam_decay=1"], "loss.lecam_decay: must be in [0, 1)"),
    ],
)
def test_edge_promote_and_lecam_settings_are_validated(sets, fragment):
    with pytest.raises(ConfigError) as e:
        build_config(sets=sets)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_an_empty_edge_smooth_dir_is_refused():
    # --set and YAML turn "" into None (unset); only a config built directly can hold it.
    cfg = dataclasses.replace(Config(), loss=dataclasses.replace(LossConfig(), edge_smooth_dir=""))
    with pytest.raises(ConfigError, match="loss.edge_smooth_dir: empty path"):
        validate(cfg)


# ----------------------------------------------------------------------------------------------
# Options a kind or network does not read are refused, naming the ones that read them


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model.kind": "cut", "loss.lambda_cyc": 3.0},
     "loss.lambda_cyc: used by model kinds cyclegan; not by cut"),
    ({"model.kind": "cyclegan", "loss.nce_patches": 8},
     "loss.nce_patches: used by model kinds cut, fastcut; not by cyclegan"),
    ({"model.kind": "fastcut", "loss.adaptive_weighting": "uncertainty"},
     "loss.adaptive_weighting: used by model kinds cyclegan; not by fastcut"),
    ({"model.kind": "cut", "distill.real": "teacher"},
     "distill.real: used by model kinds distill; not by cut"),
    ({"model.generator.name": "unet_128", "model.generator.n_blocks": 3},
     "model.generator.n_blocks: used by generators attention, mobile_resnet, resnet; not by unet_128"),
    ({"model.generator.vq_codebook_size": 8},
     "model.generator.vq_codebook_size: used by generators attention; not by resnet"),
    ({"model.discriminator.name": "dual", "model.discriminator.spectral_norm": True},
     "model.discriminator.spectral_norm: used by discriminators patch, pixel; not by dual"),
    ({"loss.lambda_gp": 5.0},
     "loss.lambda_gp: takes effect only with loss.gan wgangp or loss.gradient_penalty"),
    ({"loss.lecam_decay": 0.5}, "loss.lecam_decay: takes effect only with loss.lambda_lecam > 0"),
    ({"loss.color_pool": 2},
     "loss.color_pool: takes effect only with loss.lambda_color or loss.lambda_tone > 0"),
    ({"optim.t_0": 5}, "optim.t_0: takes effect only with optim.lr_policy cosine_restarts"),
    ({"train.compile_mode": "max-autotune"}, "train.compile_mode: takes effect only with train.compile true"),
    ({"model.generator.name": "unet_128", "train.grad_checkpointing": True},
     "train.grad_checkpointing: generator unet_128 does not support it"),
])
def test_an_option_the_run_would_ignore_is_refused_naming_its_readers(overrides, message):
    with pytest.raises(ConfigError) as info:
        build_config(overrides={"data.crop_size": 128, "data.load_size": 128, **overrides})
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("overrides", [
    {"model.kind": "cut", "loss.lambda_lecam": 0.15},  # LeCam and the gradient penalty: every kind's D
    {"model.kind": "cut", "loss.gan": "wgangp"},
    {"model.kind": "distill", "distill.teacher": "t", "loss.gradient_penalty": True},
    {"model.kind": "cut", "loss.lambda_cyc": 0.0, "loss.lambda_id": 0.0},  # turning off a term CUT lacks
])
def test_discriminator_regularisers_and_off_values_are_accepted_by_every_kind(overrides):
    assert build_config(overrides=overrides).model.kind == overrides["model.kind"]


def test_a_presets_values_stay_when_one_part_is_swapped_but_asked_ones_do_not():
    # tiny sets n_blocks 2, which animeganv2 does not read: the recipe's value stays, a flag's is refused.
    assert build_config(preset="tiny",
                        overrides={"model.generator.name": "animeganv2"}).model.generator.n_blocks == 2
    with pytest.raises(ConfigError, match="model.generator.n_blocks: used by generators"):
        build_config(preset="tiny",
                     overrides={"model.generator.name": "animeganv2", "model.generator.n_blocks": 3})


def test_a_saved_config_with_an_unread_key_loads_and_resumes(tmp_path):
    tree = Config().to_dict()
    tree["loss"]["nce_patches"] = 8  # read by CUT only; accepted and ignored before it was refused
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(tree))
    assert load_config_json(saved).loss.nce_patches == 8
    assert build_config(base=tree, overrides={"train.epochs": 3}).loss.nce_patches == 8
    with pytest.raises(ConfigError, match="loss.nce_patches"):
        build_config(base=tree, overrides={"loss.nce_patches": 16})


def test_cli_refuses_an_ignored_option_in_one_line_and_creates_nothing(tmp_path):
    result = _runner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--dataroot", str(tmp_path),
                                     "--model", "cut", "--set", "loss.lambda_cyc=3"])
    assert result.exit_code == 1
    assert "loss.lambda_cyc: used by model kinds cyclegan; not by cut" in _one_error_line(result)
    assert not (tmp_path / "run").exists()


def test_dotted_flattens_nested_settings_into_set_keys():
    nested = {"loss": {"lambda_id": 5.0, "gan": "lsgan"}, "preset": None, "model": {"generator": {"ngf": 8}}}
    assert dotted(nested) == {"loss.lambda_id": 5.0, "loss.gan": "lsgan", "preset": None,
                              "model.generator.ngf": 8}
    assert dotted(build_config().to_dict())["train.precision"] == "fp32"


def test_colon_separated_digits_stay_text_not_base_60_numbers():
    # YAML 1.1 reads 64:20 as 64 * 60 + 20; the resolution schedule (and any reader) means the text
    cfg = build_config(sets=["train.resolution_schedule=64:20", "data.crop_size=128", "data.load_size=143"])
    assert cfg.train.resolution_schedule == "64:20"
    assert build_config(sets=["train.max_steps=1_000"]).train.max_steps == 1000  # other numbers as before
