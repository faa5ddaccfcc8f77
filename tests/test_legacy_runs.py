"""Runs written before model kinds and part options were redeclared (tests/fixtures/legacy_runs, made by
make_legacy_runs.py with the code of commit 9b135db) still load, translate the same and resume to the
same weights bitwise."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from cyclegan.checkpoint import load_checkpoint_config
from cyclegan.config import load_config_json
from cyclegan.modelfile import load_any_generator
from cyclegan.synthetic import make_unpaired_dataset
from cyclegan.training import resolve_run_config, train

FIXTURES = Path(__file__).parent / "fixtures" / "legacy_runs"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
_spec = importlib.util.spec_from_file_location("make_legacy_runs", FIXTURES / "make_legacy_runs.py")
maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(maker)


@pytest.mark.parametrize("kind", maker.KINDS)
def test_old_config_json_loads_and_old_checkpoint_translates_the_same(kind):
    cfg = load_config_json(FIXTURES / kind / "config.json")
    assert cfg.model.kind == kind
    assert load_checkpoint_config(FIXTURES / kind / "checkpoints" / "latest") == cfg
    with torch.no_grad():
        out = load_any_generator(str(FIXTURES / kind), device="cpu").model(maker.fixed_image()).double()
    assert float(out.sum()) == pytest.approx(EXPECTED[kind]["translation_sum"], abs=1e-6)
    assert float(out.abs().sum()) == pytest.approx(EXPECTED[kind]["translation_abs_sum"], abs=1e-6)


@pytest.mark.parametrize("kind", maker.KINDS)
def test_old_run_resumes_to_the_weights_the_old_code_reached(kind, tmp_path):
    root = make_unpaired_dataset(tmp_path / "data", n_train=4, n_test=2, size=16, seed=0)
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / kind, run)
    cfg = resolve_run_config(run, resume=True, overrides={"train.max_steps": 3, "data.dataroot": str(root)})
    train(cfg, run, resume=True, progress=False, echo=lambda _msg: None)
    latest = run / "checkpoints" / "latest"
    expected = EXPECTED[kind]["after_resume_step_3"]
    assert {name: maker.weights_sha256(latest / f"{name}.safetensors") for name in expected} == expected
