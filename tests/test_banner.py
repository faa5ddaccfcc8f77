"""What a run says before it trains: the banner (device, precision, recipe and its differences,
images, iterations), the estimate measured on the first iterations with what the budget buys and
what would help, ``--precision auto`` (resolved once and recorded, so a resume is bitwise), the
iteration budget of a resumed invocation, and "nothing to do" in plain words. Content, not timing:
no assertion here depends on how fast this machine is."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cyclegan import checkpoint as ckpt_io
from cyclegan import resolution
from cyclegan.config import build_config
from cyclegan.training import banner, resolve_run_config, stop_after, train
from cyclegan.training.banner import RunPlan, describe_run, estimate_lines, plan_run, resolve_precision

CPU = torch.device("cpu")


@pytest.fixture
def quick_estimate(monkeypatch):
    """The estimate after 1 untimed and 2 timed iterations, whatever their duration."""
    monkeypatch.setattr(banner, "WARMUP_STEPS", 1)
    monkeypatch.setattr(banner, "MEASURE_STEPS", 2)
    monkeypatch.setattr(banner, "MEASURE_SECONDS", 0.0)


def _records(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _plan(**changes) -> RunPlan:
    fields = {"kind": "cyclegan", "device": "cpu (2 threads)", "precision": "fp32",
              "precision_reason": "as configured",
              "recipe": "preset cyclegan", "differences": (), "images_a": 1067, "images_b": 1334,
              "steps_per_epoch": 1334, "epochs": 200, "start_step": 0, "stop_step": 266_800,
              "max_minutes": 0.0}
    return RunPlan(**{**fields, **changes})


def test_banner_and_estimate_of_a_tiny_run(tiny_config, tmp_path, monkeypatch, quick_estimate):
    monkeypatch.setattr(banner, "native_bf16", lambda device: False)
    lines = []
    result = train(tiny_config(**{"train.max_steps": 5, "train.precision": "auto"}), tmp_path / "r",
                   progress=False, echo=lines.append)
    assert result.status == "max_steps" and result.step == 5
    threads = torch.get_num_threads()
    assert lines[0] == (f"run: cyclegan on cpu ({threads} threads), precision fp32 (auto: no native bf16 on "
                        "this cpu)")
    # the conftest's changes to the tiny preset, each with the preset's value
    assert lines[1].startswith("recipe: preset tiny, with ")
    assert "data.crop_size 16 (recipe: 32)" in lines[1] and "train.log_every 2 (recipe: " in lines[1]
    assert lines[2] == "images: 12 A, 12 B; 12 iterations per epoch, 4 epochs = 48 iterations"
    assert lines[3] == "this invocation: 5 iterations (--max-steps), to iteration 5"
    estimate = [line for line in lines if line.startswith("estimate: ")]
    assert len(estimate) == 1 and "s/iteration measured" in estimate[
        0] and "for the 5 iterations" in estimate[0]
    assert "to the end of the run)" in estimate[0]  # --max-steps stops it early: the whole run's time too
    records = _records(tmp_path / "r")
    start = records[0]
    assert (start["precision"], start["precision_requested"], start["stop_step"]) == ("fp32", "auto", 5)
    timed = [r for r in records if r.get("event") == "estimate"]
    assert len(timed) == 1 and timed[0]["seconds_per_step"] > 0 and timed[0]["step"] == 3


def test_estimate_over_the_budget_says_what_it_buys_and_what_would_help(tiny_config, monkeypatch):
    monkeypatch.setattr(banner, "native_bf16", lambda device: True)
    cfg = build_config(preset="cyclegan", overrides={"data.dataroot": "x", "train.precision": "fp32"})
    plan = _plan(max_minutes=3.0)
    lines = estimate_lines(plan, 2.0, cfg=cfg, device=CPU)
    assert lines[0].startswith("estimate: 2 s/iteration measured, 6.2 days for the 266,800 iterations")
    assert lines[1] == ("budget: --max-minutes 3 buys about 90 iterations (0.067 epochs, 0.03% of the run); "
                        "--resume continues from there")
    tips = "\n".join(lines[3:])
    assert lines[2].startswith("what would help on this machine (nothing is changed for you)")
    assert estimate_lines(plan, 200.0, cfg=cfg, device=CPU)[1] == (
        "budget: --max-minutes 3 is shorter than one iteration here; the iteration under way finishes and is "
        "saved")
    for tip in ("--crop-size 128 (about 4.0x fewer pixels", "--precision bf16", "--preset fast",
                "n_blocks=6", "a CUDA GPU"):
        assert tip in tips, tip
    # fast already, bf16 not native, small crops: only what is left to try
    monkeypatch.setattr(banner, "native_bf16", lambda device: False)
    fast = build_config(preset="fast",
                        overrides={"data.dataroot": "x", "data.load_size": 72, "data.crop_size": 64,
                                                  "model.generator.n_blocks": 6})
    tips = "\n".join(estimate_lines(plan, 2.0, cfg=fast, device=CPU)[3:])
    assert "--crop-size" not in tips and "--precision bf16" not in tips and "--preset fast" not in tips
    assert "a CUDA GPU" in tips


def test_estimate_within_budget_and_a_day_gives_no_advice():
    cfg = build_config(preset="tiny", overrides={"data.dataroot": "x"})
    assert len(estimate_lines(_plan(stop_step=1000), 0.5, cfg=cfg, device=CPU)) == 1
    assert len(estimate_lines(_plan(stop_step=1000, max_minutes=60), 0.5, cfg=cfg, device=CPU)) == 1
    # no budget, but more than a day
    lines = estimate_lines(_plan(stop_step=100_000), 1.0, cfg=cfg, device=CPU)
    assert lines[1] == "this is more than a day: 27.8 h at this speed"


def test_banner_of_a_resumed_invocation_with_budgets():
    lines = describe_run(_plan(start_step=435, stop_step=455, max_minutes=3.0,
                               differences=tuple(f"k{i} 1 (recipe: 0)" for i in range(10))))
    assert lines[1] == ("recipe: preset cyclegan, with " + "; ".join(f"k{i} 1 (recipe: 0)" for i in range(8))
                        + "; and 2 more (config.json has every setting)")
    assert lines[3] == ("this invocation: from iteration 435, 20 iterations (--max-steps), to iteration 455, "
                        "or 3 min of training (--max-minutes) if that comes first")
    assert describe_run(_plan())[1] == "recipe: preset cyclegan, unchanged"


def test_plan_caps_the_stop_at_the_end_of_the_run(tiny_config):
    cfg = tiny_config(**{"train.max_steps": 500})
    plan = plan_run(cfg, device=CPU, precision="fp32", precision_reason="as configured", images_a=12,
                    images_b=12, steps_per_epoch=12, start_step=40)
    assert (plan.total_steps, plan.stop_step, plan.steps_to_run) == (48, 48, 8)


def test_precision_auto_is_bf16_only_where_native(monkeypatch):
    monkeypatch.setattr(banner, "native_bf16", lambda device: True)
    assert resolve_precision("auto", CPU) == ("bf16", "auto: native bf16 on this cpu")
    monkeypatch.setattr(banner, "native_bf16", lambda device: False)
    assert resolve_precision("auto", CPU) == ("fp32", "auto: no native bf16 on this cpu")
    assert resolve_precision("bf16", CPU) == ("bf16", "as configured")


def test_precision_auto_is_recorded_resolved_and_resume_is_bitwise(tiny_config, tmp_path, monkeypatch):
    # bf16 chosen (as on a CPU with AVX512-BF16; emulated here, the same arithmetic): config.json keeps
    # "bf16", so the resume runs bf16 too and matches an uninterrupted run bit for bit.
    monkeypatch.setattr(banner, "native_bf16", lambda device: True)
    common = {"train.epochs": 2, "train.seed": 5, "train.precision": "auto"}
    straight = train(tiny_config(**common, **{"train.max_steps": 8}), tmp_path / "a", progress=False,
                     echo=lambda _m: None)
    assert straight.step == 8
    train(tiny_config(**common, **{"train.max_steps": 4}), tmp_path / "b", progress=False,
          echo=lambda _m: None)
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["train"]["precision"] == "bf16"
    # what the CLI does for --resume --max-steps 4: the saved config, 4 iterations past the checkpoint
    resumed = resolve_run_config(tmp_path / "b", resume=True,
                                 overrides={"train.max_steps": stop_after(tmp_path / "b", 4, resume=True)})
    assert resumed.train.precision == "bf16" and resumed.train.max_steps == 8
    assert train(resumed, tmp_path / "b", resume=True, progress=False, echo=lambda _m: None).step == 8
    for name in ("G_A", "G_B", "D_A", "D_B"):
        a = load_file(str(ckpt_io.resolve_checkpoint(tmp_path / "a") / f"{name}.safetensors"))
        b = load_file(str(ckpt_io.resolve_checkpoint(tmp_path / "b") / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_new_run_defaults_to_auto_and_a_resume_keeps_what_was_recorded(tiny_dataroot, tmp_path):
    data = {"data.dataroot": str(tiny_dataroot)}
    assert resolve_run_config(tmp_path / "new", resume=False, overrides=data).train.precision == "auto"
    # a flag (or a preset) that names a precision wins over the default
    bf16 = {**data, "train.precision": "bf16"}
    assert resolve_run_config(tmp_path / "new", resume=False, overrides=bf16).train.precision == "bf16"
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text(build_config(preset="tiny", overrides=data).to_json())  # fp32, as before
    assert resolve_run_config(run, resume=True).train.precision == "fp32"


def test_resumed_at_the_end_there_is_nothing_to_do(tiny_config, tmp_path):
    run = tmp_path / "r"
    train(tiny_config(**{"train.epochs": 1}), run, progress=False, echo=lambda _m: None)
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    lines = []
    result = train(tiny_config(**{"train.epochs": 1}), run, resume=True, progress=False, echo=lines.append)
    assert (result.status, result.step) == ("nothing_to_do", 12)
    assert lines[-1] == ("nothing to do: the run has already trained all its 1 epochs (12 iterations); "
                         "to train on, resume with a larger --epochs")
    # not one byte written
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    # a library caller's train.max_steps is the iteration to stop at: reached already, nothing to do
    other = tmp_path / "s"
    train(tiny_config(**{"train.max_steps": 3}), other, progress=False, echo=lambda _m: None)
    lines.clear()
    result = train(tiny_config(**{"train.max_steps": 3}), other, resume=True, progress=False,
                   echo=lines.append)
    assert (result.status, result.step) == ("nothing_to_do", 3)
    assert lines[-1] == ("nothing to do: the run is already at iteration 3 and train.max_steps stops it at "
                         "3; --max-steps N on the command line trains N more")


def test_the_estimate_comes_once_even_when_the_invocation_stops_first():
    reports = []
    timer = banner.StepTimer(CPU, reports.append, warmup=2, steps=3, seconds=0.0)
    timer.step()  # warm-up only: the budget ran out
    timer.finish()
    assert len(reports) == 1 and reports[0] > 0
    timer.step()
    timer.finish()
    assert len(reports) == 1  # once per invocation
    reports.clear()
    timer = banner.StepTimer(CPU, reports.append, warmup=1, steps=2, seconds=0.0)
    for _ in range(5):
        timer.step()
    timer.finish()
    assert len(reports) == 1  # given after 1 + 2 iterations, not again at the end


def test_a_resolution_schedule_is_estimated_by_pixels_per_stage():
    # 1 s/iteration measured on 64-px crops: 100 iterations at 64, 100 at 128 (4 s each), then 256 (16 s)
    plan = _plan(stages=(resolution.Stage(64, 100), resolution.Stage(128, 200)), crop_size=256,
                 stop_step=300, steps_per_epoch=300, epochs=1)
    assert banner.scheduled_seconds(plan, 1.0, 0, 300) == 100 * 1 + 100 * 4 + 100 * 16
    assert banner.steps_within(plan, 1.0, 100 + 400 + 32) == 202
    resumed = _plan(stages=plan.stages, crop_size=256, start_step=150, stop_step=300, steps_per_epoch=300,
                    epochs=1)  # measured on 128-px crops now
    assert banner.scheduled_seconds(resumed, 4.0, 150, 300) == 50 * 4 + 100 * 16
    lines = estimate_lines(_plan(stages=plan.stages, crop_size=256, stop_step=300, steps_per_epoch=300,
                                 epochs=1, max_minutes=532 / 60), 1.0, cfg=build_config(), device=CPU)
    assert "buys about 202 iterations" in "\n".join(lines) and "64-px crops" in "\n".join(lines)


def test_banner_announces_the_warm_up_and_the_schedule_and_times_after_the_warm_up():
    plan = _plan(d_warmup_steps=50, stages=(resolution.Stage(64, 100),), crop_size=256)
    text = "\n".join(describe_run(plan))
    assert "discriminator warm-up: iterations 0 to 50" in text
    assert "growing resolution: 64 px to iteration 100, then 256 px" in text
    assert "warm-up" not in "\n".join(describe_run(_plan(d_warmup_steps=50, start_step=60, stop_step=70)))
    reported = []
    timer = banner.StepTimer(CPU, reported.append, warmup=1, steps=1, seconds=0.0, extra_warmup=3)
    for _ in range(4):
        timer.step()
    assert not reported  # iterations 1-4 untimed: the warm-up's 3 and the usual 1
    timer.step()
    assert len(reported) == 1
