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
    assert [p.name for p in (out / "run" / "checkpoints").iterdir()] == ["latest"]  # 12 steps: no epoch ended
    assert (out / "run" / "samples" / "epoch_0000.png").is_file()
    second = runner.invoke(main, ["demo", "--out", str(out), "--steps", "2"])
    assert second.exit_code == 0, second.output
    assert (tmp_path / "demo-2" / "translated").is_dir()  # the first demo is left as it was


def test_demo_keeps_one_small_epoch_checkpoint_at_most(tmp_path):
    from cyclegan.demo import DEMO_STEPS, demo_config

    cfg = demo_config(tmp_path, steps=DEMO_STEPS, device="cpu")
    epochs = cfg.train.epochs
    written = [e for e in range(1, epochs + 1) if e % cfg.train.save_epoch_every == 0 or e == epochs]
    kept = written[-cfg.train.keep_epochs:] if cfg.train.keep_epochs else written
    assert len(kept) <= 1 and not cfg.train.epoch_checkpoint_state


def test_readme_describes_the_network_the_demo_trains(tmp_path):
    from pathlib import Path

    from cyclegan.demo import DEMO_STEPS, demo_config

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Try it: the offline demo", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())  # line breaks do not matter
    cfg = demo_config(tmp_path, steps=DEMO_STEPS, device="cpu")
    g, d = cfg.model.generator, cfg.model.discriminator
    for fact in (f"ngf {g.ngf}", f"{g.n_blocks} residual blocks", f"ndf {d.ndf}",
                 f"{d.n_layers}-layer PatchGAN",
                 f"{DEMO_STEPS} iterations", f"{cfg.train.epochs} epochs", f"{cfg.data.crop_size}px"):
        assert fact in section, fact
