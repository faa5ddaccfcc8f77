"""bench/quality_race.py on tiny settings: two arms on synthetic data, each trained in two
CPU-time slices by the real ``cyclegan train`` (the second resuming the first), scored by ``cyclegan
evaluate --classifier``, reported as a table with the paper recipe as the reference row and as JSON.
Timings are not asserted, only that the budget was spent and every number is there."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "quality_race.py"
sys.path.insert(0, str(SCRIPT.parent))
import quality_race  # bench/ is not a package; its scripts are imported by name


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the CPU clock reads /proc (Linux)")
def test_tiny_race(tmp_path):
    out = tmp_path / "race.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--jobs", "2", "--runs",
                           str(tmp_path / "runs"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "quality_race" and doc["config"]["clock"] == "cpu"
    rows = {r["arm"]: r for r in doc["results"]}
    assert list(rows) == ["paper", "ema"]  # the reference first
    budget = doc["config"]["minutes"] * 60
    for name, row in rows.items():
        assert row["status"] == "ok", row["reason"]
        assert [s["index"] for s in row["slices"]] == [0, 1]
        assert all(s["status"] == "interrupted" for s in row["slices"])  # stopped by the CPU budget
        assert row["slices"][1]["step"] > row["slices"][0]["step"] > 0  # the second slice resumed
        assert 0.9 * budget <= row["budget_used_s"] <= budget + 10
        for key in ("target_share_a2b", "target_share_b2a", "target_share_real_a2b"):
            assert 0.0 <= row[key] <= 1.0
        assert row["cycle_l1_a2b"] > 0 and row["classifier_fd_a2b"] >= 0
        # the race's files beside the run, the run itself a normal run directory
        arm_dir = tmp_path / "runs" / name
        assert (arm_dir / "race_state.json").is_file() and (arm_dir / "race_eval.json").is_file()
        assert (arm_dir / "run" / "checkpoints" / "latest").is_dir()
    assert rows["paper"]["ratio"] == pytest.approx(1.0) or rows["paper"]["target_share_a2b"] == 0
    assert "paper (reference)" in proc.stdout and "A->B share %" in proc.stdout
    assert "held-out accuracy" in proc.stdout


def test_a_first_slice_starts_its_run_afresh_and_later_slices_resume(tmp_path):
    # A first slice killed before its first checkpoint leaves a run folder with nothing to resume: the
    # next first slice must replace it (--overwrite), not fail on "run directory is not empty".
    args = argparse.Namespace(minutes=1.0, clock="cpu", size=32, num_workers=0, ngf=4, n_blocks=1, ndf=4,
                              n_layers=2, device="cpu", seed=0, threads=1, log_every=5,
                              dataroot=tmp_path / "data")
    race = quality_race.Race(args, {"paper": quality_race.ARMS["paper"]}, tmp_path / "runs", print)
    first = race.command("paper", 30.0)
    assert "--overwrite" in first and "--resume" not in first
    race.state["paper"]["slices"].append({"used_s": 30.0})
    later = race.command("paper", 30.0)
    assert "--resume" in later and "--overwrite" not in later
