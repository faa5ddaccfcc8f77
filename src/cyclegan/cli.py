"""The ``cyclegan`` command line: a thin layer that turns flags into library calls.

User errors (``CycleGANError``) print as one line on stderr and exit with status 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cyclegan.config import DEVICES, PRECISIONS
from cyclegan.errors import CycleGANError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CycleGANError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cyclegan")
def main() -> None:
    """Unpaired image-to-image translation (CycleGAN family): photos <-> Ghibli/anime/cartoon."""


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (config.json, log.jsonl, samples/, checkpoints/).")
@click.option("--dataroot", type=click.Path(path_type=Path),
              help="Folder with trainA/ and trainB/ (or trainB_<style>/), optionally testA/ testB/.")
@click.option("--data-a", type=click.Path(path_type=Path), help="Any folder of domain-A images (recursive).")
@click.option("--data-b", type=click.Path(path_type=Path), help="Any folder of domain-B images (recursive).")
@click.option("--preset", help="Recipe name (see `cyclegan presets`).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML config file (applied after the preset).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any config key, e.g. --set model.generator.n_blocks=6 (repeatable).")
@click.option("--epochs", type=int, help="Total epochs.")
@click.option("--max-steps", type=int, help="Stop after N iterations (smoke runs).")
@click.option("--batch-size", type=int)
@click.option("--lr", type=float, help="Initial learning rate of both Adam optimisers.")
@click.option("--seed", type=int)
@click.option("--num-workers", type=int, help="DataLoader worker processes.")
@click.option("--device", type=click.Choice(DEVICES))
@click.option("--precision", type=click.Choice(PRECISIONS))
@click.option("--channels-last/--no-channels-last", default=None)
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the networks.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/latest.")
@click.option("--overwrite", is_flag=True, help="Replace the artefacts of an existing run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(out, dataroot, data_a, data_b, preset, config_file, sets, epochs, max_steps, batch_size, lr, seed,
          num_workers, device, precision, channels_last, compile_, resume, overwrite, quiet):
    """Train a CycleGAN on two folders of unpaired images."""
    from cyclegan.training import resolve_run_config
    from cyclegan.training import train as run_training

    overrides = {
        "data.dataroot": str(dataroot) if dataroot else None,
        "data.data_a": str(data_a) if data_a else None,
        "data.data_b": str(data_b) if data_b else None,
        "data.num_workers": num_workers,
        "train.epochs": epochs,
        "train.max_steps": max_steps,
        "train.batch_size": batch_size,
        "train.seed": seed,
        "train.device": device,
        "train.precision": precision,
        "train.channels_last": channels_last,
        "train.compile": compile_,
        "optim.lr": lr,
    }
    cfg = resolve_run_config(out, resume=resume, preset=preset, config_file=config_file,
                             overrides=overrides, sets=sets)
    result = run_training(cfg, out, resume=resume, overwrite=overwrite, progress=not quiet)
    losses = ", ".join(f"{k} {result.last_log[k]:.3f}" for k in ("G_total", "D_A", "D_B") if k in result.last_log)
    click.echo(f"{result.status}: step {result.step}, {losses or 'no log yet'}; run in {out}", err=True)
    if result.status == "interrupted":
        click.echo(f"checkpoint saved; continue with: cyclegan train --out {out} --resume", err=True)
        sys.exit(130)


@main.command()
def presets() -> None:
    """List the shipped recipes and what each reproduces."""
    from cyclegan.config import list_presets

    table = list_presets()
    width = max(len(n) for n in table)
    for name, info in table.items():
        click.echo(f"{name:<{width}}  {info['description']}")
        if info["source"]:
            click.echo(f"{'':<{width}}  from: {info['source']}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to put the demo (default: a new runs/demo* folder).")
@click.option("--steps", type=int, default=None, help="Training iterations (default: the demo's own).")
@click.option("--device", type=click.Choice(DEVICES), default="cpu")
def demo(out, steps, device) -> None:
    """Offline end-to-end demo: make two synthetic domains, train, sample, translate."""
    from cyclegan.demo import run_demo

    summary = run_demo(out, steps=steps, device=device, echo=lambda m: click.echo(m, err=True))
    click.echo(summary)


if __name__ == "__main__":  # pragma: no cover
    main()
