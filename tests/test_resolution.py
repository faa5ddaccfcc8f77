"""Growing resolution (train.resolution_schedule): the schedule's text, the crops, and training that
applies it, resumes bitwise across a stage change and refuses what cannot apply."""

import json

import pytest
import torch
from click.testing import CliRunner

from cyclegan import checkpoint as ckpt_io
from cyclegan.cli import main
from cyclegan.config import NETWORK_NAMES, validate
from cyclegan.errors import ConfigError
from cyclegan.pool import ImagePool
from cyclegan.resolution import Stage, crop_batch, parse_schedule, random_crops, size_at, stage_changes
from cyclegan.training import train


def test_schedule_text_is_size_until_pairs_and_sizes_hold_until_their_step():
    stages = parse_schedule(" 64:2000, 128:4000 ")
    assert stages == (Stage(64, 2000), Stage(128, 4000))
    assert [size_at(stages, s) for s in (0, 1999, 2000, 3999, 4000, 10**9)] == [64, 64, 128, 128, None, None]
    assert [s for s in range(5000) if stage_changes(stages, s)] == [2000, 4000]
    assert parse_schedule("") == ()


@pytest.mark.parametrize("text, words", [
    ("64", "not SIZE:UNTIL_STEP"), ("64:x", "not SIZE:UNTIL_STEP"), ("-8:10", "not SIZE:UNTIL_STEP"),
    ("128:10,64:20", "must both grow"), ("64:20,128:20", "must both grow"), ("4:10", "size >= 8"),
    ("64:0", "step >= 1"),
])
def test_malformed_schedules_are_refused_naming_the_part(text, words):
    with pytest.raises(ValueError, match=words):
        parse_schedule(text)


def test_crops_are_windows_of_the_image_repeatable_per_step_and_distinct_per_domain():
    images = torch.arange(2 * 3 * 12 * 12, dtype=torch.int32).reshape(2, 3, 12, 12)
    crops = random_crops(images, 4, seed=1, step=7, stream=0)
    assert crops.shape == (2, 3, 4, 4)
    for img, crop in zip(images, crops):  # each crop is a contiguous 4x4 window of its own image
        top, left = divmod(int(crop[0, 0, 0]) - int(img[0, 0, 0]), 12)
        assert torch.equal(crop, img[:, top:top + 4, left:left + 4])
    assert torch.equal(crops, random_crops(images, 4, seed=1, step=7, stream=0))  # a resume redraws them
    others = [random_crops(images, 4, seed=1, step=8, stream=0), random_crops(images, 4, seed=1, step=7,
                                                                               stream=1)]
    assert not any(torch.equal(crops, o) for o in others)
    assert random_crops(images, 12, seed=1, step=7, stream=0) is images  # nothing to cut


def test_an_image_and_its_smoothed_copy_share_the_crop():
    b = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    batch = crop_batch({"A": b.clone(), "B": b.clone(), "B_smooth": b.clone()}, 8, seed=0, step=3)
    assert torch.equal(batch["B"], batch["B_smooth"]) and not torch.equal(batch["A"], batch["B"])


def test_pool_clear_forgets_stored_fakes():
    pool = ImagePool(size=2, seed=0)
    pool.query(torch.zeros(2, 3, 4, 4))
    pool.clear()
    assert pool.state_dict()["images"].numel() == 0
    assert pool.query(torch.ones(1, 3, 8, 8)).shape == (1, 3, 8, 8)  # a new size is stored, not mixed


def _schedule_config(tiny_config, **extra):
    # 32-px training crops, 16-px crops for the first 3 iterations; a pool that must be emptied at the
    # change (its 16-px fakes cannot be shown beside 32-px ones)
    return tiny_config(**{"data.load_size": 36, "data.crop_size": 32, "train.seed": 4, "loss.pool_size": 4,
                          "train.resolution_schedule": "16:3", "train.epochs": 2, **extra})


def _weights(run):
    ckpt = ckpt_io.resolve_checkpoint(run)
    return {name: ckpt_io.load_weights(ckpt, name) for name in NETWORK_NAMES}


def test_schedule_is_applied_and_logged(tiny_config, tmp_path):
    with_schedule = train(_schedule_config(tiny_config, **{"train.max_steps": 4}), tmp_path / "s",
                          progress=False)
    without = train(_schedule_config(tiny_config, **{"train.max_steps": 4, "train.resolution_schedule": ""}),
                    tmp_path / "n", progress=False)
    assert with_schedule.step == without.step == 4
    ws, wn = _weights(tmp_path / "s"), _weights(tmp_path / "n")
    assert any(not torch.equal(ws["G_A"][k], wn["G_A"][k]) for k in ws["G_A"])  # other crops, other weights
    events = [json.loads(line) for line in (tmp_path / "s" / "log.jsonl").read_text().splitlines()]
    assert [e for e in events if e.get("event") == "resolution"] == [
        {"event": "resolution", "step": 3, "crop_size": None}]
    # the stored pool holds full-size fakes only (emptied at the change)
    state = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "s"))
    assert state["pool_a"]["images"].shape[-1] == 32


def test_resume_across_a_stage_change_is_bitwise(tiny_config, tmp_path):
    straight = train(_schedule_config(tiny_config, **{"train.max_steps": 5}), tmp_path / "a", progress=False)
    first = train(_schedule_config(tiny_config, **{"train.max_steps": 2}), tmp_path / "b", progress=False)
    second = train(_schedule_config(tiny_config, **{"train.max_steps": 5}), tmp_path / "b", resume=True,
                   progress=False)
    assert (straight.step, first.step, second.step) == (5, 2, 5)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for name in wa:
        for key in wa[name]:
            assert torch.equal(wa[name][key], wb[name][key]), f"{name}.{key} differs"
    sa = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "a"))
    sb = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "b"))
    assert torch.equal(sa["pool_b"]["images"], sb["pool_b"]["images"])


@pytest.mark.parametrize("schedule, words", [
    ("32:3", "must be below data.crop_size"),
    ("18:3", "multiple of 4"),
    ("x", "not SIZE:UNTIL_STEP"),
])
def test_stages_that_cannot_apply_are_refused(tiny_config, schedule, words):
    with pytest.raises(ConfigError, match=words):
        validate(_schedule_config(tiny_config, **{"train.resolution_schedule": schedule}))


def test_cli_refuses_a_bad_schedule_in_one_line(tiny_dataroot, tmp_path):
    args = ["train", "--dataroot", str(tiny_dataroot), "--out", str(tmp_path / "run"), "--preset", "tiny",
            "--set", "train.resolution_schedule=256:10"]
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert len(lines) == 1 and "train.resolution_schedule" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
