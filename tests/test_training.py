"""The training loop: exact resume, Ctrl-C, precision switches."""

import json
import signal
import time

import pytest
import torch

from cyclegan import checkpoint as ckpt_io
from cyclegan.config import NETWORK_NAMES
from cyclegan.errors import CheckpointError
from cyclegan.training import (
    TrainStep,
    build_train_step,
    train,
)


def _random_batch(n: int) -> dict[str, torch.Tensor]:
    """A uint8 batch of n 16x16 images per domain, as the DataLoader delivers it."""
    return {d: torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8) for d in ("A", "B")}


def _weights(run):
    ckpt = ckpt_io.resolve_checkpoint(run)
    return {name: ckpt_io.load_weights(ckpt, name) for name in NETWORK_NAMES}


def _assert_bitwise_equal(a, b):
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs"


@pytest.mark.parametrize(
    "extra",
    [
        # dropout draws from the global RNG every step; the pool swaps stored fakes
        {"model.generator.dropout": 0.3, "loss.pool_size": 3},
        # the gradient penalty draws interpolation weights from the global RNG
        {"loss.gan": "wgangp", "loss.lambda_id": 0.0},
        # the attention recipe's parts together: the VQ codebook (EMA buffers) and spectral-norm
        # power-iteration vectors live in the weights, the learned loss weights and their Adam moments
        # in state.pt, and warm restarts change the LR at the epoch boundary the resumed run crosses
        {"model.generator.name": "attention", "model.generator.n_blocks": 2,
         "model.generator.vq_codebook_size": 8, "model.generator.vq_dim": 4,
         "model.discriminator.name": "dual", "model.discriminator.n_layers": 2,
         "loss.gan": "relativistic", "loss.gradient_penalty": True, "loss.lambda_fm": 1.0,
         "loss.lambda_edge": 1.0, "loss.lambda_color": 1.0, "loss.adaptive_weighting": "uncertainty",
         "optim.lr_policy": "cosine_restarts", "optim.t_0": 1, "optim.eta_min": 1e-5},
    ],
    ids=["lsgan-dropout-pool", "wgangp", "attention-dual-relativistic-vq"],
)
def test_resume_is_bitwise_identical(tiny_config, tmp_path, extra):
    # 12 images -> 12 iterations per epoch: N = 8 stops mid-epoch, 2N crosses an epoch boundary.
    n = 8
    common = {"train.epochs": 3, "train.seed": 3, **extra}
    straight = train(tiny_config(**common, **{"train.max_steps": 2 * n}), tmp_path / "a", progress=False)
    assert straight.step == 2 * n

    first = train(tiny_config(**common, **{"train.max_steps": n}), tmp_path / "b", progress=False)
    assert first.status == "max_steps" and first.step == n
    second = train(tiny_config(**common, **{"train.max_steps": 2 * n}), tmp_path / "b", resume=True,
                   progress=False)
    assert second.step == 2 * n
    _assert_bitwise_equal(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    sa = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "a"))
    sb = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "b"))
    assert (sa["step"], sa["epoch"], sa["epoch_step"]) == (sb["step"], sb["epoch"], sb["epoch_step"])
    assert torch.equal(sa["pool_a"]["images"], sb["pool_a"]["images"])


def test_background_checkpoints_equal_synchronous_ones(tiny_config, tmp_path, monkeypatch):
    real_write = ckpt_io._write_checkpoint

    def slow_write(*args, **kwargs):  # a slow disk: pruning must wait for the newest epoch checkpoint
        time.sleep(0.05)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(ckpt_io, "_write_checkpoint", slow_write)
    common = {"train.epochs": 3, "train.seed": 2, "train.save_latest_every": 2, "train.save_epoch_every": 1,
              "train.keep_epochs": 2}
    for mode, background in (("sync", False), ("async", True)):
        result = train(tiny_config(**common, **{"train.async_checkpoint": background}), tmp_path / mode,
                       progress=False)
        assert result.status == "finished"
        # pruning waited for the newest epoch checkpoint, so exactly the last two are kept
        assert sorted(p.name for p in (tmp_path / mode / "checkpoints").iterdir()) == \
            ["epoch_0002", "epoch_0003", "latest"]
    _assert_bitwise_equal(_weights(tmp_path / "sync"), _weights(tmp_path / "async"))
    sa = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "sync"))
    sb = ckpt_io.load_state(ckpt_io.resolve_checkpoint(tmp_path / "async"))
    assert sa["step"] == sb["step"] == 36
    assert torch.equal(sa["pool_b"]["images"], sb["pool_b"]["images"])


def test_ctrl_c_saves_then_resume_matches(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config(**{"train.epochs": 2, "train.seed": 1})
    straight = train(cfg, tmp_path / "a", progress=False)

    original = TrainStep.__call__
    calls = {"n": 0}

    def interrupt_on_fifth(self, batch, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            signal.raise_signal(signal.SIGINT)  # what a terminal's Ctrl-C delivers
        return original(self, batch, **kwargs)

    monkeypatch.setattr(TrainStep, "__call__", interrupt_on_fifth)
    stopped = train(cfg, tmp_path / "b", progress=False)
    assert stopped.status == "interrupted" and stopped.step == 5
    monkeypatch.setattr(TrainStep, "__call__", original)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    assert resumed.status == "finished" and resumed.step == straight.step
    _assert_bitwise_equal(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    events = [json.loads(line).get("event")
              for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert events.count("resume") == 1 and "stop" in events


def test_training_warns_once_when_images_are_smaller_than_the_load_size(tiny_config, tmp_path):
    # The tiny dataset is 32x32; the paper's load size 286 would upscale every image ninefold.
    lines: list[str] = []
    cfg = tiny_config(**{"data.load_size": 286, "data.crop_size": 256, "train.max_steps": 1})
    train(cfg, tmp_path / "run", progress=False, echo=lines.append)
    small = [line for line in lines if "load" in line and line.startswith("warning:")]
    assert len(small) == 1, lines
    lines.clear()
    train(tiny_config(**{"train.max_steps": 1}), tmp_path / "ok", progress=False, echo=lines.append)
    assert not [line for line in lines if line.startswith("warning:")], lines


def test_run_directory_layout_and_log(tiny_config, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(**{"train.epochs": 2, "train.save_epoch_every": 1, "train.keep_epochs": 1})
    result = train(cfg, run, progress=False)
    assert result.status == "finished" and result.step == 24
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0000.png", "epoch_0001.png",
                                                                   "epoch_0002.png"]
    # keep_epochs=1 pruned epoch_0001 once epoch_0002 was written
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0002", "latest"]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "G_total" in r]
    assert [r["step"] for r in steps] == list(range(2, 25, 2))
    for key in ("epoch", "G_A_gan", "G_B_gan", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B", "lr",
                "img_per_s"):
        assert key in steps[-1]
    # linear policy, 2 epochs -> epoch 2 decays to lr * (1 - 1/2)
    assert steps[-1]["lr"] == pytest.approx(2e-4 * 0.5)


def test_losses_go_down_on_the_cycle_term(tiny_config, tmp_path):
    """A smoke check that the optimisation works at all: reconstruction improves within 3 epochs."""
    run = tmp_path / "run"
    train(tiny_config(**{"train.epochs": 3, "optim.lr_policy": "constant", "train.log_every": 6}), run,
          progress=False)
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    cyc = [r["cycle_A"] + r["cycle_B"] for r in records if "cycle_A" in r]
    assert cyc[-1] < cyc[0]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_step_tracks_fp32(tiny_config, precision):
    """One step under autocast gives losses close to fp32 (a CPU test of the GPU fast path)."""
    batch = _random_batch(2)
    results = {}
    for p in ("fp32", precision):
        step = build_train_step(tiny_config(**{"train.precision": p, "train.device": "cpu"}),
                                torch.device("cpu"))
        results[p] = step(batch)
    for key in ("G_total", "cycle_A", "D_A"):
        assert torch.isfinite(results[precision][key])
        assert results[precision][key].float().item() == pytest.approx(results["fp32"][key].item(), rel=0.05)


def test_channels_last_matches_contiguous(tiny_config):
    batch = _random_batch(1)
    out = {}
    for cl in (False, True):
        step = build_train_step(tiny_config(**{"train.channels_last": cl}), torch.device("cpu"))
        out[cl] = step(batch)
    for key in out[False]:
        assert out[True][key].item() == pytest.approx(out[False][key].item(), rel=1e-4, abs=1e-5)


def test_every_model_kind_has_a_train_step_and_no_other():
    # config validates model.kind against its own MODEL_KINDS (config sits below training); the two
    # tables must name the same kinds, or a valid config would have no step to run.
    from cyclegan.config import MODEL_KINDS
    from cyclegan.training import TRAIN_STEPS

    assert sorted(TRAIN_STEPS) == sorted(MODEL_KINDS)


@pytest.mark.parametrize("kind", ["cyclegan", "cut", "fastcut"])
def test_build_train_step_dispatches_on_model_kind(tiny_config, kind):
    from cyclegan.training import CUTStep

    step = build_train_step(tiny_config(**{"model.kind": kind}), torch.device("cpu"))
    assert isinstance(step, TrainStep)
    assert isinstance(step, CUTStep) is (kind != "cyclegan")
    assert sorted(step.models.networks()) == (["D_A", "D_B", "G_A", "G_B"] if kind == "cyclegan" else
                                              ["D_B", "F", "G_A"])


def test_resume_config_drops_max_steps_and_data_paths_are_absolute(tiny_config, tmp_path, monkeypatch):
    from cyclegan.training import resolve_run_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    cfg = resolve_run_config(tmp_path / "run", resume=False, preset="tiny",
                             overrides={"data.dataroot": "d", "train.max_steps": 3})
    assert cfg.data.dataroot == str(tmp_path / "d")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(cfg.to_json())
    resumed = resolve_run_config(tmp_path / "run", resume=True)
    assert resumed.train.max_steps == 0 and resumed.data.dataroot == str(tmp_path / "d")
    assert resolve_run_config(tmp_path / "run", resume=True,
                              overrides={"train.max_steps": 9}).train.max_steps == 9


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    from cyclegan.training import build_models

    grads = {}
    for on in (False, True):
        models = build_models(tiny_config(**{"train.grad_checkpointing": on, "model.generator.dropout": 0.2}),
                              torch.device("cpu"))
        assert models.G_A.checkpoint_blocks is on
        torch.manual_seed(0)  # dropout masks: checkpointing replays the same RNG state on recompute
        x = torch.rand(2, 3, 16, 16) * 2 - 1
        models.G_A(x).square().mean().backward()
        grads[on] = {n: p.grad.clone() for n, p in models.G_A.named_parameters()}
    for name in grads[False]:
        torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-5, atol=1e-7, msg=name)


def test_log_records_data_time_share(tiny_config, tmp_path):
    train(tiny_config(**{"train.max_steps": 4}), tmp_path / "r", progress=False)
    rec = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines() if "G_total" in x]
    assert rec and all(0.0 <= r["data_time_share"] <= 1.0 for r in rec)


@pytest.mark.slow
def test_compiled_step_matches_eager(tiny_config):
    """torch.compile of the networks (inductor, C++ codegen on CPU) gives the eager losses."""
    batch = _random_batch(1)
    out = {}
    for compiled in (False, True):
        step = build_train_step(tiny_config(**{"train.compile": compiled}), torch.device("cpu"))
        try:
            out[compiled] = [step(batch) for _ in range(2)]
        except Exception as e:  # noqa: BLE001 -- no working C++ toolchain for inductor on this machine
            pytest.skip(f"torch.compile does not work here: {type(e).__name__}: {str(e)[:200]}")
    for eager, comp in zip(out[False], out[True]):
        for key in eager:
            assert comp[key].item() == pytest.approx(eager[key].item(), rel=1e-4, abs=1e-5), key


def test_wall_clock_budget_stops_and_saves(tiny_config, tmp_path):
    # A budget of ~0 minutes: the first iteration already exceeds it.
    result = train(tiny_config(**{"train.max_minutes": 1e-9}), tmp_path / "r", progress=False)
    assert result.status == "time_limit" and result.step == 1
    assert (tmp_path / "r" / "checkpoints" / "latest" / "state.pt").is_file()


def test_eval_every_writes_metrics_and_keeps_best(tiny_config, tmp_path):
    """--eval-every without Inception weights: reconstruction metrics pick checkpoints/best."""
    run = tmp_path / "r"
    train(tiny_config(**{"train.epochs": 2, "train.eval_every": 1,
                         "train.inception_weights": str(tmp_path / "none.pth")}),
          run, progress=False)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(m["selection_metric"] == "cycle_l1_avg" and m["selection_value"] > 0 for m in metrics)
    assert (run / "checkpoints" / "best" / "G_A.safetensors").is_file()
    events = [json.loads(x).get("event") for x in (run / "log.jsonl").read_text().splitlines()]
    assert events.count("eval") == 2 and "eval_setup" in events


def test_review_regressions(tiny_config, tiny_dataroot, tmp_path):
    """Refusals come before an old run is touched; resume neither over-steps nor mixes crop sizes."""
    from cyclegan.errors import ConfigError, DataError

    run = tmp_path / "r"
    train(tiny_config(**{"train.max_steps": 3}), run, progress=False)
    before = sorted(p.name for p in run.iterdir())
    # a held-out share that leaves no training batch: refused, and --overwrite deleted nothing
    with pytest.raises(DataError, match="too few training images"):
        train(tiny_config(**{"data.val_fraction": 0.95, "train.batch_size": 2}), run, overwrite=True,
              progress=False)
    assert sorted(p.name for p in run.iterdir()) == before
    # resuming at the step limit does not take one more step
    assert train(tiny_config(**{"train.max_steps": 3}), run, resume=True, progress=False).step == 3
    # the image pool holds crops of the saved size: a new crop size is refused on resume
    with pytest.raises(CheckpointError, match="data.crop_size"):
        train(tiny_config(**{"data.crop_size": 12, "data.load_size": 14}), run, resume=True, progress=False)
    with pytest.raises(ConfigError, match="too deep for data.crop_size 16"):
        tiny_config(**{"model.discriminator.n_layers": 5})


def test_explicit_checkpoint_path_falls_back_to_prev(tiny_config, tmp_path):
    from cyclegan import checkpoint as ckpt

    train(tiny_config(**{"train.max_steps": 2}), tmp_path / "r", progress=False)
    latest = tmp_path / "r" / "checkpoints" / "latest"
    latest.rename(latest.with_name("latest.prev"))
    assert ckpt.resolve_checkpoint(latest).name == "latest.prev"


def test_bf16_loss_trajectory_tracks_fp32(tiny_config, tmp_path):
    """The CPU fast path (bf16 autocast + channels_last) follows the fp32 loss curve over a short run."""
    curves = {}
    for name, extra in (("fp32", {}), ("fast", {"train.precision": "bf16", "train.channels_last": True})):
        run = tmp_path / name
        train(tiny_config(**{"train.max_steps": 24, "train.log_every": 4, "train.seed": 7, **extra}), run,
              progress=False)
        recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if "G_total" in x]
        curves[name] = [(r["cycle_A"] + r["cycle_B"], r["D_A"] + r["D_B"]) for r in recs]
    assert len(curves["fp32"]) == len(curves["fast"]) == 6
    for (cyc32, d32), (cyc16, d16) in zip(curves["fp32"], curves["fast"]):
        assert cyc16 == pytest.approx(cyc32, rel=0.1) and d16 == pytest.approx(d32, rel=0.25, abs=0.05)
