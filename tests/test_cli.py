"""The ``cyclegan`` command line, end to end: a tiny training run writes every run-directory file, and
every bad input gives one ``error:`` line and a non-zero exit without touching an existing run.

Runs use the ``tiny`` preset on 32px images the test draws itself; one short run is trained once
per module and copied wherever a test needs a finished run directory to break.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from cyclegan.checkpoint import load_generator
from cyclegan.cli import main
from cyclegan.cli import translate as cli_translate
from cyclegan.config import Config, config_from_dict
from cyclegan.synthetic import make_bad_files, make_unpaired_dataset
from cyclegan.translate import files as translate_files

# 4 images per domain at batch 1 = 4 steps per epoch, so 12 steps finish three epochs.
N_IMAGES = 4
# TensorBoard's import costs seconds and adds nothing to what these tests check.
FAST = ("--preset", "tiny", "--quiet", "--set", "train.tensorboard=false")


def _runner() -> CliRunner:
    # Click 8.1 mixes stderr into stdout unless asked; 8.2+ always keeps them apart (and has no flag).
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def cli(*args):
    return _runner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def assert_clean_error(result, *needles: str) -> str:
    """Non-zero exit, exactly one ``error: ...`` line on stderr containing every needle, no traceback."""
    assert result.exit_code != 0, result.output
    # A crash surfaces as the original exception; a handled user error as SystemExit from ctx.exit.
    assert isinstance(result.exception, SystemExit), f"crashed: {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes: compared before and after to prove nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    return make_unpaired_dataset(tmp_path_factory.mktemp("data"), n_train=N_IMAGES, n_test=0, size=32, seed=0)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, dataroot):
    """One 12-step run shared by the read-only end-to-end checks; others copy it before changing it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    result = cli("train", "--dataroot", dataroot, "--out", out, *FAST, "--max-steps", 12,
                 "--set", "train.save_latest_every=5", "--set", "train.log_every=4")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(trained_run[0], dst)
    return dst


# ------------------------------------------------------------------------------------- end to end


def test_train_reports_where_it_stopped(trained_run):
    out, result = trained_run
    assert "max_steps: step 12" in result.stderr and str(out) in result.stderr


def test_run_dir_config_json_rebuilds_the_config(trained_run, dataroot):
    out, _ = trained_run
    cfg = config_from_dict(json.loads((out / "config.json").read_text()))
    assert isinstance(cfg, Config)
    # The full resolved config: preset values, flags and --set overrides all recorded.
    assert cfg.preset == "tiny" and cfg.model.generator.ngf == 8
    assert cfg.train.max_steps == 12 and cfg.train.save_latest_every == 5 and cfg.train.log_every == 4
    assert cfg.data.dataroot == str(dataroot)


def test_run_dir_log_jsonl(trained_run):
    out, _ = trained_run
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "lr" in r]
    assert [r["step"] for r in steps] == [4, 8, 12]  # log_every=4
    for r in steps:
        for key in ("epoch", "lr", "img_per_s", "G_total", "D_A", "D_B", "cycle_A", "cycle_B",
                    "G_A_gan", "G_B_gan", "idt_A", "idt_B"):
            assert isinstance(r[key], (int, float)), key
        assert r["img_per_s"] > 0
    assert [r["epoch"] for r in steps] == [1, 2, 3]
    assert records[0]["event"] == "start" and records[-1] == {**records[-1], "event": "stop", "step": 12}


def test_run_dir_samples(trained_run):
    out, _ = trained_run
    names = sorted(p.name for p in (out / "samples").glob("*.png"))
    assert names[0] == "epoch_0000.png" and "epoch_0001.png" in names
    with Image.open(out / "samples" / "epoch_0001.png") as img:
        # 6 rows (real A | fake B | rec A | real B | fake A | rec B) x n_samples=3 tiles of 32px, 2px padding.
        assert img.size == (3 * 34 + 2, 6 * 34 + 2)


def test_run_dir_checkpoints(trained_run):
    out, _ = trained_run
    latest = out / "checkpoints" / "latest"
    for name in ("config.json", "G_A.safetensors", "G_B.safetensors", "D_A.safetensors", "D_B.safetensors",
                 "state.pt"):
        assert (latest / name).is_file(), name
    # Training state is tensors and plain containers only: no pickled code.
    state = torch.load(latest / "state.pt", weights_only=True)
    assert (state["step"], state["epoch"]) == (12, 4)
    # Enough steps to finish epochs: epoch checkpoints too (tiny saves every epoch).
    assert (out / "checkpoints" / "epoch_0001" / "G_A.safetensors").is_file()
    assert (out / "checkpoints" / "epoch_0003").is_dir()


def test_generator_rebuilds_from_the_checkpoint_alone(trained_run):
    out, _ = trained_run
    saved = load_file(str(out / "checkpoints" / "latest" / "G_A.safetensors"))
    net, cfg = load_generator(out, direction="a2b")  # no flags: everything from the checkpoint
    assert cfg.model.generator.ngf == 8
    for k, v in net.state_dict().items():
        assert torch.equal(v, saved[k]), k
    with torch.no_grad():
        y = net(torch.zeros(1, 3, 32, 32))
    assert y.shape == (1, 3, 32, 32)
    b2a, _ = load_generator(out / "checkpoints" / "epoch_0001", direction="b2a")
    assert b2a(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_resume_continues_from_latest(run_copy):
    # No data flags: a resumed run takes everything from its config.json; --max-steps is a budget of
    # this invocation, so a run at step 12 trains 2 more.
    result = cli("train", "--out", run_copy, "--resume", "--max-steps", 2, "--quiet")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "this invocation: from iteration 12, 2 iterations (--max-steps), to iteration 14" in result.stderr
    assert "max_steps: step 14" in result.stderr
    records = [json.loads(line) for line in (run_copy / "log.jsonl").read_text().splitlines()]
    resumes = [r for r in records if r.get("event") == "resume"]
    assert len(resumes) == 1 and resumes[0]["step"] == 12  # appended to the old log, not a new one
    assert records[0]["event"] == "start"
    assert torch.load(run_copy / "checkpoints" / "latest" / "state.pt", weights_only=True)["step"] == 14


def test_train_starts_with_a_banner(trained_run):
    _, result = trained_run
    lines = result.stderr.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("run: ")):]  # after any warnings
    assert lines[0].startswith("run: cyclegan on ") and "(auto: " in lines[0]  # a new run: --precision auto
    assert lines[1].startswith("recipe: preset tiny, with ")
    assert lines[2] == "images: 4 A, 4 B; 4 iterations per epoch, 4 epochs = 16 iterations"
    assert lines[3] == "this invocation: 12 iterations (--max-steps), to iteration 12"


def test_resume_at_the_end_of_the_run_has_nothing_to_do(run_copy):
    # 12 steps of 4 per epoch: --epochs 3 is already done
    before = snapshot(run_copy)
    result = cli("train", "--out", run_copy, "--resume", "--epochs", 3, "--quiet")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.stderr.splitlines()[-1] == ("nothing to do: the run has already trained all its 3 epochs "
                                              "(12 iterations); to train on, resume with a larger --epochs")
    assert snapshot(run_copy) == before


def test_names_match_in_any_case_and_near_misses_are_named(tmp_path, dataroot):
    out = tmp_path / "run"
    # any case is the same name: the refusal is about the data, not the names
    result = cli("train", "--dataroot", tmp_path / "absent", "--out", out, "--preset", "TINY",
                 "--generator", "ResNet", "--gan-loss", "LSGAN", "--precision", "Auto", "--quiet")
    assert_clean_error(result, "absent")
    for args, needles in [
        (("--preset", "ghilbi"), ("unknown preset 'ghilbi'", "did you mean 'ghibli'", "choose from")),
        (("--generator", "resnt"), ("unknown generator 'resnt'", "did you mean 'resnet'")),
        (("--model", "cyclgan"), ("unknown model kind 'cyclgan'", "did you mean 'cyclegan'")),
        (("--set", "model.generator.name=resnt"), ("model.generator.name", "did you mean 'resnet'")),
    ]:
        assert_clean_error(cli("train", "--dataroot", dataroot, "--out", out, *args, "--quiet"), *needles)
    assert not out.exists()


def test_train_with_data_a_data_b_and_bad_files_mixed_in(tmp_path, dataroot):
    # Any two folders (recursive), with broken files hidden among the images: training goes on and
    # ONE warning names every skipped file and the count.
    a, b = tmp_path / "photos", tmp_path / "ghibli"
    shutil.copytree(dataroot / "trainA", a / "nested")
    shutil.copytree(dataroot / "trainB", b)
    bad = make_bad_files(a)
    out = tmp_path / "run"
    result = cli("train", "--data-a", a, "--data-b", b, "--out", out, *FAST, "--max-steps", 2)
    assert result.exit_code == 0, result.output + repr(result.exception)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 1, result.stderr
    assert f"skipped {len(bad)} unreadable" in warnings[0]
    for path in bad.values():
        assert str(path) in warnings[0]
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert (start["images_a"], start["images_b"]) == (N_IMAGES, N_IMAGES)
    assert (out / "checkpoints" / "latest" / "G_A.safetensors").is_file()


def test_train_kaggle_ghibli_layout(tmp_path, dataroot):
    root = tmp_path / "real2ghibli"
    shutil.copytree(dataroot / "trainA", root / "trainA")
    shutil.copytree(dataroot / "trainB", root / "trainB_ghibli")
    out = tmp_path / "run"
    result = cli("train", "--dataroot", root, "--out", out, *FAST, "--max-steps", 1)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (out / "checkpoints" / "latest" / "state.pt").is_file()


def test_presets_lists_the_recipes():
    result = cli("presets")
    assert result.exit_code == 0
    names = {line.split()[0] for line in result.stdout.splitlines() if line and not line[0].isspace()}
    assert {"cyclegan", "ghibli", "tiny"} <= names


def test_module_entry_point_in_a_real_process(tmp_path):
    # `python -m cyclegan` is a real console entry: user errors exit 1 with one line on stderr.
    proc = subprocess.run(
        [sys.executable, "-m", "cyclegan", "train", "--dataroot", str(tmp_path / "missing"),
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: dataroot folder not found"]


# ------------------------------------------------------------------------- bad input: clear errors


def test_missing_dataroot(tmp_path):
    out = tmp_path / "run"
    assert_clean_error(cli("train", "--dataroot", tmp_path / "nope", "--out", out, *FAST), "nope")
    assert not out.exists()  # failed before any work: not even an empty run dir is left behind


def test_empty_domain_folder(tmp_path, dataroot):
    (tmp_path / "empty").mkdir()
    result = cli("train", "--data-a", tmp_path / "empty", "--data-b", dataroot / "trainB",
                 "--out", tmp_path / "run", *FAST)
    assert_clean_error(result, str(tmp_path / "empty"), "no images found")


def test_fewer_images_than_batch_size(tmp_path, dataroot):
    result = cli("train", "--dataroot", dataroot, "--out", tmp_path / "run", *FAST, "--batch-size",
                 N_IMAGES + 1)
    assert_clean_error(result, str(dataroot / "trainA"), f"batch size {N_IMAGES + 1}")


def test_all_corrupt_domain(tmp_path, dataroot):
    make_bad_files(tmp_path / "broken")
    result = cli("train", "--data-a", tmp_path / "broken", "--data-b", dataroot / "trainB",
                 "--out", tmp_path / "run", *FAST)
    assert_clean_error(result, str(tmp_path / "broken"), "0 usable", "unreadable")


def test_data_a_without_data_b(tmp_path, dataroot):
    result = cli("train", "--data-a", dataroot / "trainA", "--out", tmp_path / "run", *FAST)
    assert_clean_error(result, "--data-b")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--preset", "nope"), ("'nope'", "tiny", "ghibli")),
        (("--set", "model.generator.name=nope"), ("model.generator.name", "'nope'", "resnet", "unet_256")),
        (("--set", "train.nope=1"), ("train.nope",)),
        (("--set", "train.epochs=abc"), ("train.epochs", "integer", "'abc'")),
        (("--set", "data.preprocess=squash"), ("data.preprocess", "scale_width")),
        (("--set", "nonsense"), ("nonsense", "section.key=value")),
    ],
)
def test_bad_config_values(tmp_path, dataroot, args, needles):
    out = tmp_path / "run"
    assert_clean_error(cli("train", "--dataroot", dataroot, "--out", out, "--preset", "tiny", *args),
                       *needles)
    assert not out.exists()


def test_invalid_yaml_config_file(tmp_path, dataroot):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2\n")
    result = cli("train", "--dataroot", dataroot, "--out", tmp_path / "run", *FAST, "--config", bad)
    assert_clean_error(result, str(bad), "invalid YAML")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(tmp_path, dataroot):
    out = tmp_path / "run"
    assert_clean_error(cli("train", "--dataroot", dataroot, "--out", out, *FAST, "--device", "cuda"), "cuda")
    assert not out.exists()


# --------------------------------------------------------------- run directories are never lost


def test_resume_without_a_run(tmp_path):
    assert_clean_error(cli("train", "--out", tmp_path / "absent", "--resume", *FAST), "nothing to resume")
    (tmp_path / "empty").mkdir()
    assert_clean_error(cli("train", "--out", tmp_path / "empty", "--resume", *FAST), "nothing to resume")


def test_resume_run_that_never_saved_a_checkpoint(run_copy):
    # A run killed before its first save has config.json and a log but no checkpoints/.
    shutil.rmtree(run_copy / "checkpoints")
    before = snapshot(run_copy)
    assert_clean_error(cli("train", "--out", run_copy, "--resume", *FAST), str(run_copy), "no checkpoint yet")
    assert snapshot(run_copy) == before


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign_pickle(path: Path) -> None:
    # Loadable only with weights_only=False: torch's refusal is an 8-line message.
    import datetime

    torch.save({"when": datetime.date(2024, 1, 1)}, path)


def _wrong_structure(path: Path) -> None:
    torch.save([1, 2, 3], path)  # a valid tensors-only file that is not a training state


@pytest.mark.parametrize(
    ("file", "damage"),
    [
        ("G_A.safetensors", _truncate),
        ("D_B.safetensors", lambda p: p.write_bytes(b"")),
        ("state.pt", _truncate),
        ("state.pt", _foreign_pickle),
        ("state.pt", _wrong_structure),
    ],
    ids=["G_A-truncated", "D_B-empty", "state-truncated", "state-foreign-pickle", "state-wrong-structure"],
)
def test_resume_with_corrupt_checkpoint_touches_nothing(run_copy, file, damage):
    target = run_copy / "checkpoints" / "latest" / file
    damage(target)
    before = snapshot(run_copy)
    assert_clean_error(cli("train", "--out", run_copy, "--resume", *FAST), str(target))
    assert snapshot(run_copy) == before


def test_resume_with_incompatible_config_is_refused(run_copy):
    before = snapshot(run_copy)
    result = cli("train", "--out", run_copy, "--resume", *FAST, "--set", "model.generator.ngf=16")
    assert_clean_error(result, "model.generator.ngf", "8", "16")
    assert snapshot(run_copy) == before


def test_new_run_into_existing_run_dir_is_refused(run_copy, dataroot):
    before = snapshot(run_copy)
    result = cli("train", "--dataroot", dataroot, "--out", run_copy, *FAST, "--max-steps", 1)
    assert_clean_error(result, str(run_copy), "--resume", "--overwrite")
    assert snapshot(run_copy) == before


def test_overwrite_starts_over(run_copy, dataroot):
    result = cli("train", "--dataroot", dataroot, "--out", run_copy, *FAST, "--max-steps", 2, "--overwrite")
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = [json.loads(line) for line in (run_copy / "log.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["step"] == 0
    assert max(r["step"] for r in records) == 2  # nothing left from the 12-step run
    assert not (run_copy / "checkpoints" / "epoch_0001").exists()  # 2 steps do not finish an epoch
    assert torch.load(run_copy / "checkpoints" / "latest" / "state.pt", weights_only=True)["step"] == 2
    assert not (run_copy / "samples" / "epoch_0003.png").exists()


def test_overwrite_with_bad_data_keeps_the_old_run(run_copy, tmp_path):
    # The data is checked before --overwrite deletes anything: a typo must not cost the old run.
    before = snapshot(run_copy)
    result = cli("train", "--dataroot", tmp_path / "typo", "--out", run_copy, *FAST, "--overwrite")
    assert_clean_error(result, "typo")
    assert snapshot(run_copy) == before


def test_overwrite_refuses_a_folder_with_other_files(run_copy, dataroot):
    (run_copy / "thesis.tex").write_text("months of work")
    before = snapshot(run_copy)
    result = cli("train", "--dataroot", dataroot, "--out", run_copy, *FAST, "--overwrite")
    assert_clean_error(result, "thesis.tex", "not run artefacts")
    assert snapshot(run_copy) == before


def test_evaluate_rejects_batch_size_zero_cleanly(tmp_path):
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path), "--batch-size", "0"])
    assert res.exit_code != 0 and "Traceback" not in res.output and "batch-size" in res.output


@pytest.mark.parametrize(
    "args, expected",
    [
        (["translate", "x.png", "--model", "m", "--precision", "fast"], "Invalid value for '--precision'"),
        (["trian"], "No such command 'trian'"),
        (["train", "--bogus"], "No such option '--bogus'"),
        (["--bogus"], "No such option '--bogus'"),
        (["prep", "pack"], "Missing argument 'IN_DIR'"),
    ],
)
def test_flag_errors_are_one_line_with_exit_2(args, expected):
    result = _runner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert "--help" in lines[0]


def test_a_group_without_a_command_shows_its_help():
    result = _runner().invoke(main, ["analyze"])
    assert "fourier" in result.output and "error:" not in result.output


# ------------------------------------------------------------------ translate: --out checked first


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if translate loads a model: a wrong --out must be refused before that."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(cli_translate.Translator, "from_checkpoint", refuse)


def test_translate_refuses_a_wrong_out_before_loading_the_model(tmp_path, dataroot, no_model_load,
                                                                monkeypatch):
    images = dataroot / "trainA"
    one = min(images.iterdir())
    text = tmp_path / "existing.txt"
    text.write_text("keep me")
    folder_named_like_a_file = tmp_path / "result.png"
    folder_named_like_a_file.mkdir()
    cases = [
        ((str(images), "--out", text),
         ("existing.txt", "is a file, but a folder or pattern needs an output folder")),
        ((str(images), str(one), "--out", text), ("is a file, but 2 inputs need an output folder",)),
        ((str(one), "--out", folder_named_like_a_file),
         ("result.png", "is a folder", "names the output file")),
        ((str(images), "--out", text / "sub"), ("existing.txt is a file, not a folder",)),
    ]
    for args, needles in cases:
        assert_clean_error(cli("translate", *args, "--model", tmp_path / "no-model"), *needles)
    assert text.read_text() == "keep me" and not any(folder_named_like_a_file.iterdir())
    # a folder this process may not write in (root writes anywhere, so the permission is what is checked)
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(translate_files.os, "access", lambda path, mode: Path(path) != locked)
    assert_clean_error(cli("translate", str(images), "--out", locked / "out", "--model",
                           tmp_path / "no-model"),
                       "cannot write in", "permission denied")
