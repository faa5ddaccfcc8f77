"""`cyclegan demo`: the whole pipeline offline (data drawn, trained, sampled, translated)."""

from click.testing import CliRunner

from cyclegan.cli import main


def test_demo_runs_end_to_end_and_never_reuses_a_folder(tmp_path):
    runner = CliRunner()
    out = tmp_path / "demo"
    first = runner.invoke(main, ["demo", "--out", str(out), "--steps", "12"])
    assert first.exit_code == 0, first.output
    assert "demo finished" in first.output
    assert len(list((out / "translated").glob("*.png"))) == 6
    assert (out / "run" / "checkpoints" / "latest" / "G_A.safetensors").is_file()
    assert (out / "run" / "samples" / "epoch_0000.png").is_file()
    second = runner.invoke(main, ["demo", "--out", str(out), "--steps", "2"])
    assert second.exit_code == 0, second.output
    assert (tmp_path / "demo-2" / "translated").is_dir()  # the first demo is left as it was
