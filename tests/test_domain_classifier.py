"""The domain-classification score on two synthetic image families (``synthetic.make_scene``:
noisy "photo" scenes as domain A, flat "cartoon" scenes as domain B): near 100% for real target images,
near 0% for untranslated source images, refusal when the held-out accuracy is too low, the cache, and
``cyclegan evaluate --classifier`` / ``--eval-every`` end to end. Small settings keep each training to
about a second."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from cyclegan.checkpoint import save_checkpoint
from cyclegan.cli import main
from cyclegan.config import build_config
from cyclegan.errors import EvaluationError
from cyclegan.evaluate import TrainingEvaluator, evaluate_checkpoint, evaluate_generators
from cyclegan.evaluate import classifier as classifier_module
from cyclegan.evaluate.classifier import (
    CACHE_SUBDIR,
    DomainScorer,
    build_domain_scorer,
    dataset_fingerprint,
    load_or_train_classifier,
)
from cyclegan.metrics.domain_classifier import (
    CLASSIFIER_VERSION,
    ClassifierNet,
    ClassifierSettings,
    DomainClassifier,
    classifier_frechet_distance,
    classify,
    neither_share,
    target_share,
    train_domain_classifier,
)
from cyclegan.synthetic import make_scene
from cyclegan.training import build_models

# Enough steps for the synthetic families (about 200 optimiser steps), a second or two of CPU time.
FAST = ClassifierSettings(width=8, members=1, epochs=40, min_steps=0, batch_size=16, lr=1e-2)
# For two draws of one family: half held out, so chance cannot reach the 80% threshold.
SAME = ClassifierSettings(width=4, members=1, epochs=4, min_steps=0, batch_size=8, held_out=0.5)


@pytest.fixture(autouse=True)
def fast_default(monkeypatch):
    """The workflow's default classifier (12 epochs of width 32) made small for these 32x32 families."""
    monkeypatch.setattr(classifier_module, "DEFAULT_SETTINGS", FAST)


def family(style: str, n: int, seed: int, size: int = 32) -> torch.Tensor:
    """uint8 [n, 3, size, size] drawn from one synthetic family."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([make_scene(rng, size, style) for _ in range(n)])).permute(0, 3, 1,
                                                                                                2).contiguous()


def write_domain(folder: Path, images: torch.Tensor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    """trainA: 40 photos, trainB: 40 cartoons, testA/testB: 12 each, at 32x32."""
    root = tmp_path_factory.mktemp("families")
    for split, n, seed in (("train", 40, 1), ("test", 12, 3)):
        write_domain(root / f"{split}A", family("photo", n, seed))
        write_domain(root / f"{split}B", family("cartoon", n, seed + 1))
    return root


@pytest.fixture(scope="module")
def trained():
    model, report = train_domain_classifier(family("photo", 40, 1), family("cartoon", 40, 2), settings=FAST)
    return model, report


class Identity(nn.Module):
    """An "untranslated" generator: returns its input."""

    def forward(self, x):
        return x


def test_real_target_near_one_untranslated_source_near_zero(trained):
    model, report = trained
    assert report.accuracy >= 0.9 and report.n_held_out_a == 4 and report.n_train_b == 36
    test_a, test_b = family("photo", 16, 7), family("cartoon", 16, 8)
    probs_b, feats_b = classify(model, test_b)
    probs_a, feats_a = classify(model, test_a)
    assert probs_b.shape == (16, 3) and len(feats_b) == 1 and feats_b[0].shape == (16, model.feature_dim)
    assert np.allclose(probs_b.sum(axis=1), 1.0)
    assert target_share(probs_b, "B") >= 0.9  # real zebras are zebras
    assert target_share(probs_a, "B") <= 0.1  # untranslated horses are not
    # Frechet distance: the other family is far, a second draw of the same family near.
    same = classifier_frechet_distance(feats_b, classify(model, family("cartoon", 16, 9))[1])
    assert classifier_frechet_distance(feats_b, feats_a) > 5 * same


def test_damaged_images_are_of_neither_domain():
    """Images damaged as an unconverged generator damages them (blur, noise, checkerboards) are
    "neither": they count for no domain, where a two-way classifier would have to pick one."""
    settings = FAST
    model, report = train_domain_classifier(family("photo", 40, 1), family("cartoon", 40, 2),
                                            settings=settings)
    assert report.accuracy >= 0.9 and report.neither_accuracy >= 0.75
    test = torch.cat([family("photo", 16, 7), family("cartoon", 16, 8)])
    blurred = torch.nn.functional.interpolate(
        torch.nn.functional.interpolate(test.float(), size=4, mode="area"), size=32, mode="bilinear")
    noisy = blurred + 40 * torch.randn(blurred.shape, generator=torch.Generator().manual_seed(0))
    probs = classify(model, noisy.round().clamp(0, 255).to(torch.uint8))[0]
    assert neither_share(probs) >= 0.75
    assert target_share(probs, "A") + target_share(probs, "B") <= 0.25


def test_training_is_deterministic_and_leaves_the_global_rng_alone():
    a, b = family("photo", 12, 1), family("cartoon", 12, 2)
    # an ensemble of two
    settings = ClassifierSettings(width=4, members=2, epochs=2, min_steps=0, batch_size=8)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    m1, r1 = train_domain_classifier(a, b, settings=settings)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream is untouched
    m2, r2 = train_domain_classifier(a, b, settings=settings)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert r1.accuracy == r2.accuracy


def test_bad_inputs_are_refused():
    a = family("photo", 4, 1)
    with pytest.raises(ValueError, match="uint8"):
        train_domain_classifier(a.float(), a)
    with pytest.raises(ValueError, match="at least 2"):
        train_domain_classifier(a, a[:1])
    with pytest.raises(ValueError, match="target"):
        target_share(np.ones((2, 3)), "C")
    with pytest.raises(ValueError, match="probabilities"):
        target_share(np.ones((2, 2)), "B")
    # any size works, down to tiny images (ceil-mode pooling)
    assert ClassifierNet(width=4)(torch.zeros(2, 3, 8, 8)).shape == (2, 3)
    probs, feats = DomainClassifier(width=4, members=2).eval().probabilities(torch.zeros(2, 3, 8, 8))
    assert probs.shape == (2, 3) and len(feats) == 2 and torch.allclose(probs.sum(1), torch.ones(2))


def test_identity_generator_scores_near_zero_through_evaluate(dataroot, trained):
    """evaluate_generators with the scorer: an untranslated output is not the target domain, while
    the real target images are (target_share_real, the ceiling)."""
    cfg = build_config(preset="tiny", overrides={"data.dataroot": str(dataroot)})
    real = {"A": family("photo", 12, 3), "B": family("cartoon", 12, 4)}
    scorer = build_domain_scorer(cfg, real, settings=FAST)
    result = evaluate_generators({"G_A": Identity(), "G_B": Identity()}, images=real, domain_scorer=scorer)
    for direction in ("a2b", "b2a"):
        assert result[direction]["target_share"] <= 0.1
        assert result[direction]["target_share_real"] >= 0.9
        assert result[direction]["classifier_fd"] > 0
    assert result["summary"]["target_share_avg"] <= 0.1 and "classifier_fd_avg" in result["summary"]


@pytest.fixture(scope="module")
def same_family(tmp_path_factory) -> Path:
    """Both domains drawn from the "photo" family (train 24, test 4 each): nothing to tell apart."""
    root = tmp_path_factory.mktemp("same")
    for split, n, seed in (("train", 24, 1), ("test", 4, 5)):
        write_domain(root / f"{split}A", family("photo", n, seed))
        write_domain(root / f"{split}B", family("photo", n, seed + 1))
    return root


def test_low_accuracy_is_refused_in_one_line(same_family):
    """Two folders of the same family cannot be told apart: the scorer refuses (and says how to override)."""
    cfg = build_config(preset="tiny", overrides={"data.dataroot": str(same_family)})
    real = {"A": family("photo", 4, 5), "B": family("photo", 4, 6)}
    trained = load_or_train_classifier(same_family / "trainA", same_family / "trainB", size=32, settings=SAME)
    assert trained.report.accuracy < 0.8 and trained.report.n_held_out_a == 12
    with pytest.raises(EvaluationError, match=r"held-out accuracy .* below the required 80%") as e:
        DomainScorer(trained, real, min_accuracy=0.8)
    assert "\n" not in str(e.value) and "--classifier-min-accuracy" in str(e.value)
    # with the threshold lowered it is used
    assert 0.0 <= DomainScorer(trained, real, min_accuracy=0.0)(real["B"], "B")["target_share"] <= 1.0
    with pytest.raises(EvaluationError, match="below the required"):
        build_domain_scorer(cfg, real, settings=SAME)  # default threshold 0.8


def test_cache_is_reused_and_keyed_by_the_data(tmp_path, dataroot, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "copy"
    write_domain(root / "trainA", family("photo", 20, 1))
    write_domain(root / "trainB", family("cartoon", 20, 2))
    first = load_or_train_classifier(root / "trainA", root / "trainB", size=32, settings=FAST)
    assert not first.cached and first.path.is_file() and first.path.parent.name == CACHE_SUBDIR
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]  # no temporary file left
    again = load_or_train_classifier(root / "trainA", root / "trainB", size=32, settings=FAST)
    assert again.cached and again.key == first.key and again.report == first.report
    x = family("cartoon", 4, 3)
    assert np.allclose(classify(first.model, x)[0], classify(again.model, x)[0], atol=1e-6)
    # another size, other settings, changed images: another classifier
    assert load_or_train_classifier(root / "trainA", root / "trainB", size=16, settings=FAST).key != first.key
    before = dataset_fingerprint(root / "trainA", root / "trainB")
    write_domain(root / "trainB", family("cartoon", 1, 99))  # overwrites 000.png
    assert dataset_fingerprint(root / "trainA", root / "trainB") != before
    # a damaged cache file is retrained and replaced, not an error
    first.path.write_bytes(b"junk")
    redo = load_or_train_classifier(root / "trainA", root / "trainB", size=32, settings=FAST)
    assert not redo.cached and redo.path.stat().st_size > 100


@pytest.fixture(scope="module")
def run(tmp_path_factory, dataroot) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = build_config(preset="tiny", overrides={"data.dataroot": str(dataroot), "data.load_size": 32,
                                                 "data.crop_size": 32, "train.tensorboard": False})
    models = build_models(cfg, torch.device("cpu"))
    save_checkpoint(out / "checkpoints" / "latest", config=cfg, networks=models.networks(), meta={"step": 3})
    (out / "config.json").write_text(cfg.to_json(), encoding="utf-8")
    return out


def test_evaluate_checkpoint_with_classifier(run, tmp_path):
    record = evaluate_checkpoint(run, use_inception=False, out=tmp_path / "e.json", classifier=True,
                                 classifier_min_accuracy=0.0, device="cpu")
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["classifier"]["version"] == CLASSIFIER_VERSION and saved["classifier"]["size"] == 32
    assert "comparable only within one data set" in saved["classifier"]["note"]
    for direction in ("a2b", "b2a"):
        assert 0.0 <= record[direction]["target_share"] <= 1.0
        assert record[direction]["target_share_real"] >= 0.9  # the classifier learns the families
    assert "target_share_avg" in record["summary"]


def test_cli_evaluate_classifier(run, tmp_path, same_family, monkeypatch):
    out = tmp_path / "cli.json"
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run), "--no-inception", "--classifier",
                                    "--classifier-min-accuracy", "0", "--out", str(out), "--quiet",
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "target_share" in res.output and "classifier_fd" in res.output
    assert json.loads(out.read_text())["a2b"]["target_share"] is not None
    # a classifier that cannot tell the domains apart: one line, exit 1, nothing written
    monkeypatch.setattr(classifier_module, "DEFAULT_SETTINGS", SAME)
    out2 = tmp_path / "refused.json"
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run), "--dataroot", str(same_family),
                                    "--no-inception", "--classifier", "--out", str(out2), "--quiet",
                                    "--device", "cpu"])
    assert res.exit_code == 1 and "held-out accuracy" in res.output and not out2.exists()
    assert [line for line in res.output.splitlines() if line.startswith("error:")] == \
        [res.output.strip().splitlines()[-1]]


def test_training_evaluator_with_classifier(run, dataroot):
    cfg = build_config(preset="tiny", overrides={"data.dataroot": str(dataroot), "data.load_size": 32,
                                                 "data.crop_size": 32, "train.eval_classifier": True,
                                                 "train.classifier_min_accuracy": 0.0})
    evaluator = TrainingEvaluator(cfg, use_inception=False)
    assert evaluator.describe()["eval_classifier"]["held_out_accuracy"] >= 0.0
    models = build_models(cfg, torch.device("cpu"))
    record = evaluator(models, step=1, epoch=1)
    assert {"target_share_a2b", "target_share_b2a", "classifier_fd_a2b", "target_share_avg"} <= set(record)
    assert TrainingEvaluator(cfg, use_inception=False, classifier=False).domain_scorer is None


def test_a_one_image_test_set_is_refused_before_the_classifier_trains(run, tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    trainings = []
    monkeypatch.setattr(classifier_module, "train_domain_classifier", lambda *a, **k: trainings.append(1))
    root = tmp_path / "one"
    write_domain(root / "trainA", family("photo", 20, 1))
    write_domain(root / "trainB", family("cartoon", 20, 2))
    write_domain(root / "testA", family("photo", 1, 3))
    write_domain(root / "testB", family("cartoon", 4, 4))
    res = CliRunner().invoke(main,
                             ["evaluate", "--checkpoint", str(run), "--dataroot", str(root), "--no-inception",
                                    "--classifier", "--out", str(tmp_path / "e.json"), "--device", "cpu"])
    assert res.exit_code == 1 and res.output.strip().splitlines()[-1] == (
        "error: test domain A has 1 usable image(s); evaluation needs at least 2"), res.output
    assert trainings == [] and "classifier: training" not in res.output and not (tmp_path / "e.json").exists()


def test_a_cached_classifier_with_a_report_of_wrong_types_is_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "copy"
    write_domain(root / "trainA", family("photo", 20, 1))
    write_domain(root / "trainB", family("cartoon", 20, 2))
    first = load_or_train_classifier(root / "trainA", root / "trainB", size=32, settings=FAST)
    state = load_file(str(first.path))
    for report in ("[1, 2]", json.dumps({**first.report.to_dict(), "accuracy": "0.9"})):
        save_file(state, str(first.path), metadata={"report": report})
        redo = load_or_train_classifier(root / "trainA", root / "trainB", size=32, settings=FAST)
        assert not redo.cached and isinstance(redo.report.accuracy, float)
