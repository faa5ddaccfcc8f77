"""Evaluation end to end on a tiny random checkpoint: the injected feature network, the missing-weights
path (reconstruction still computed, one-line error, non-zero exit), the training hook, and
``cyclegan analyze fourier``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cyclegan.checkpoint import save_checkpoint
from cyclegan.cli import main
from cyclegan.config import build_config
from cyclegan.errors import DataError, EvaluationError
from cyclegan.evaluate import (
    TrainingEvaluator,
    best_from_metrics_log,
    evaluate_checkpoint,
    evaluate_generators,
    evaluate_run_during_training,
    is_improvement,
)
from cyclegan.fileio import write_json_atomic
from cyclegan.metrics import RandomFeatureExtractor
from cyclegan.metrics.inception import FID_WEIGHTS_FILENAME
from cyclegan.synthetic import make_unpaired_dataset
from cyclegan.training import build_models

DIRECTION_KEYS = {"cycle_l1", "psnr", "ssim", "fid", "kid_mean", "kid_std", "is_mean", "is_std", "gms"}


def _config(dataroot: Path, **overrides):
    base = {"data.dataroot": str(dataroot), "data.load_size": 24, "data.crop_size": 20,
            "train.tensorboard": False}
    return build_config(preset="tiny", overrides={**base, **overrides})


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    return make_unpaired_dataset(tmp_path_factory.mktemp("data"), n_train=2, n_test=5, size=24, seed=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory, dataroot) -> Path:
    """A run directory whose checkpoints/latest holds randomly initialised tiny networks."""
    out = tmp_path_factory.mktemp("run")
    cfg = _config(dataroot)
    models = build_models(cfg, torch.device("cpu"))
    save_checkpoint(out / "checkpoints" / "latest", config=cfg, networks=models.networks(), meta={"step": 7})
    (out / "config.json").write_text(cfg.to_json(), encoding="utf-8")
    return out


@pytest.fixture
def no_hub_weights(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache: where the Inception weights would be looked up."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch_home" / "hub" / "checkpoints" / FID_WEIGHTS_FILENAME


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click 8.1; 8.2+ always separates the streams
    except TypeError:
        return CliRunner()


def test_evaluate_checkpoint_with_injected_feature_network(run, tmp_path):
    out = tmp_path / "eval.json"
    result = evaluate_checkpoint(run, extractor=RandomFeatureExtractor(dims=32), out=out, device="cpu",
                                 batch_size=3)
    on_disk = json.loads(out.read_text())
    assert on_disk["step"] == 7 and on_disk["data"]["image_size"] == 20
    assert on_disk["features"]["name"] == "random-cnn" and on_disk["inception_error"] is None
    for direction in ("a2b", "b2a"):
        scores = on_disk[direction]
        assert DIRECTION_KEYS <= set(scores) and scores["n_source"] == 5
        assert all(math.isfinite(scores[k]) for k in DIRECTION_KEYS)
        assert scores["gms"] == pytest.approx(math.sqrt(scores["fid"] / scores["is_mean"]))
        assert scores["is_splits"] == 5 and 0 <= scores["ssim"] <= 1
    summary = on_disk["summary"]
    assert summary["gms_avg"] == pytest.approx((on_disk["a2b"]["gms"] + on_disk["b2a"]["gms"]) / 2)
    assert result["out"] == str(out) and result["summary"] == summary
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_missing_weights_still_writes_reconstruction_metrics(run, no_hub_weights):
    result = evaluate_checkpoint(run, device="cpu")
    assert FID_WEIGHTS_FILENAME in result["inception_error"]
    assert str(no_hub_weights.parent) in result["inception_error"]
    on_disk = json.loads((run / "eval.json").read_text())  # default: <run>/eval.json
    assert on_disk["features"] is None
    for direction in ("a2b", "b2a"):
        assert {"cycle_l1", "psnr", "ssim"} <= set(on_disk[direction])
        assert "fid" not in on_disk[direction]
    assert set(on_disk["summary"]) == {"cycle_l1_avg", "psnr_avg", "ssim_avg"}


def test_cli_evaluate_exits_nonzero_with_one_line_when_weights_missing(run, tmp_path, no_hub_weights):
    out = tmp_path / "e.json"
    res = _runner().invoke(main, ["evaluate", "--checkpoint", str(run), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and FID_WEIGHTS_FILENAME in errors[0] and str(no_hub_weights.parent) in errors[0]
    assert "cycle_l1" in res.stdout and "Traceback" not in res.output
    assert "ssim" in json.loads(out.read_text())["a2b"]

    res = _runner().invoke(main, ["evaluate", "--checkpoint", str(run), "--out", str(out), "--no-inception",
                                  "--device", "cpu"])
    assert res.exit_code == 0, res.output

    res = _runner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and res.stderr.strip().startswith("error:") and "nothing" in res.stderr


def test_cli_evaluate_warns_about_skipped_images_and_shows_progress(run, dataroot, tmp_path):
    import shutil

    test_a = tmp_path / "testA"
    shutil.copytree(dataroot / "testA", test_a)
    (test_a / "broken.png").write_text("not an image\n")
    args = ["evaluate", "--checkpoint", str(run), "--test-a", str(test_a), "--test-b",
            str(dataroot / "testB"), "--out", str(tmp_path / "e.json"), "--no-inception", "--device", "cpu"]
    res = _runner().invoke(main, args)
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, res.stderr
    assert warnings[0].startswith("warning: skipped 1 unreadable image(s): ")
    assert "broken.png (" in warnings[0]
    assert "it/s" in res.stderr or "img/s" in res.stderr  # the progress bar, on stderr
    assert "broken.png" in json.loads((tmp_path / "e.json").read_text())["data"]["skipped"][0]

    res = _runner().invoke(main, [*args, "--quiet"])
    assert res.exit_code == 0, res.output
    assert "img/s" not in res.stderr and "it/s" not in res.stderr and "warning: skipped 1" in res.stderr


def test_evaluate_folders_and_errors(run, dataroot, tmp_path):
    result = evaluate_checkpoint(run, test_a=dataroot / "testA", test_b=dataroot / "testB",
                                 use_inception=False, out=tmp_path / "x.json", image_size=16, max_images=3,
                                 device="cpu")
    assert result["a2b"]["n_source"] == 3 and result["data"]["image_size"] == 16
    with pytest.raises(EvaluationError, match="go together"):
        evaluate_checkpoint(run, test_a=dataroot / "testA", use_inception=False)
    with pytest.raises(DataError, match="testA"):
        evaluate_checkpoint(run, dataroot=tmp_path, use_inception=False)


def test_identity_generators_reconstruct_perfectly(dataroot, tmp_path):
    class Identity(nn.Module):
        def forward(self, x):
            return x

    cfg = _config(dataroot)
    images = TrainingEvaluator(cfg, use_inception=False).images
    result = evaluate_generators({"G_A": Identity(), "G_B": Identity()}, images=images)
    assert result["a2b"]["cycle_l1"] == 0 and result["a2b"]["ssim"] == pytest.approx(1.0)
    assert math.isinf(result["a2b"]["psnr"])
    path = write_json_atomic(tmp_path / "r.json", result)
    assert json.loads(path.read_text())["a2b"]["psnr"] is None  # JSON has no inf


def test_training_evaluator_hook(dataroot, tmp_path, no_hub_weights):
    cfg = _config(dataroot)
    models = build_models(cfg, torch.device("cpu"))
    models.train(True)

    evaluator = TrainingEvaluator(cfg, extractor=RandomFeatureExtractor(dims=16))
    first = evaluator(models, step=10, epoch=1)
    again = evaluate_run_during_training((models.G_A, models.G_B), cfg, step=20, epoch=2, evaluator=evaluator)
    assert models.G_A.training and models.G_B.training  # mode restored for the training loop
    assert first["selection_metric"] == "fid_avg" and first["selection_value"] == first["fid_avg"]
    assert first["step"] == 10 and {"fid_a2b", "kid_mean_b2a", "gms_avg", "ssim_avg"} <= set(first)
    assert again["fid_avg"] == pytest.approx(first["fid_avg"])  # same weights, cached real features
    assert all(isinstance(v, (int, float)) for k, v in first.items() if k != "selection_metric")
    assert is_improvement(first, None) and not is_improvement(first, first["selection_value"])
    log = tmp_path / "metrics.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in (first, {**first, "selection_value": 0.5}))
                   + '\n{"selection_metric": "fid_a')
    assert best_from_metrics_log(log, metric="fid_avg") == min(0.5, first["selection_value"])
    assert best_from_metrics_log(log, metric="cycle_l1_avg") is None
    # hand-edited records of the wrong types are skipped, not a traceback on --resume
    with log.open("a") as f:
        f.write('\n{"selection_metric": "fid_avg", "selection_value": "0.1"}\n'
                '{"selection_metric": "fid_avg", "selection_value": true}\n')
    assert best_from_metrics_log(log, metric="fid_avg") == min(0.5, first["selection_value"])
    assert evaluator.describe()["eval_images_a"] == 5

    fallback = TrainingEvaluator(cfg)  # no weights in the hub cache: best tracks reconstruction
    rec = fallback({"G_A": models.G_A, "G_B": models.G_B}, step=5, epoch=1)
    assert rec["selection_metric"] == "cycle_l1_avg" and "fid_avg" not in rec
    assert "cycle_l1_avg" in fallback.note and FID_WEIGHTS_FILENAME in fallback.note

    carve = TrainingEvaluator(cfg, files_a=sorted((dataroot / "trainA").glob("*.png")),
                              files_b=sorted((dataroot / "trainB").glob("*.png")), use_inception=False)
    assert carve.images["A"].shape == (2, 3, 20, 20)
    with pytest.raises(DataError, match="no test split"):
        TrainingEvaluator(_config(dataroot, **{"data.dataroot": None, "data.data_a": str(dataroot / "trainA"),
                                               "data.data_b": str(dataroot / "trainB")}))


def test_cli_analyze_fourier_compares_two_checkpoints(run, dataroot, tmp_path):
    other = tmp_path / "unet_run"
    # A U-Net trains on crops that are a multiple of 128; analysis pads any input to that.
    cfg = _config(dataroot, **{"model.generator.name": "unet_128", "data.load_size": 128,
                               "data.crop_size": 128})
    save_checkpoint(other / "checkpoints" / "latest", config=cfg,
                    networks=build_models(cfg, torch.device("cpu")).networks())
    out = tmp_path / "fig" / "fourier.png"
    res = _runner().invoke(main, ["analyze", "fourier", "--checkpoint", str(run), "--checkpoint", str(other),
                                  "--real", str(dataroot / "testB"), "--out", str(out), "--max-show", "2",
                                  str(dataroot / "testA"), str(dataroot / "trainA" / "0000.png")])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["inputs"]["n_images"] == 6 and data["real"]["n_images"] == 5
    generators = sorted(entry["generator"] for entry in data["checkpoints"].values())
    assert generators == ["resnet", "unet_128"]
    for entry in [data["inputs"], data["real"], *data["checkpoints"].values()]:
        assert len(entry["radial_power"]) == data["n_bins"] == len(data["frequencies"]) == 12
        assert 0.0 <= entry["hf_ratio_mean"] <= 1.0

    res = _runner().invoke(main, ["analyze", "fourier", "--checkpoint", str(run), "--out", str(out),
                                  str(tmp_path / "missing.jpg")])
    assert res.exit_code == 1 and "missing.jpg" in res.stderr and "Traceback" not in res.output
