"""The shared benchmark harness (bench/harness.py): statistics, ratios, tables, settings, workers.

No timings are asserted (they live in bench/); the worker tests drive tiny fake workers that speak
the harness protocol, so crashes and hangs are checked in well under a second each; one smoke run
of translate_speed.py (a 16x16 image, one worker) checks a real script end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import harness  # bench/ is not a package; its scripts import the harness by name

# ------------------------------------------------------------------------------------- statistics


def test_timing_stats_median_spread_and_per_unit():
    st = harness.timing_stats([{"wall_s": 4.0}, {"wall_s": 2.0}, {"wall_s": 3.0}], per=2)
    assert st["times"] == [2.0, 1.0, 1.5]
    assert st["median"] == 1.5
    assert st["best"] == 1.0
    assert st["spread"] == pytest.approx((2.0 - 1.0) / 1.5)
    assert st["used"] == [0, 1, 2]
    assert st["cpu_util"] is None and st["cpu_util_repeats"] is None


def test_timing_stats_sets_busy_repeats_aside():
    # two threads: a clean repeat has ~2 CPU seconds per wall second
    reps = [{"wall_s": 1.0, "cpu_s": 1.9}, {"wall_s": 10.0, "cpu_s": 2.0}, {"wall_s": 1.2, "cpu_s": 2.3}]
    st = harness.timing_stats(reps, threads=2)
    assert st["used"] == [0, 2]
    assert st["median"] == pytest.approx(1.1)  # the busy 10 s repeat is not in it
    assert st["best"] == 1.0
    assert st["cpu_util_repeats"] == pytest.approx([0.95, 0.1, 2.3 / 2.4])
    assert st["cpu_util_used"] == pytest.approx(4.2 / 2.2 / 2)
    assert st["cpu_util"] == pytest.approx(6.2 / 12.2 / 2)
    # GPU runs keep every repeat
    assert harness.timing_stats(reps, threads=2, drop_busy=False)["used"] == [0, 1, 2]


def test_timing_stats_all_busy_keeps_all_and_flags_it():
    reps = [{"wall_s": 2.0, "cpu_s": 1.0}, {"wall_s": 4.0, "cpu_s": 1.0}]
    st = harness.timing_stats(reps, threads=1)
    assert st["used"] == [0, 1]
    assert st["median"] == 3.0
    notes = harness.timing_notes(st, busy_check=True)
    assert "had 33% of its cores" in notes
    assert "spread 67%" in notes
    assert not harness.timing_notes(st, busy_check=False)[1:]  # no core note off CPU, only the spread
    with pytest.raises(ValueError):
        harness.timing_stats([])


def test_timing_notes_and_busy_footer():
    clean = harness.timing_stats([{"wall_s": 1.0, "cpu_s": 1.0}, {"wall_s": 1.05, "cpu_s": 1.0}])
    assert harness.timing_notes(clean, busy_check=True) == []
    mixed = harness.timing_stats([{"wall_s": 1.0, "cpu_s": 1.0}, {"wall_s": 9.0, "cpu_s": 1.0}])
    assert harness.timing_notes(mixed, busy_check=True) == ["1 of 2 repeats set aside (busy CPU)"]
    hw = {"loadavg_start": [0.1, 0, 0], "loadavg_end": [3.5, 0, 0], "cpu_usable": 2}
    assert harness.busy_footer([clean], hw) is None
    assert harness.busy_footer([clean, mixed], hw).startswith("note: 1 repeat(s)")
    busy = harness.timing_stats([{"wall_s": 2.0, "cpu_s": 1.0}])
    warning = harness.busy_footer([clean, busy], hw)
    assert warning.startswith("warning: other processes took CPU time during 1 row(s)")
    assert "0.1 at start, 3.5 at end, on 2 cores" in warning


def test_ratio_for_rates_and_times():
    assert harness.ratio(3.0, 2.0) == 1.5  # img/s: higher is better
    assert harness.ratio(1.0, 2.0, higher_is_better=False) == 2.0  # s/img: half the time = 2x
    assert harness.ratio(None, 2.0) is None
    assert harness.ratio(1.0, None) is None
    assert harness.ratio(1.0, 0.0) is None
    assert harness.fmt_ratio(1.5) == "1.50x" and harness.fmt_ratio(None) == "-"
    assert harness.fmt(None, ".2f") == "-" and harness.fmt(0.123, ".2f") == "0.12"


# ----------------------------------------------------------------------------------------- tables


def test_format_table_text_aligns_and_leaves_notes_unpadded():
    rows = [["fp32", "0.55", ""], ["bf16+cl", "10.25", "x"]]
    text = harness.format_table(["setting", "img/s", "notes"], rows, right={1})
    assert text.splitlines() == [
        "setting  img/s  notes",
        "-------  -----  -----",
        "fp32      0.55",
        "bf16+cl  10.25  x",
    ]


def test_format_table_pads_a_numeric_last_column():
    text = harness.format_table(["model", "L1"], [["cut", "0.5"], ["cyclegan", "10.25"]], right={1})
    assert text.splitlines()[2:] == ["cut         0.5", "cyclegan  10.25"]


def test_format_table_markdown():
    md = harness.format_table(["size", "s/img"], [["64x64", "0.02"]], right={1}, markdown=True)
    assert md.splitlines() == ["| size | s/img |", "| --- | ---: |", "| 64x64 | 0.02 |"]


# --------------------------------------------------------------------------------------- settings


def test_parse_setting_canonical_names_and_flags():
    flags = {"data": "data", "e2e": "data", "sync": "sync"}
    s = harness.parse_setting("cl+bf16+sync+data+compile@8", flags)
    assert (s.precision, s.channels_last, s.compile, s.batch) == ("bf16", True, True, 8)
    assert s.key == "compile+bf16+cl+data+sync@8"  # flags in the script's order, not the user's
    assert harness.parse_setting("e2e", flags).name == "fp32+data"
    assert harness.parse_setting("ref").is_reference
    assert harness.parse_setting("eager+fp32@1").is_reference
    assert not harness.parse_setting("fp32@2").is_reference
    assert s.overrides() == {"train.precision": "bf16", "train.channels_last": True, "train.compile": True,
                             "train.batch_size": 8}
    for bad, why in (("bf16+fp16", "two precisions"), ("fp32@0", "positive integer"), ("data", "'data'")):
        with pytest.raises(ValueError, match=why):
            harness.parse_setting(bad)


def test_parse_settings_puts_the_reference_first_once():
    keys = [s.key for s in harness.parse_settings("bf16, fp32@1,bf16,,cl@2")]
    assert keys == ["fp32@1", "bf16@1", "fp32+cl@2"]


def test_set_args_lowercases_booleans():
    assert harness.set_args({"train.compile": True, "data.crop_size": 64}) == [
        "--set", "train.compile=true", "--set", "data.crop_size=64"]


# ---------------------------------------------------------------------------------------- results


def test_write_results_records_git_hardware_and_rows(tmp_path):
    out = harness.write_results(tmp_path / "r" / "x.json", benchmark="x", hardware={"cpu_model": "c"},
                                config={"size": 8}, results=[{"ratio": 1.0}], total_wall_s=1.5)
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "x" and doc["hardware"] == {"cpu_model": "c"} and doc["config"] == {"size": 8}
    assert doc["results"] == [{"ratio": 1.0}] and doc["total_wall_s"] == 1.5
    assert set(doc["git"]) == {"commit", "dirty"}
    assert doc["git"]["commit"] is None or len(doc["git"]["commit"]) == 40


def test_hardware_line_names_cpu_torch_and_packages():
    hw = harness.hardware_info("cpu", packages=("pytest", "surely-not-installed-pkg"))
    line = harness.hardware_line(hw)
    assert line.startswith("CPU ") and f"torch {hw['torch']}" in line
    assert f"pytest {pytest.__version__}" in line and "surely-not-installed-pkg not installed" in line
    assert isinstance(hw["cpu_bf16"]["native"], bool)


# ---------------------------------------------------------------------------------------- workers

# A fake worker speaking the protocol without importing torch: ready, one reply per command.
FAKE = """
import json, sys, time
mode = sys.argv[1]
def send(o): print("noise before it @@bench " + json.dumps(o), flush=True)
if mode == "crash":
    print("boom: no such file", file=sys.stderr); sys.exit(3)
if mode == "hang":
    time.sleep(60)
send({"status": "ready", "n": 0})
for line in sys.stdin:
    if line.strip() == "repeat":
        send({"wall_s": 1.0, "cpu_s": 1.0})
    elif line.strip() == "finish":
        send({"peak": 7}); break
"""


@pytest.mark.parametrize("interleave", [True, False])
def test_run_workers_reports_each_job_and_survives_a_crash(interleave):
    jobs = [harness.Job(mode, [sys.executable, "-c", FAKE, mode], together=mode != "alone")
            for mode in ("ok", "crash", "alone")]
    log: list[str] = []
    runs = harness.run_workers(jobs, repeats=2, budget_s=120, interleave=interleave, log=log.append,
                               describe=lambda i, r: f"{len(r['repeats'])} repeats")
    ok, crash, alone = runs
    for r in (ok, alone):
        assert r["status"] == "ok" and r["final"] == {"peak": 7} and r["ready"]["status"] == "ready"
        assert r["repeats"] == [{"wall_s": 1.0, "cpu_s": 1.0}] * 2
    assert crash["status"] == "skipped" and "exited with code 3" in crash["reason"]
    assert "boom: no such file" in crash["reason"] and "boom" in crash["stderr_tail"]
    assert all(r["wall_s"] >= 0 for r in runs)
    assert "[1/3] ok: 2 repeats" in log and "[3/3] alone: 2 repeats" in log
    assert any(line.startswith("[2/3] crash: skipped: failed: worker exited") for line in log)
    if interleave:
        assert any(line.startswith("round 2/2 over 1 settings") for line in log)


def test_worker_past_its_budget_is_killed_and_reported():
    worker = harness.Worker([sys.executable, "-c", FAKE, "hang"], budget_s=0.5)
    reply = worker.request()  # waits at least 1 s, then kills the process group
    assert reply["status"] == "skipped"
    assert reply["reason"] == "failed: timed out after 0.5 s (raise --timeout)"
    assert worker.proc.poll() is not None


# ------------------------------------------------------------------------------------------ smoke


def test_translate_speed_smoke_runs_a_worker_and_writes_table_and_json(tmp_path):
    """The smallest real run of a script on the harness: one worker process, one tiny image."""
    out = tmp_path / "t.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "translate_speed.py"), "--device", "cpu", "--sizes", "16",
         "--repeats", "1", "--variants", "eager-fp32,fp16", "--out", str(out), "--markdown"],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| 16x16 | eager-fp32 (reference) |" in proc.stdout and "| 1.00x | 0 |" in proc.stdout
    assert "| 16x16 | fp16 | skipped |" in proc.stdout and "fp16 is a GPU path" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "translate_speed" and doc["config"]["sizes"] == [16]
    ref, fp16 = doc["results"]
    assert ref["status"] == "ok" and ref["ratio"] == 1.0 and ref["maxdiff_levels"] == 0
    assert len(ref["s_repeats"]) == 1 and ref["s_per_img"] > 0
    assert fp16["status"] == "skipped" and fp16["ratio"] is None
