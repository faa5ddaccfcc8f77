"""``cyclegan train``, ``distill`` and ``presets``: flags become dotted config keys (the same keys
``--set`` takes), ``training.resolve_run_config`` merges them with the preset, ``--config`` and a
resumed run's saved config, and ``training.train`` runs it."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from cyclegan import training
from cyclegan.cli.choices import NameChoice
from cyclegan.config import list_presets
from cyclegan.devices import DEVICES, PRECISIONS
from cyclegan.distributed import from_environment
from cyclegan.losses import GAN_LOSSES
from cyclegan.networks import DISCRIMINATORS, GENERATORS
from cyclegan.schedules import LR_POLICIES
from cyclegan.training import TRAIN_STEPS

PRECISION_HELP = ("auto (default for a new run): bf16 autocast where the device computes bf16 natively "
                  "(Ampere+ GPUs, CPUs with AVX512-BF16 or AMX), else fp32; config.json records the choice, "
                  "so --resume keeps it.")

@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (config.json, log.jsonl, samples/, checkpoints/).")
@click.option("--dataroot", type=click.Path(path_type=Path),
              help="Folder with trainA/ and trainB/ (or trainB_<style>/), optionally testA/ testB/.")
@click.option("--data-a", type=click.Path(path_type=Path),
              help="Any folder of domain-A images (recursive), or an .npz from `cyclegan prep pack`.")
@click.option("--data-b", type=click.Path(path_type=Path),
              help="Any folder of domain-B images (recursive), or an .npz from `cyclegan prep pack`.")
@click.option("--preset", type=NameChoice(list(list_presets()), "preset"), metavar="NAME",
              help="Recipe name (see `cyclegan presets`; any case).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML config file (applied after the preset).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any config key, e.g. --set model.generator.n_blocks=6 (repeatable).")
@click.option("--epochs", type=int, help="Total epochs.")
@click.option("--max-steps", type=click.IntRange(min=1), metavar="N",
              help="Train at most N iterations in this invocation (with --resume: N more), then save.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), metavar="M",
              help="Stop and save after M minutes of training in this invocation; --resume goes on.")
@click.option("--batch-size", type=int)
@click.option("--lr", type=float, help="Initial learning rate of both Adam optimisers.")
@click.option("--crop-size", type=int, help="Training crop in pixels (data.crop_size; default 256).")
@click.option("--load-size", type=int,
              help="Images are resized to this before the random crop (data.load_size; default 286).")
@click.option("--seed", type=int)
@click.option("--num-workers", type=int, help="DataLoader worker processes.")
@click.option("--device", type=NameChoice(DEVICES))
@click.option("--precision", type=NameChoice(("auto", *PRECISIONS)),
              help=PRECISION_HELP)
@click.option("--channels-last/--no-channels-last", default=None)
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the networks.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its newest complete checkpoint (normally "
                   "checkpoints/latest).")
@click.option("--overwrite", is_flag=True, help="Replace the artefacts of an existing run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--init-from", type=click.Path(path_type=Path),
              help="Start networks from this run or checkpoint (any of G_A,G_B,D_A,D_B: a pre-trained "
                   "discriminator), or generators from a model file to fine-tune: an export, a `cyclegan "
                   "import` folder, pretrained:NAME or hf:OWNER/REPO (model.generator must match it).")
@click.option("--init-nets", metavar="NAMES",
              help="Networks --init-from copies, comma-separated (default D_A,D_B; from a model file G_A "
                   "and/or G_B: its A->B and B->A generators).")
@click.option("--model", "kind", type=NameChoice(list(TRAIN_STEPS), "model kind"),
              help="Model kind (model.kind): cyclegan (two-sided), or one-sided cut / fastcut (PatchNCE).")
# Choices from the registries, as --set model.generator.name=... etc. would take them.
@click.option("--generator", type=NameChoice(list(GENERATORS), "generator"),
              help="Generator architecture (model.generator.name).")
@click.option("--discriminator", type=NameChoice(list(DISCRIMINATORS), "discriminator"),
              help="Discriminator architecture (model.discriminator.name).")
@click.option("--gan-loss", type=NameChoice(list(GAN_LOSSES), "GAN loss"),
              help="Adversarial loss (loss.gan).")
@click.option("--lr-policy", type=NameChoice(list(LR_POLICIES), "LR policy"),
              help="Learning-rate schedule (optim.lr_policy).")
@click.option("--ema-decay", type=float, help="Keep an EMA of the generators (e.g. 0.999); 0 = off.")
@click.option("--diffaug", metavar="POLICY", help="DiffAugment before D: e.g. color,translation,cutout.")
@click.option("--eval-every", type=int, help="Score the test split every N epochs; keeps checkpoints/best.")
@click.option("--val-fraction", type=float,
              help="Hold out this share of the training images for --eval-every.")
@click.option("--inception-weights", type=click.Path(dir_okay=False),
              help="FID Inception weights file for --eval-every (default: torch hub's cache).")
def train(out, dataroot, data_a, data_b, preset, config_file, sets, epochs, max_steps, batch_size, lr, seed,
          num_workers, device, precision, channels_last, compile_, resume, overwrite, quiet, init_from,
          init_nets, kind, ema_decay, diffaug, eval_every, max_minutes, val_fraction, inception_weights,
          crop_size, load_size, generator, discriminator, gan_loss, lr_policy):
    """Train a CycleGAN (or CUT / FastCUT) on two folders of unpaired images."""
    overrides = {
        "data.dataroot": str(dataroot) if dataroot else None,
        "data.data_a": str(data_a) if data_a else None,
        "data.data_b": str(data_b) if data_b else None,
        "data.num_workers": num_workers,
        "data.crop_size": crop_size,
        "data.load_size": load_size,
        "train.epochs": epochs,
        "train.max_steps": training.stop_after(out, max_steps, resume=resume),
        "train.max_minutes": max_minutes,
        "train.batch_size": batch_size,
        "train.seed": seed,
        "train.device": device,
        "train.precision": precision,
        "train.channels_last": channels_last,
        "train.compile": compile_,
        "optim.lr": lr,
        "model.kind": kind,
        "model.generator.name": generator,
        "model.discriminator.name": discriminator,
        "loss.gan": gan_loss,
        "optim.lr_policy": lr_policy,
        "train.ema_decay": ema_decay,
        "train.diffaug": diffaug,
        "train.eval_every": eval_every,
        "data.val_fraction": val_fraction,
        "train.inception_weights": inception_weights,
        "train.init_from": str(init_from) if init_from else None,
        "train.init_nets": init_nets,
    }
    cfg = training.resolve_run_config(out, resume=resume, preset=preset, config_file=config_file,
                                      overrides=overrides, sets=sets)
    result = training.train(cfg, out, resume=resume, overwrite=overwrite, progress=not quiet)
    losses = ", ".join(f"{k} {result.last_log[k]:.3f}" for k in ("G_total", "D_A",
                                                                 "D_B") if k in result.last_log)
    # under torchrun, one summary line, not one per process; "nothing to do" has been said already
    is_main = from_environment().is_main  # torchrun's RANK, read in one place
    if is_main and result.status != "nothing_to_do":
        click.echo(f"{result.status}: step {result.step}, {losses or 'no log yet'}; run in {out}", err=True)
    if result.status == "interrupted":
        if is_main:
            click.echo(training.resume_hint(out), err=True)
        sys.exit(128 + (result.stop_signal or signal.SIGINT))  # 130 for Ctrl-C, 143 for SIGTERM


@click.command()
@click.option("--teacher", type=str,
              help="The trained generator to distil: run or checkpoint folder, safetensors export, "
                   "TorchScript file, pretrained:NAME or hf:OWNER/REPO (required for a new run).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory of the student (config.json, log.jsonl, samples/, checkpoints/).")
@click.option("--data-a", type=click.Path(path_type=Path),
              help="Images the student learns to translate (default: the teacher's training data).")
@click.option("--data-b", type=click.Path(path_type=Path),
              help="Real target-domain images for the discriminator (without it, with --data-a: the "
                   "teacher's outputs are its real images).")
@click.option("--student",
              help="Student generator: mobile_resnet (default) or animeganv2, or any generator name.")
@click.option("--student-ngf", type=click.IntRange(min=1), help="Student width (default: 16).")
@click.option("--direction", type=click.Choice(("a2b", "b2a")), default="a2b", show_default=True,
              help="Which generator of a two-sided teacher to distil.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any config key, e.g. --set distill.lambda_feature=0 (repeatable).")
@click.option("--epochs", type=int, help="Total epochs (default: the teacher's).")
@click.option("--max-steps", type=click.IntRange(min=1), metavar="N",
              help="Train at most N iterations in this invocation (with --resume: N more), then save.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), metavar="M",
              help="Stop and save after M minutes of training in this invocation; --resume goes on.")
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--seed", type=int)
@click.option("--device", type=NameChoice(DEVICES))
@click.option("--precision", type=NameChoice(("auto", *PRECISIONS)),
              help=PRECISION_HELP)
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the networks.")
@click.option("--ema-decay", type=float, help="Keep an EMA of the student (e.g. 0.999); 0 = off.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest complete checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace the artefacts of an existing run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def distill(teacher, out, data_a, data_b, student, student_ngf, direction, sets, epochs, max_steps,
            max_minutes,
            batch_size, lr, seed, device, precision, compile_, ema_decay, resume, overwrite, quiet):
    """Train a small student generator to reproduce a trained one (GAN Compression's distillation)."""
    overrides = {"train.epochs": epochs,
                 "train.max_steps": training.stop_after(out, max_steps, resume=resume),
                 "train.max_minutes": max_minutes,
                 "train.batch_size": batch_size, "optim.lr": lr, "train.seed": seed, "train.device": device,
                 "train.precision": precision, "train.compile": compile_, "train.ema_decay": ema_decay}
    cfg = training.distill_run_config(out, teacher=teacher, resume=resume, data_a=data_a, data_b=data_b,
                                      student=student, student_ngf=student_ngf, direction=direction,
                                      overrides=overrides, sets=sets)
    g = cfg.model.generator
    click.echo(f"distill: {g.name} ngf {g.ngf} learns {cfg.distill.teacher} ({cfg.distill.direction}); "
               f"D_B's real images: {'domain B' if cfg.distill.real == 'b' else 'the teacher outputs'}",
               err=True)
    result = training.train(cfg, out, resume=resume, overwrite=overwrite, progress=not quiet)
    losses = ", ".join(f"{k} {result.last_log[k]:.3f}" for k in ("distill_l1", "G_gan",
                                                                 "D_B") if k in result.last_log)
    if result.status != "nothing_to_do":
            click.echo(f"{result.status}: step {result.step}, {losses or 'no log yet'}; student in {out}",
                       err=True)
    if result.status == "interrupted":
        click.echo(training.resume_hint(out).replace("cyclegan train", "cyclegan distill"), err=True)
        sys.exit(128 + (result.stop_signal or signal.SIGINT))


@click.command()
def presets() -> None:
    """List the shipped recipes and what each reproduces."""
    table = list_presets()
    width = max(len(n) for n in table)
    for name, info in table.items():
        click.echo(f"{name:<{width}}  {info['description']}")
        if info["source"]:
            click.echo(f"{'':<{width}}  from: {info['source']}")

