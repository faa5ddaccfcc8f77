"""Checkpoints: safetensors + JSON, weights-only state, atomic replacement, clear errors."""

import json
import os
import stat
import threading

import pytest
import safetensors.torch
import torch

from cyclegan import checkpoint as ckpt_io
from cyclegan.errors import CheckpointError
from cyclegan.modelfile import load_any_generator
from cyclegan.training import build_train_step, training_state


@pytest.fixture
def step(tiny_config):
    return build_train_step(tiny_config(), torch.device("cpu"))


def _save(step, dest, global_step=1):
    return ckpt_io.save_checkpoint(
        dest,
        config=step.cfg,
        networks=step.models.networks(),
        state=training_state(step, global_step=global_step, epoch=1, epoch_step=global_step),
        meta={"step": global_step},
    )


def test_layout_and_formats(step, tmp_path):
    ckpt = _save(step, tmp_path / "checkpoints" / "latest")
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == ["D_A.safetensors", "D_B.safetensors", "G_A.safetensors", "G_B.safetensors",
                     "config.json", "meta.json", "state.pt"]
    # no pickled code: the state loads with weights_only=True
    state = torch.load(ckpt / "state.pt", weights_only=True)
    assert state["step"] == 1 and "opt_g" in state and "rng" in state
    assert json.loads((ckpt / "meta.json").read_text())["step"] == 1
    weights = safetensors.torch.load_file(str(ckpt / "G_A.safetensors"))
    assert set(weights) == set(step.models.G_A.state_dict())


def test_checkpoint_files_follow_the_umask(step, tmp_path):
    # safetensors' save_file creates files 0600 whatever the umask; every other file followed it.
    old = os.umask(0o022)
    try:
        ckpt = _save(step, tmp_path / "latest")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ckpt.iterdir()}
    assert set(modes.values()) == {0o644}, {k: oct(v) for k, v in modes.items()}


def test_generator_rebuilds_from_checkpoint_alone(step, tmp_path):
    _save(step, tmp_path / "run" / "checkpoints" / "latest")
    for direction, name in (("a2b", "G_A"), ("b2a", "G_B")):
        net, cfg = ckpt_io.load_generator(tmp_path / "run", direction=direction)
        assert cfg == step.cfg
        x = torch.rand(1, 3, 16, 16) * 2 - 1
        with torch.no_grad():
            assert torch.equal(net(x), getattr(step.models, name).eval()(x))


def test_save_replaces_atomically_and_failure_keeps_previous(step, tmp_path, monkeypatch):
    dest = tmp_path / "checkpoints" / "latest"
    _save(step, dest, global_step=1)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}

    calls = {"n": 0}
    real_save = ckpt_io.save_safetensors_atomic

    def dies_on_third_file(tensors, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a kill in the middle of writing the new checkpoint
        return real_save(tensors, path)

    monkeypatch.setattr(ckpt_io, "save_safetensors_atomic", dies_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        _save(step, dest, global_step=2)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert [p.name for p in dest.parent.iterdir()] == ["latest"]  # no temp directory left behind


def test_kill_between_renames_falls_back_to_previous(step, tmp_path):
    run = tmp_path / "run"
    _save(step, run / "checkpoints" / "latest")
    # State after os.replace(latest, latest.prev) and before the new one is renamed in.
    (run / "checkpoints" / "latest").rename(run / "checkpoints" / "latest.prev")
    assert ckpt_io.resolve_checkpoint(run).name == "latest.prev"
    # The next save completes and removes the fallback.
    _save(step, run / "checkpoints" / "latest", global_step=3)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest"]


def test_resolve_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such run or checkpoint"):
        ckpt_io.resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no checkpoint yet"):
        ckpt_io.resolve_checkpoint(tmp_path / "run")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        ckpt_io.resolve_checkpoint(tmp_path / "plain")


def test_corrupt_files_give_clear_errors(step, tmp_path):
    ckpt = _save(step, tmp_path / "ck")
    (ckpt / "G_A.safetensors").write_bytes((ckpt / "G_A.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="G_A.safetensors: corrupt weights file"):
        ckpt_io.load_weights(ckpt, "G_A")
    (ckpt / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="state.pt: corrupt training state"):
        ckpt_io.load_state(ckpt)
    (ckpt / "config.json").write_text("{ nope")
    with pytest.raises(CheckpointError, match="config.json: unreadable"):
        ckpt_io.load_checkpoint_config(ckpt)


def test_mismatched_architecture_is_reported(step, tiny_config, tmp_path):
    ckpt = _save(step, tmp_path / "ck")
    other = build_train_step(tiny_config(**{"model.generator.ngf": 4}), torch.device("cpu"))
    with pytest.raises(CheckpointError, match="does not match the configured network"):
        ckpt_io.load_into(other.models.G_A, ckpt, "G_A")


def test_compiled_and_channels_last_modules_save_plain_keys(tiny_config, tmp_path):
    step = build_train_step(tiny_config(**{"train.channels_last": True}), torch.device("cpu"))
    wrapped = torch.compile(step.models.G_A)  # not run: only the wrapper's key prefix matters here
    ckpt = ckpt_io.save_checkpoint(tmp_path / "ck", config=step.cfg, networks={"G_A": wrapped})
    keys = set(ckpt_io.load_weights(ckpt, "G_A"))
    assert keys == set(step.models.G_A.state_dict()) and not any(k.startswith("_orig_mod") for k in keys)


# ------------------------------------------------------------------------------ background writer


def test_background_save_is_a_snapshot_of_the_moment_it_was_called(step, tmp_path, monkeypatch):
    """The next optimizer step changes weights and Adam moments in place while the write runs."""
    batch = {k: torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8) for k in ("A", "B")}
    step(batch)  # Adam state exists
    expected_weights = {k: v.clone() for k, v in step.models.G_A.state_dict().items()}
    expected_moment = next(iter(step.opt_g.state_dict()["state"].values()))["exp_avg"].clone()

    release = threading.Event()
    real_write = ckpt_io._write_checkpoint

    def slow_write(*args, **kwargs):
        release.wait(10)  # hold the write back until training has moved on
        return real_write(*args, **kwargs)

    monkeypatch.setattr(ckpt_io, "_write_checkpoint", slow_write)
    writer = ckpt_io.CheckpointWriter()
    dest = tmp_path / "latest"
    writer.save(dest, config=step.cfg, networks=step.models.networks(),
                state=training_state(step, global_step=1, epoch=1, epoch_step=1), meta={"step": 1})
    step(batch)  # training goes on: every live tensor changes
    assert not dest.exists()
    release.set()
    writer.close()
    saved = safetensors.torch.load_file(str(dest / "G_A.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in expected_weights.items())
    live = step.models.G_A.state_dict()
    assert any(not torch.equal(saved[k], live[k]) for k in saved)  # the step did change the live weights
    state = torch.load(dest / "state.pt", weights_only=True)
    assert torch.equal(next(iter(state["opt_g"]["state"].values()))["exp_avg"], expected_moment)


def test_background_saves_land_in_call_order(step, tmp_path):
    writer = ckpt_io.CheckpointWriter()
    for n in (1, 2, 3):
        writer.save(tmp_path / "latest", config=step.cfg, networks=step.models.networks(),
                    state=training_state(step, global_step=n, epoch=1, epoch_step=n), meta={"step": n})
    writer.close()
    assert json.loads((tmp_path / "latest" / "meta.json").read_text())["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]  # no temporary or .prev left


def test_a_failed_background_write_is_one_clear_error(step, tmp_path):
    blocker = tmp_path / "checkpoints"
    blocker.write_text("a file where the checkpoint folder should be")
    writer = ckpt_io.CheckpointWriter()
    writer.save(blocker / "latest", config=step.cfg, networks=step.models.networks())
    with pytest.raises(CheckpointError, match=r"checkpoints/latest: could not write the checkpoint") as e:
        writer.wait()
    assert "\n" not in str(e.value)
    writer.close()  # reported once


@pytest.mark.parametrize("error",
                         [RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos\nmore"),
                                   OSError(28, "No space left on device")])
def test_a_full_disk_during_a_background_write_is_one_line(step, tmp_path, monkeypatch, error):
    """torch.save reports a full disk as RuntimeError, safetensors as SafetensorError, mkdir as OSError."""
    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(ckpt_io.torch, "save", full)
    writer = ckpt_io.CheckpointWriter()
    writer.save(tmp_path / "latest", config=step.cfg, networks=step.models.networks(), state={"step": 1})
    with pytest.raises(CheckpointError, match="latest: could not write the checkpoint") as e:
        writer.wait()
    assert "\n" not in str(e.value)
    assert not (tmp_path / "latest").exists() and not list(tmp_path.glob(".latest.tmp-*"))

    # while another error is on its way, close() hands the write error back instead of raising it
    writer.save(tmp_path / "latest", config=step.cfg, networks=step.models.networks(), state={"step": 2})
    failed = writer.close(raise_errors=False)
    assert isinstance(failed, CheckpointError)


def test_deeply_nested_config_json_is_one_line_error(tmp_path):
    """A hostile config.json nested 10^5 levels deep once escaped as a RecursionError traceback."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=r"config.json: unreadable \(nested too deeply\)"):
        ckpt_io.load_checkpoint_config(ckpt)


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_state_pt_holding_code_or_a_wrong_shape_is_refused_in_our_words(step, tmp_path):
    ckpt = _save(step, tmp_path / "ck")
    meta = ckpt_io.read_meta(ckpt)
    meta.pop(ckpt_io.SHA256_KEY)  # an old checkpoint: no hashes to stop the file before torch.load
    (ckpt / "meta.json").write_text(json.dumps(meta))
    torch.save({"step": _SystemCall(tmp_path / "pwned")}, ckpt / "state.pt")
    with pytest.raises(CheckpointError) as info:
        ckpt_io.load_state(ckpt)
    assert "state.pt: corrupt training state (holds pickled code or objects (posix.system)" in str(info.value)
    assert "weights_only" not in str(info.value) and not (tmp_path / "pwned").exists()
    torch.save([1, 2], ckpt / "state.pt")
    with pytest.raises(CheckpointError, match=r"state.pt: corrupt training state \(a list, not a mapping\)"):
        ckpt_io.load_state(ckpt)


def test_config_and_meta_json_of_the_wrong_types_are_one_line_or_ignored(step, tmp_path):
    ckpt = _save(step, tmp_path / "ck")
    for doc in ("[1, 2]", '{"model": [1]}', '{"model": {"generator": {"ngf": [64]}}}'):
        (ckpt / "config.json").write_text(doc)
        with pytest.raises(CheckpointError, match="config.json: invalid config"):
            ckpt_io.load_checkpoint_config(ckpt)
    (ckpt / "meta.json").write_text("[" * 100_000 + "]" * 100_000)  # nested past the recursion limit
    assert ckpt_io.read_meta(ckpt) == {} and ckpt_io.checkpoint_step(ckpt) is None


def test_model_metadata_that_is_not_an_object_is_one_line(tmp_path):
    path = tmp_path / "g.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(1)}, str(path), metadata={"cyclegan": "[1, 2]"})
    with pytest.raises(CheckpointError, match="g.safetensors: unreadable cyclegan metadata"):
        load_any_generator(path)
