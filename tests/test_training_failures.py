"""How training survives failures: a full disk, diverging losses, damaged checkpoints, SIGTERM,
resume from any complete checkpoint, lean epoch checkpoints, messages that start on their own line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from cyclegan import checkpoint as ckpt_io
from cyclegan.cli import main
from cyclegan.errors import CheckpointError, CycleGANError, followups
from cyclegan.training import JsonlLog, TrainStep, build_train_step, train, training_state


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


def test_disk_full_on_the_command_line_is_one_error_line_then_one_warning(tiny_config, tiny_dataroot,
                                                                          tmp_path, monkeypatch):
    _disk_full_everywhere(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    result = _runner().invoke(main, [
        "train", "--dataroot", str(tiny_dataroot), "--out", str(tmp_path / "r"), "--preset", "tiny",
                                     "--quiet",
        "--max-steps", "4", "--set", "train.save_latest_every=2", "--set", "train.tensorboard=false",
        "--set", "data.load_size=24", "--set", "data.crop_size=16"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    banner_end = next(i for i, x in enumerate(lines) if x.startswith("this invocation: "))  # the start banner
    lines = lines[banner_end + 1:]
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and "no space left on device" in lines[0] and "latest" in lines[0]
    assert lines[1].startswith("warning: ") and "log.jsonl" in lines[1]


# ------------------------------------------------------------------------------------- 2. divergence


def _diverge_from(monkeypatch, first_bad_call: int) -> None:
    """From iteration ``first_bad_call`` on, G_A's weights and the cycle_A loss are NaN (a blown-up step)."""
    original = TrainStep.__call__
    calls = {"n": 0}

    def step(self, batch, **kwargs):
        losses = original(self, batch, **kwargs)
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
def test_non_finite_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(tiny_config, tmp_path,
                                                                            monkeypatch,
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


# ------------------------------------------------------------------------------------- 3. integrity


def _flip_bytes(path, n: int = 64) -> None:
    """Damage n bytes in the middle of a file (a bad sector, a bit-rotted copy): its structure still
    parses."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + n] = bytes(b ^ 0xFF for b in data[middle:middle + n])
    path.write_bytes(bytes(data))


@pytest.fixture
def saved_run(tiny_config, tmp_path):
    """A run folder with checkpoints/latest (weights and training state) of a one-step model."""
    step = build_train_step(tiny_config(), torch.device("cpu"))
    step({d: torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8) for d in ("A", "B")})
    run = tmp_path / "run"
    ckpt_io.save_checkpoint(run / "checkpoints" / "latest", config=step.cfg, networks=step.models.networks(),
                            state=training_state(step, global_step=1, epoch=1, epoch_step=1),
                            meta={"step": 1})
    return run, step


def test_flipped_bytes_in_weights_or_state_are_caught(saved_run):
    run, _ = saved_run
    latest = run / "checkpoints" / "latest"
    recorded = json.loads((latest / "meta.json").read_text())["sha256"]
    assert set(recorded) >= {"G_A.safetensors", "G_B.safetensors", "D_A.safetensors", "D_B.safetensors",
                             "state.pt"}
    _flip_bytes(latest / "G_A.safetensors")
    with pytest.raises(CheckpointError, match=r"G_A\.safetensors: corrupt weights file \(.*SHA-256") as e:
        ckpt_io.load_generator(run)
    assert "\n" not in str(e.value)
    ckpt_io.load_generator(run, direction="b2a")  # G_B is intact and still loads
    _flip_bytes(latest / "state.pt")
    with pytest.raises(CheckpointError, match=r"state\.pt: corrupt training state \(.*SHA-256"):
        ckpt_io.load_state(latest)


def test_a_damaged_latest_falls_back_to_its_previous_version(saved_run):
    run, step = saved_run
    latest = run / "checkpoints" / "latest"
    shutil.copytree(latest, latest.with_name("latest.prev"))  # killed after the new one was renamed in
    _flip_bytes(latest / "G_A.safetensors")
    net, _ = ckpt_io.load_generator(run)
    for k, v in net.state_dict().items():
        assert torch.equal(v, step.models.G_A.state_dict()[k]), k


def test_non_finite_weights_are_refused_at_load(saved_run):
    run, _ = saved_run
    latest = run / "checkpoints" / "latest"
    weights = safetensors.torch.load_file(str(latest / "G_A.safetensors"))
    key = min(weights)
    weights[key].view(-1)[0] = float("nan")
    safetensors.torch.save_file(weights, str(latest / "G_A.safetensors"))  # written by an older version
    meta = json.loads((latest / "meta.json").read_text())
    del meta["sha256"]["G_A.safetensors"]
    (latest / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=rf"G_A\.safetensors: tensor {key} holds non-finite values"):
        ckpt_io.load_generator(run)


def test_checkpoints_without_recorded_hashes_still_load(saved_run):
    run, _ = saved_run
    latest = run / "checkpoints" / "latest"
    meta = json.loads((latest / "meta.json").read_text())
    del meta["sha256"]
    (latest / "meta.json").write_text(json.dumps(meta))
    ckpt_io.load_generator(run)
    assert ckpt_io.load_state(latest)["step"] == 1


def test_a_folder_of_weights_can_record_and_check_its_own_hashes(saved_run, tmp_path):
    """What the safetensors export folder uses: generator.safetensors + config.json + meta.json."""
    _, step = saved_run
    folder = tmp_path / "export"
    folder.mkdir()
    safetensors.torch.save_file({k: v.contiguous() for k, v in step.models.G_A.state_dict().items()},
                                str(folder / "generator.safetensors"))
    (folder / "config.json").write_text(step.cfg.to_json())
    ckpt_io.record_sha256(folder, ["generator.safetensors", "config.json"])
    assert ckpt_io.load_weights(folder, "generator").keys() == step.models.G_A.state_dict().keys()
    _flip_bytes(folder / "generator.safetensors")
    with pytest.raises(CheckpointError, match=r"generator\.safetensors: corrupt weights file"):
        ckpt_io.load_weights(folder, "generator")


def test_resume_from_a_damaged_latest_takes_its_previous_version(tiny_config, tmp_path):
    run = tmp_path / "r"
    train(tiny_config(**{"train.max_steps": 2}), run, progress=False)
    shutil.copytree(run / "checkpoints" / "latest", tmp_path / "step2")
    train(tiny_config(**{"train.max_steps": 4}), run, resume=True, progress=False)
    shutil.copytree(tmp_path / "step2", run / "checkpoints" / "latest.prev")  # a save killed before cleanup
    _flip_bytes(run / "checkpoints" / "latest" / "state.pt")
    messages = []
    result = train(tiny_config(**{"train.max_steps": 6}), run, resume=True, progress=False,
                   echo=messages.append)
    assert result.step == 6
    assert [r["step"] for r in _records(run) if r.get("event") == "resume"] == [2, 2]
    assert any("state.pt: corrupt training state" in m and "latest.prev" in m for m in messages), messages


# ---------------------------------------------------------------------------------------- 4. SIGTERM


def test_sigterm_finishes_the_iteration_saves_and_exits_143(tiny_dataroot, tmp_path):
    """What Slurm, docker stop, Kubernetes and systemd send: handled like Ctrl-C, exit 128 + 15."""
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "cyclegan", "train", "--dataroot", str(tiny_dataroot), "--out", str(run),
           "--preset", "tiny", "--quiet", "--epochs", "1000", "--set", "train.log_every=1",
           "--set", "train.save_latest_every=100000", "--set", "train.save_epoch_every=1000",
           "--set", "train.tensorboard=false", "--set", "data.load_size=24", "--set", "data.crop_size=16",
           "--set", "train.num_threads=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "log.jsonl").is_file() or "G_total" not in (run / "log.jsonl").read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no log line in 120 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert (run / "checkpoints" / "latest" / "state.pt").is_file()
    stop = _records(run)[-1]
    assert stop["event"] == "stop" and stop["status"] == "interrupted"
    assert "Traceback" not in stderr and "--resume" in stderr


def test_sigterm_to_torchrun_stops_every_process_at_the_same_step_and_saves(tiny_dataroot, tmp_path):
    """torchrun forwards SIGTERM to its workers; they agree on the stop at the next log step."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
           "127.0.0.1", "--master-port", str(port), "-m", "cyclegan", "train", "--quiet", "--out", str(run),
           "--dataroot", str(tiny_dataroot), "--preset", "tiny", "--batch-size", "1", "--device", "cpu",
           "--epochs", "1000", "--set", "data.load_size=24", "--set", "data.crop_size=16",
           "--set", "train.tensorboard=false", "--set", "train.log_every=2",
           "--set", "train.save_latest_every=100000", "--set", "train.save_epoch_every=1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        while not (run / "log.jsonl").is_file() or "G_total" not in (run / "log.jsonl").read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no log line in 180 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    stop = _records(run)[-1]
    assert stop["event"] == "stop" and stop["status"] == "interrupted", stderr[-3000:]
    state = torch.load(run / "checkpoints" / "latest" / "state.pt", weights_only=True)
    assert state["step"] == stop["step"] and state["world_size"] == 2
    assert stderr.count("checkpoint saved; continue with") == 1  # one hint, from rank 0


# ----------------------------------------------------------------------- 5. resume from any checkpoint


def _cli(*args):
    return _runner().invoke(main, [str(a) for a in args])


FAST = ("--preset", "tiny", "--quiet", "--set", "train.tensorboard=false")


def test_resume_takes_the_newest_complete_checkpoint_of_any_kind(tiny_config, tmp_path):
    # 12 images: 12 steps per epoch; killed (here: removed) before latest was written after epoch 1.
    run = tmp_path / "r"
    sets = {"train.save_latest_every": 100, "train.save_epoch_every": 1, "train.epoch_checkpoint_state": True}
    train(tiny_config(**sets, **{"train.max_steps": 12}), run, progress=False)
    shutil.rmtree(run / "checkpoints" / "latest")
    assert ckpt_io.resolve_checkpoint(run).name == "epoch_0001"  # translate on the run folder
    messages = []
    result = train(tiny_config(**sets, **{"train.max_steps": 14}), run, resume=True, progress=False,
                   echo=messages.append)
    assert result.step == 14
    assert "resuming from checkpoints/epoch_0001 (step 12)" in messages
    assert [r["step"] for r in _records(run) if r.get("event") == "resume"] == [12]


def test_newest_checkpoint_by_step_and_latest_on_ties(tiny_config, tmp_path):
    run = tmp_path / "r"
    train(tiny_config(**{"train.max_steps": 24, "train.save_epoch_every": 1}), run, progress=False)
    assert ckpt_io.resolve_checkpoint(run).name == "latest"  # same step as epoch_0002: latest wins
    meta = json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())
    meta["step"] = 20  # as if latest were older than the newest epoch checkpoint
    (run / "checkpoints" / "latest" / "meta.json").write_text(json.dumps(meta))
    assert ckpt_io.resolve_checkpoint(run).name == "epoch_0002"
    (run / "checkpoints" / "epoch_0002" / "D_B.safetensors").unlink()  # incomplete: skipped
    assert ckpt_io.resolve_checkpoint(run).name == "latest"


def test_a_run_killed_before_its_first_checkpoint_is_told_to_start_again(tiny_dataroot, tmp_path):
    run = tmp_path / "r"
    first = _cli("train", "--dataroot", tiny_dataroot, "--out", run, *FAST, "--max-steps", 1)
    assert first.exit_code == 0, first.output
    shutil.rmtree(run / "checkpoints")  # killed before the first save
    for args in (("--resume",), ("--dataroot", tiny_dataroot)):
        result = _cli("train", "--out", run, *FAST, *args)
        assert result.exit_code == 1
        (line,) = [x for x in result.stderr.splitlines() if x.strip()]
        assert "no checkpoint" in line and "--overwrite" in line and "--resume" not in line, line


def test_translating_a_run_without_a_complete_checkpoint_says_so(tiny_config, tmp_path):
    run = tmp_path / "r"
    train(tiny_config(**{"train.max_steps": 1}), run, progress=False)
    (run / "checkpoints" / "latest" / "G_B.safetensors").unlink()  # a copy that lost a file
    with pytest.raises(CheckpointError,
                       match=r"no complete checkpoint .*latest \(G_B\.safetensors missing\)"):
        ckpt_io.load_generator(run)
    shutil.rmtree(run / "checkpoints")  # killed before the first save: the run folder is no checkpoint
    with pytest.raises(CheckpointError, match="no checkpoint yet"):
        ckpt_io.load_generator(run)


def test_the_resume_hint_needs_a_checkpoint(tiny_dataroot, tmp_path, monkeypatch):
    from cyclegan import training

    def stopped_before_saving(cfg, out, **kwargs):
        return training.TrainResult(run_dir=out, step=0, epoch=1, status="interrupted")

    monkeypatch.setattr(training, "train", stopped_before_saving)
    result = _cli("train", "--dataroot", tiny_dataroot, "--out", tmp_path / "r", *FAST)
    assert result.exit_code == 130
    assert "--resume" not in result.stderr and "--overwrite" in result.stderr


# ------------------------------------------------------------------------- 6. lean epoch checkpoints


def test_epoch_and_best_checkpoints_hold_weights_only_unless_asked(tiny_config, tmp_path):
    common = {"train.epochs": 2, "train.save_epoch_every": 1, "train.eval_every": 1,
              "train.inception_weights": str(tmp_path / "none.pth")}
    lean = tmp_path / "lean"
    train(tiny_config(**common), lean, progress=False)
    assert (lean / "checkpoints" / "latest" / "state.pt").is_file()
    for name in ("epoch_0001", "epoch_0002", "best"):
        assert (lean / "checkpoints" / name / "G_A.safetensors").is_file(), name
        assert not (lean / "checkpoints" / name / "state.pt").exists(), name
    full = tmp_path / "full"
    train(tiny_config(**common, **{"train.epoch_checkpoint_state": True}), full, progress=False)
    for name in ("epoch_0001", "epoch_0002", "best"):
        assert (full / "checkpoints" / name / "state.pt").is_file(), name

    # Resume needs a training state: a weights-only checkpoint says so instead of "missing state.pt".
    shutil.rmtree(lean / "checkpoints" / "latest")
    with pytest.raises(CheckpointError, match=r"epoch_0002 holds weights only .* cannot be resumed") as e:
        train(tiny_config(**common), lean, resume=True, progress=False)
    assert "--init-from" in str(e.value)
    assert ckpt_io.resolve_checkpoint(lean).name == "epoch_0002"  # translate can still use it


# ------------------------------------------------------------------- 8. messages after a progress bar


def test_errors_and_warnings_start_on_their_own_line_after_the_progress_bar(tiny_dataroot, tmp_path,
                                                                            monkeypatch):
    """A pending checkpoint write fails (full disk) while another error stops the run: the progress
    bar is closed before anything is printed, so no message lands on the bar's line."""
    from cyclegan.errors import DataError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_io.torch, "save", full)
    real_write = ckpt_io._write_checkpoint

    def slow_write(*args, **kwargs):  # the write is still pending when the error comes
        time.sleep(0.3)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(ckpt_io, "_write_checkpoint", slow_write)
    original = TrainStep.__call__
    calls = {"n": 0}

    def failing_step(self, batch, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise DataError("trainA/broken.png: cannot be decoded")
        return original(self, batch, **kwargs)

    monkeypatch.setattr(TrainStep, "__call__", failing_step)
    result = _cli("train", "--dataroot", tiny_dataroot, "--out", tmp_path / "r", "--preset", "tiny",
                  "--set", "train.tensorboard=false", "--set", "train.save_latest_every=2",
                  "--set", "data.load_size=24", "--set", "data.crop_size=16")
    assert result.exit_code == 1
    assert "it/s" in result.stderr or "it]" in result.stderr  # the bar was drawn
    messages = [line for line in result.stderr.split("\n") if "error:" in line or "warning:" in line]
    assert len(messages) == 2, result.stderr
    for line in messages:
        assert line.startswith(("error: ", "warning: ")), repr(line)
    assert "broken.png" in messages[0] and "no space left on device" in messages[1]
