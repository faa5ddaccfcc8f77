"""bench/gpu_suite.py's CPU dry run: every step's code path, end to end, into one report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import gpu_suite  # bench/ is not a package; its scripts are imported by name


def _suite(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "gpu_suite.py"), *args], capture_output=True,
                          text=True,
                          timeout=timeout, check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_dry_run_runs_every_step_into_one_report(tmp_path):
    pytest.importorskip("onnxruntime")  # translate_speed's hardware line names it
    proc = _suite("--dry-run", "--step", "all", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (report,) = tmp_path.glob("*-cpu-dry-run.json")
    doc = json.loads(report.read_text())
    steps = doc["steps"]
    assert list(steps) == ["train-table", "train-compile", "train-e2e", "bs1", "translate",
                           "quality-cyclegan", "quality-fastcut"]
    assert {name: part["status"] for name, part in steps.items()} == dict.fromkeys(steps, "ok")
    assert steps["train-table"]["result"]["benchmark"] == "train_speed"
    assert steps["translate"]["result"]["results"][0]["variant"] == "eager-fp32"
    assert steps["quality-cyclegan"]["result"]["scores"]["a2b"]["cycle_l1"] > 0
    assert (tmp_path / steps["quality-fastcut"]["result"]["samples"]).is_file()
    md = report.with_suffix(".md").read_text()
    assert md.startswith("# GPU suite: CPU dry run") and md.count("\n| --- |") >= 7

    # The report is rebuilt from the parts alone (the device runs steps; the report is made here).
    # In this process: the command line was just run end to end, and a second interpreter would
    # only add its start-up.
    report.unlink()
    assert gpu_suite.main(["--step", "report", "--results", str(tmp_path)]) == 0
    assert json.loads(report.read_text())["steps"].keys() == steps.keys()


def _exit_code(argv: list[str]) -> int:
    """gpu_suite.main's exit status, whether it returns it or argparse exits with it."""
    try:
        return gpu_suite.main(argv)
    except SystemExit as e:
        return e.code


def test_refusals_are_one_line(tmp_path, capsys):
    no_data = _exit_code(["--step", "train-table", "--data", str(tmp_path / "none"),
                          "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert no_data == 2 and "pack_gpu_data.py" in err and "Traceback" not in err
    nothing = _exit_code(["--step", "report", "--results", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert nothing == 1 and "no parts" in err and len(err.strip().splitlines()) == 1
    dry = _exit_code(["--dry-run", "--step", "translate"])  # never into bench/results/gpu
    err = capsys.readouterr().err
    assert dry == 2 and "--results" in err
