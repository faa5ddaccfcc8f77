"""Training-loop hardening (issue 12): a full disk, diverging losses, damaged checkpoints, SIGTERM,
resume from any complete checkpoint, lean epoch checkpoints, messages that start on their own line."""

from __future__ import annotations

import errno
import json

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from cyclegan import checkpoint as ckpt_io
from cyclegan.cli import main
from cyclegan.errors import CheckpointError, CycleGANError, followups
from cyclegan.training import JsonlLog, TrainStep, build_train_step, train


def _runner() -> CliRunner:
    try:  # Click 8.1 mixes stderr into stdout unless asked; 8.2+ keeps them apart
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def _records(run) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------ 1. disk full


def _disk_full_everywhere(monkeypatch, checkpoint_error: BaseException) -> None:
    """Checkpoint writes fail with ``checkpoint_error``; the stop record's log write fails with ENOSPC."""

    def full(*args, **kwargs):
        raise checkpoint_error

    monkeypatch.setattr(ckpt_io.torch, "save", full)
    real_write = JsonlLog.write

    def write(self, record):
        if record.get("event") == "stop":
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real_write(self, record)

    monkeypatch.setattr(JsonlLog, "write", write)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 8896 vs 8790\nframe #0 ..."),
], ids=["oserror", "torch-save"])
def test_disk_full_reports_the_checkpoint_error_and_the_log_error_after_it(tiny_config, tmp_path, monkeypatch,
                                                                          error):
    _disk_full_everywhere(monkeypatch, error)
    run = tmp_path / "r"
    with pytest.raises(CheckpointError) as e:
        train(tiny_config(**{"train.max_steps": 4, "train.save_latest_every": 2}), run, progress=False)
    message = str(e.value)
    assert "checkpoints/latest: could not write the checkpoint" in message
    assert "no space left on device" in message and "enforce fail" not in message and "\n" not in message
    (extra,) = followups(e.value)  # the stop record's failure comes after it, as one line
    assert "log.jsonl" in extra and "no space left on device" in extra and "\n" not in extra


def test_disk_full_on_the_command_line_is_one_error_line_then_one_warning(tiny_config, tiny_dataroot, tmp_path,
                                                                          monkeypatch):
    _disk_full_everywhere(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    result = _runner().invoke(main, [
        "train", "--dataroot", str(tiny_dataroot), "--out", str(tmp_path / "r"), "--preset", "tiny", "--quiet",
        "--max-steps", "4", "--set", "train.save_latest_every=2", "--set", "train.tensorboard=false",
        "--set", "data.load_size=24", "--set", "data.crop_size=16"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and "no space left on device" in lines[0] and "latest" in lines[0]
    assert lines[1].startswith("warning: ") and "log.jsonl" in lines[1]


# ------------------------------------------------------------------------------------- 2. divergence


def _diverge_from(monkeypatch, first_bad_call: int) -> None:
    """From iteration ``first_bad_call`` on, G_A's weights and the cycle_A loss are NaN (a blown-up step)."""
    original = TrainStep.__call__
    calls = {"n": 0}

    def step(self, batch):
        losses = original(self, batch)
        calls["n"] += 1
        if calls["n"] >= first_bad_call:
            with torch.no_grad():
                for p in self.models.G_A.parameters():
                    p.fill_(float("nan"))
            losses["cycle_A"] = torch.tensor(float("nan"))
        return losses

    monkeypatch.setattr(TrainStep, "__call__", step)


@pytest.mark.parametrize(("sets", "window", "saved_step"), [
    # caught before the save of latest at step 6, between log steps (4 and 8)
    ({"train.log_every": 4, "train.save_latest_every": 2}, "steps 5-6", 4),
    # caught at the log step 4, before any checkpoint was written
    ({"train.log_every": 2, "train.save_latest_every": 100}, "steps 3-4", None),
], ids=["before-save", "at-log-step"])
def test_non_finite_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(tiny_config, tmp_path, monkeypatch,
                                                                          sets, window, saved_step):
    run = tmp_path / "r"
    _diverge_from(monkeypatch, 5 if saved_step else 3)
    with pytest.raises(CycleGANError) as e:
        train(tiny_config(**{"train.max_steps": 12, **sets}), run, progress=False)
    message = str(e.value)
    assert "cycle_A" in message and window in message and "\n" not in message
    latest = run / "checkpoints" / "latest"
    if saved_step is None:
        assert not latest.exists() and "no checkpoint" in message
    else:
        assert json.loads((latest / "meta.json").read_text())["step"] == saved_step
        weights = safetensors.torch.load_file(str(latest / "G_A.safetensors"))
        assert all(torch.isfinite(t).all() for t in weights.values())
        assert f"checkpoints/latest holds step {saved_step}" in message
    stop = _records(run)[-1]
    assert stop["event"] == "stop" and stop["status"] == "diverged"


def test_a_checkpoint_with_non_finite_weights_is_never_written(tiny_config, tmp_path):
    step = build_train_step(tiny_config(), torch.device("cpu"))
    dest = ckpt_io.save_checkpoint(tmp_path / "latest", config=step.cfg, networks=step.models.networks())
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    with torch.no_grad():
        next(step.models.D_B.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(CheckpointError, match=r"D_B: .* holds non-finite values") as e:
        ckpt_io.save_checkpoint(dest, config=step.cfg, networks=step.models.networks())
    assert "\n" not in str(e.value)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
