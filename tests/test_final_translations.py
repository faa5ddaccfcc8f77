"""What a time-budgeted run leaves besides its checkpoint: sample grids every few minutes
(train.sample_every_minutes) and the translations of held-aside images at its end
(train.final_translations), made by the same Translator as `cyclegan translate`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cyclegan import Translator
from cyclegan.cli import main
from cyclegan.errors import ConfigError
from cyclegan.training import train


def _records(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_final_translations_are_the_testA_images_through_the_translator(tiny_config, tiny_dataroot, tmp_path):
    result = train(tiny_config(**{"train.max_steps": 2, "train.final_translations": 3}), tmp_path / "run",
                   progress=False)
    assert result.status == "max_steps"
    written = sorted((tmp_path / "run" / "final").iterdir())
    first_three = sorted((tiny_dataroot / "testA").iterdir())[:3]
    assert [p.name for p in written] == [f"{i:03d}_{p.stem}.png" for i, p in enumerate(first_three)]
    translator = Translator.from_checkpoint(tmp_path / "run", direction="a2b", device="cpu")
    for out, src in zip(written, first_three):
        expected = np.asarray(translator(Image.open(src).convert("RGB")))
        assert np.array_equal(np.asarray(Image.open(out)), expected)  # full size, same path as translate
    (record,) = [r for r in _records(tmp_path / "run") if r.get("event") == "final_translations"]
    assert record["files"] == [f"final/{p.name}" for p in written]


def test_final_translations_come_from_the_validation_split_without_a_test_folder(tiny_config, tiny_dataroot,
                                                                                  tmp_path):
    folders = {"data.dataroot": None, "data.data_a": str(tiny_dataroot / "trainA"),
               "data.data_b": str(tiny_dataroot / "trainB")}
    train(tiny_config(**folders, **{"train.max_steps": 1, "train.final_translations": 2,
                                    "data.val_fraction": 0.2}), tmp_path / "run", progress=False)
    assert len(list((tmp_path / "run" / "final").iterdir())) == 2
    with pytest.raises(ConfigError, match="train.final_translations: the run has no held-aside images"):
        train(tiny_config(**folders, **{"train.max_steps": 1, "train.final_translations": 2}),
              tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()  # refused before the run folder was made


def test_sample_grids_every_few_minutes(tiny_config, tmp_path):
    # a period shorter than any iteration: one grid after each
    train(tiny_config(**{"train.max_steps": 3, "train.sample_every_minutes": 1e-9}), tmp_path / "run",
          progress=False)
    names = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert {"step_0000001.png", "step_0000002.png", "step_0000003.png"} <= set(names)
    train(tiny_config(**{"train.max_steps": 3}), tmp_path / "off", progress=False)
    assert not any(p.name == "step_0000001.png" for p in (tmp_path / "off" / "samples").iterdir())



def test_laptop_preset_cli_run_grows_samples_and_ends_with_final_translations(tiny_dataroot, tmp_path):
    # the preset as a user runs it, on tiny images: a smaller network, crops and schedule, 5 iterations
    args = ["train", "--data-a", str(tiny_dataroot / "trainA"), "--data-b", str(tiny_dataroot / "trainB"),
            "--preset", "laptop", "--load-size", "36", "--crop-size", "32", "--max-steps", "5",
            "--out", str(tmp_path / "run"), "--quiet",
            "--set", "train.resolution_schedule=16:3", "--set", "model.generator.ngf=4",
            "--set", "model.generator.n_blocks=1", "--set", "model.discriminator.ndf=4",
            "--set", "model.discriminator.n_layers=2",
            "--set", "train.sample_every_minutes=1e-9", "--set", "data.num_workers=0",
            "--set", "train.tensorboard=false", "--set", "data.val_fraction=0.34"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    # a third of the 12 photos held aside, of which the preset translates 4
    assert len(list((run / "final").glob("*.png"))) == 4
    assert (run / "samples" / "step_0000005.png").is_file()
    records = _records(run)
    assert [r["crop_size"] for r in records if r.get("event") == "resolution"] == [None]
    assert json.loads((run / "config.json").read_text())["loss"]["lambda_tone"] == 5.0
