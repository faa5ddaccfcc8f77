"""``cyclegan report``: from a real tiny training run, one HTML page whose plots exist and whose links
resolve from disk; the embedded variant references no external file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

from cyclegan.cli import main
from cyclegan.config import build_config
from cyclegan.report import build_report, ema, read_run_log
from cyclegan.synthetic import make_unpaired_dataset
from cyclegan.training import train

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    data = make_unpaired_dataset(root / "data", n_train=4, n_test=2, size=20, seed=0)
    cfg = build_config(preset="tiny", overrides={
        "data.dataroot": str(data), "data.load_size": 18, "data.crop_size": 16, "data.n_samples": 2,
        "train.epochs": 5, "train.max_steps": 20, "train.log_every": 2, "train.tensorboard": False,
    })
    out = root / "run"
    train(cfg, out, progress=False)
    # What --eval-every writes (flat records), and a cyclegan evaluate result.
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"step": step, "epoch": step // 4, "fid_a2b": fid, "fid_b2a": fid + 5,
                                "fid_avg": fid + 2.5, "cycle_l1_avg": 0.3,
                                 "kid_std_a2b": 0.01}) + "\n" for step, fid in ((8, 90.0), (16, 70.0)))
    (out / "eval.json").write_text(json.dumps({
        "step": 20, "a2b": {"fid": 70.0, "cycle_l1": 0.3}, "b2a": {"fid": 75.0, "cycle_l1": 0.31},
        "summary": {"fid_avg": 72.5}, "inception_error": None, "features": {"library": "pytorch-fid 0.3.0"},
    }))
    return out


def _refs(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)


def test_report_has_plots_and_links_resolve(run, tmp_path):
    path = build_report(run)
    assert path == run / "report.html"
    page = path.read_text(encoding="utf-8")
    refs = _refs(page)
    for name in ("losses.png", "lr.png", "throughput.png", "metrics.png"):
        assert f"report_files/{name}" in refs
    samples = [r for r in refs if "samples/" in r]
    assert "samples/epoch_0000.png" in samples and len(samples) == len(list((run / "samples").glob("*.png")))
    for ref in refs:
        assert (path.parent / unquote(ref)).is_file(), ref
        assert (path.parent / unquote(ref)).read_bytes()[:4] == b"\x89PNG"
    for text in ("Losses", "Learning rate", "Throughput", "Metrics", "Samples", "Config", "eval.json",
                 "72.5", "img/s", "max_steps at step 20", '"crop_size": 16'):
        assert text in page, text

    # Written elsewhere, links are relative to the page and still resolve.
    other = build_report(run, out=tmp_path / "elsewhere" / "r.html", max_samples=2)
    refs = _refs(other.read_text(encoding="utf-8"))
    assert sum("samples/" in r for r in refs) == 2
    assert all((other.parent / unquote(r)).is_file() for r in refs)


def test_embedded_report_is_one_file(run, tmp_path):
    path = build_report(run, out=tmp_path / "one.html", embed=True)
    refs = _refs(path.read_text(encoding="utf-8"))
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert not (tmp_path / "one_files").exists()


def test_cli_report_and_errors(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    res = CliRunner().invoke(main, ["report", str(copy)])
    assert res.exit_code == 0, res.output
    assert (copy / "report.html").is_file()
    res = CliRunner().invoke(main, ["report", str(tmp_path / "empty_dir_missing")])
    assert res.exit_code != 0
    (tmp_path / "not_a_run").mkdir()
    res = CliRunner().invoke(main, ["report", str(tmp_path / "not_a_run")])
    assert res.exit_code == 1 and "not a run directory" in res.output and "Traceback" not in res.output


def test_log_parsing_drops_superseded_steps_and_tolerates_a_cut_line(tmp_path):
    lines = [
        {"event": "start", "step": 0, "time": 100.0, "device": "cpu"},
        {"step": 2, "G_total": 5.0}, {"step": 4, "G_total": 4.0}, {"step": 6, "G_total": 3.0},
        {"event": "resume", "step": 4, "time": 200.0},
        {"step": 6, "G_total": 2.5},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"step": 8, "G_to'
    (tmp_path / "log.jsonl").write_text(text)
    log = read_run_log(tmp_path)
    assert [(r["step"], r["G_total"]) for r in log.losses] == [(2, 5.0), (4, 4.0), (6, 2.5)]
    assert log.bad_lines == 1 and [e["event"] for e in log.events] == ["start", "resume"]
    assert build_report(tmp_path).is_file()  # no config.json, no samples: still a page


def test_ema_is_bias_corrected():
    assert ema([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])
    assert ema([0.0, 10.0], 0.0) == [0.0, 10.0]
    smoothed = ema([0.0, 10.0], 0.5)
    assert smoothed[0] == 0.0 and 0.0 < smoothed[1] < 10.0
