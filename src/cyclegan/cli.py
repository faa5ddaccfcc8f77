"""The ``cyclegan`` command line: a thin layer that turns flags into library calls.

User errors (``CycleGANError``) print as one line on stderr and exit with status 1; flag errors
(unknown option, bad choice, missing argument) print as one line and exit with status 2, as click's
own usage errors do; Ctrl-C exits 130 and SIGTERM 143 (128 + the signal number).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from cyclegan.config import MODEL_KINDS
from cyclegan.devices import DEVICES, PRECISIONS, TRANSLATE_PRECISIONS
from cyclegan.errors import CycleGANError, followups
from cyclegan.quantize import DEFAULT_LIMITS as DEFAULT_INT8_LIMITS
from cyclegan.temporal import TEMPORAL_MODES


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# A group called without a command: click shows its help (older click does so without raising).
_SHOW_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _usage_error(ctx: click.Context, e: click.UsageError) -> None:
    if isinstance(e, _SHOW_HELP):
        raise e
    # click prints the usage block, a hint and the error on four lines; keep the error and the hint
    # on one, like every other error of this command.
    where = e.ctx.command_path if e.ctx is not None else ctx.command_path
    click.echo(f"error: {_one_line(e.format_message())} (see '{where} --help')", err=True)
    ctx.exit(e.exit_code)


class _Group(click.Group):
    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            _usage_error(ctx, e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            _usage_error(ctx, e)
        except CycleGANError as e:
            # One line, always: messages may embed library text with newlines (torch.load's is 8 lines).
            click.echo(f"error: {_one_line(str(e))}", err=True)
            _echo_followups(e)
            ctx.exit(1)
        except KeyboardInterrupt as e:
            click.echo("interrupted", err=True)
            _echo_followups(e)
            ctx.exit(128 + getattr(e, "signum", signal.SIGINT))  # 130 for Ctrl-C, 143 for a second SIGTERM


def _echo_followups(error: BaseException) -> None:
    """Problems met while cleaning up after ``error`` (a stop record on a full disk): after it, one line each."""
    for line in followups(error):
        click.echo(f"warning: {_one_line(line)}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cyclegan")
def main() -> None:
    """Unpaired image-to-image translation (CycleGAN family): photos <-> Ghibli/anime/cartoon."""


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (config.json, log.jsonl, samples/, checkpoints/).")
@click.option("--dataroot", type=click.Path(path_type=Path),
              help="Folder with trainA/ and trainB/ (or trainB_<style>/), optionally testA/ testB/.")
@click.option("--data-a", type=click.Path(path_type=Path),
              help="Any folder of domain-A images (recursive), or an .npz from `cyclegan prep pack`.")
@click.option("--data-b", type=click.Path(path_type=Path),
              help="Any folder of domain-B images (recursive), or an .npz from `cyclegan prep pack`.")
@click.option("--preset", help="Recipe name (see `cyclegan presets`).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML config file (applied after the preset).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any config key, e.g. --set model.generator.n_blocks=6 (repeatable).")
@click.option("--epochs", type=int, help="Total epochs.")
@click.option("--max-steps", type=int, help="Stop after N iterations (smoke runs).")
@click.option("--max-minutes", type=float, help="Stop and save after this much training time.")
@click.option("--batch-size", type=int)
@click.option("--lr", type=float, help="Initial learning rate of both Adam optimisers.")
@click.option("--crop-size", type=int, help="Training crop in pixels (data.crop_size; default 256).")
@click.option("--load-size", type=int,
              help="Images are resized to this before the random crop (data.load_size; default 286).")
@click.option("--seed", type=int)
@click.option("--num-workers", type=int, help="DataLoader worker processes.")
@click.option("--device", type=click.Choice(DEVICES))
@click.option("--precision", type=click.Choice(PRECISIONS))
@click.option("--channels-last/--no-channels-last", default=None)
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the networks.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest complete checkpoint (normally checkpoints/latest).")
@click.option("--overwrite", is_flag=True, help="Replace the artefacts of an existing run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--init-from", type=click.Path(path_type=Path),
              help="Start some networks from this earlier run or checkpoint (a pre-trained discriminator).")
@click.option("--init-nets", metavar="NAMES",
              help="Networks --init-from copies, comma-separated (default D_A,D_B).")
@click.option("--model", "kind", type=click.Choice(MODEL_KINDS),
              help="cyclegan (two-sided), or one-sided cut / fastcut (PatchNCE).")
@click.option("--ema-decay", type=float, help="Keep an EMA of the generators (e.g. 0.999); 0 = off.")
@click.option("--diffaug", metavar="POLICY", help="DiffAugment before D: e.g. color,translation,cutout.")
@click.option("--eval-every", type=int, help="Score the test split every N epochs; keeps checkpoints/best.")
@click.option("--val-fraction", type=float, help="Hold out this share of the training images for --eval-every.")
@click.option("--inception-weights", type=click.Path(dir_okay=False),
              help="FID Inception weights file for --eval-every (default: torch hub's cache).")
def train(out, dataroot, data_a, data_b, preset, config_file, sets, epochs, max_steps, batch_size, lr, seed,
          num_workers, device, precision, channels_last, compile_, resume, overwrite, quiet, init_from,
          init_nets, kind, ema_decay, diffaug, eval_every, max_minutes, val_fraction, inception_weights,
          crop_size, load_size):
    """Train a CycleGAN (or CUT / FastCUT) on two folders of unpaired images."""
    from cyclegan.training import resolve_run_config, resume_hint
    from cyclegan.training import train as run_training

    overrides = {
        "data.dataroot": str(dataroot) if dataroot else None,
        "data.data_a": str(data_a) if data_a else None,
        "data.data_b": str(data_b) if data_b else None,
        "data.num_workers": num_workers,
        "data.crop_size": crop_size,
        "data.load_size": load_size,
        "train.epochs": epochs,
        "train.max_steps": max_steps,
        "train.max_minutes": max_minutes,
        "train.batch_size": batch_size,
        "train.seed": seed,
        "train.device": device,
        "train.precision": precision,
        "train.channels_last": channels_last,
        "train.compile": compile_,
        "optim.lr": lr,
        "model.kind": kind,
        "train.ema_decay": ema_decay,
        "train.diffaug": diffaug,
        "train.eval_every": eval_every,
        "data.val_fraction": val_fraction,
        "train.inception_weights": inception_weights,
        "train.init_from": str(init_from) if init_from else None,
        "train.init_nets": init_nets,
    }
    cfg = resolve_run_config(out, resume=resume, preset=preset, config_file=config_file,
                             overrides=overrides, sets=sets)
    result = run_training(cfg, out, resume=resume, overwrite=overwrite, progress=not quiet)
    losses = ", ".join(f"{k} {result.last_log[k]:.3f}" for k in ("G_total", "D_A", "D_B") if k in result.last_log)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary line, not one per process
        click.echo(f"{result.status}: step {result.step}, {losses or 'no log yet'}; run in {out}", err=True)
    if result.status == "interrupted":
        if os.environ.get("RANK", "0") == "0":
            click.echo(resume_hint(out), err=True)
        sys.exit(128 + (result.stop_signal or signal.SIGINT))  # 130 for Ctrl-C, 143 for SIGTERM


@main.command()
@click.option("--teacher", type=str,
              help="The trained generator to distil: run or checkpoint folder, safetensors export, TorchScript "
                   "file, pretrained:NAME or hf:OWNER/REPO (required for a new run).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory of the student (config.json, log.jsonl, samples/, checkpoints/).")
@click.option("--data-a", type=click.Path(path_type=Path),
              help="Images the student learns to translate (default: the teacher's training data).")
@click.option("--data-b", type=click.Path(path_type=Path),
              help="Real target-domain images for the discriminator (without it, with --data-a: the teacher's "
                   "outputs are its real images).")
@click.option("--student", help="Student generator: mobile_resnet (default) or animeganv2, or any generator name.")
@click.option("--student-ngf", type=click.IntRange(min=1), help="Student width (default: 16).")
@click.option("--direction", type=click.Choice(("a2b", "b2a")), default="a2b", show_default=True,
              help="Which generator of a two-sided teacher to distil.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any config key, e.g. --set distill.lambda_feature=0 (repeatable).")
@click.option("--epochs", type=int, help="Total epochs (default: the teacher's).")
@click.option("--max-steps", type=int, help="Stop after N iterations.")
@click.option("--max-minutes", type=float, help="Stop and save after this much training time.")
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--seed", type=int)
@click.option("--device", type=click.Choice(DEVICES))
@click.option("--precision", type=click.Choice(PRECISIONS))
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the networks.")
@click.option("--ema-decay", type=float, help="Keep an EMA of the student (e.g. 0.999); 0 = off.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest complete checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace the artefacts of an existing run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def distill(teacher, out, data_a, data_b, student, student_ngf, direction, sets, epochs, max_steps, max_minutes,
            batch_size, lr, seed, device, precision, compile_, ema_decay, resume, overwrite, quiet):
    """Train a small student generator to reproduce a trained one (GAN Compression's distillation)."""
    from cyclegan.training import distill_run_config, resume_hint
    from cyclegan.training import train as run_training

    overrides = {"train.epochs": epochs, "train.max_steps": max_steps, "train.max_minutes": max_minutes,
                 "train.batch_size": batch_size, "optim.lr": lr, "train.seed": seed, "train.device": device,
                 "train.precision": precision, "train.compile": compile_, "train.ema_decay": ema_decay}
    cfg = distill_run_config(out, teacher=teacher, resume=resume, data_a=data_a, data_b=data_b, student=student,
                             student_ngf=student_ngf, direction=direction, overrides=overrides, sets=sets)
    g = cfg.model.generator
    click.echo(f"distill: {g.name} ngf {g.ngf} learns {cfg.distill.teacher} ({cfg.distill.direction}); "
               f"D_B's real images: {'domain B' if cfg.distill.real == 'b' else 'the teacher outputs'}", err=True)
    result = run_training(cfg, out, resume=resume, overwrite=overwrite, progress=not quiet)
    losses = ", ".join(f"{k} {result.last_log[k]:.3f}" for k in ("distill_l1", "G_gan", "D_B") if k in result.last_log)
    click.echo(f"{result.status}: step {result.step}, {losses or 'no log yet'}; student in {out}", err=True)
    if result.status == "interrupted":
        click.echo(resume_hint(out).replace("cyclegan train", "cyclegan distill"), err=True)
        sys.exit(128 + (result.stop_signal or signal.SIGINT))


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


@main.command("evaluate")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="Run directory (its newest checkpoint) or a checkpoint directory.")
@click.option("--dataroot", type=click.Path(path_type=Path),
              help="Folder with testA/ and testB/ (default: the dataroot saved in the checkpoint).")
@click.option("--test-a", type=click.Path(path_type=Path), help="Folder of domain-A test images.")
@click.option("--test-b", type=click.Path(path_type=Path), help="Folder of domain-B test images.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the JSON (default: <run>/eval.json).")
@click.option("--inception-weights", type=click.Path(dir_okay=False, path_type=Path),
              help="pt_inception-2015-12-05-6726825d.pth (default: torch hub's cache, downloaded there from "
                   "pytorch-fid's release on first use).")
@click.option("--offline", is_flag=True,
              help="Never use the network (as CYCLEGAN_OFFLINE=1): missing Inception weights are an error.")
@click.option("--no-inception", is_flag=True, help="Only the reconstruction metrics (no FID/KID/IS).")
@click.option("--image-size", type=int, help="Resize test images to this square size (default: crop_size).")
@click.option("--max-images", type=int, help="Use at most N test images per domain.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--classifier", is_flag=True,
              help="Also score with a domain classifier trained on the training images (no download; cached "
                   "per data set): share of translations it assigns to the target domain, Frechet distance in "
                   "its features. Comparable only within one data set and classifier.")
@click.option("--classifier-min-accuracy", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="Refuse the classifier below this held-out accuracy on real training images.")
@click.option("--reference", type=click.Path(path_type=Path),
              help="Instead: PSNR/SSIM/L1 of this model's translations against another model's (a distilled "
                   "student against its teacher), written to <run>/eval_reference.json.")
@click.option("--reference-direction", type=click.Choice(("a2b", "b2a")),
              help="The reference's generator compared with a2b (default: a2b, or a student's distill.direction).")
def evaluate_cmd(checkpoint, dataroot, test_a, test_b, out, inception_weights, offline, no_inception, image_size,
                 max_images, batch_size, device, quiet, reference, reference_direction, classifier,
                 classifier_min_accuracy) -> None:
    """FID, KID, IS, GMS and cycle L1/PSNR/SSIM of a checkpoint on a test split, both directions."""
    from cyclegan.errors import InceptionUnavailableError
    from cyclegan.evaluate import evaluate_checkpoint, evaluate_reference

    if reference is not None:
        record = evaluate_reference(
            checkpoint, reference, reference_direction=reference_direction, dataroot=dataroot, test_a=test_a,
            test_b=test_b, out=out, image_size=image_size, max_images=max_images, batch_size=batch_size,
            device=device, echo=lambda m: click.echo(m, err=True))
        for direction in ("a2b", "b2a"):
            if direction in record:
                r = record[direction]
                shown = f"psnr {r['psnr']:.4g} dB" if r["psnr"] is not None else "identical outputs"
                click.echo(f"{direction} vs reference {r['reference_direction']}: {shown}, ssim {r['ssim']:.4g}, "
                           f"l1 {r['l1']:.4g} ({r['n']} images)")
        click.echo(f"wrote {record['out']}", err=True)
        return
    if offline:  # the downloader reads it wherever a download could start (Inception weights)
        os.environ["CYCLEGAN_OFFLINE"] = "1"

    result = evaluate_checkpoint(
        checkpoint, dataroot=dataroot, test_a=test_a, test_b=test_b, out=out,
        inception_weights=inception_weights, use_inception=not no_inception, image_size=image_size,
        max_images=max_images, batch_size=batch_size, device=device,
        echo=lambda m: click.echo(m, err=True), progress=not quiet,
        classifier=classifier, classifier_min_accuracy=classifier_min_accuracy,
    )
    keys = ("fid", "kid_mean", "is_mean", "gms", "cycle_l1", "psnr", "ssim", "target_share", "target_share_real",
            "classifier_fd")
    for direction in ("a2b", "b2a"):
        if direction not in result:  # one-sided models (CUT / FastCUT) have no b2a
            continue
        scores = result[direction]
        click.echo(f"{direction}: " + ", ".join(f"{k} {scores[k]:.4g}" for k in keys if k in scores))
    if "gms_avg" in result["summary"]:
        click.echo(f"avg GMS {result['summary']['gms_avg']:.5g}")
    click.echo(f"wrote {result['out']}", err=True)
    if result["inception_error"] and not no_inception and classifier:
        # The classifier score is what a user without the Inception weights gets instead of FID.
        click.echo(f"warning: no FID/KID/IS ({result['inception_error']}); the classifier score stands in", err=True)
    elif result["inception_error"] and not no_inception:
        raise InceptionUnavailableError(
            f"{result['inception_error']} (reconstruction metrics were written to {result['out']})"
        )


@main.group()
def analyze() -> None:
    """Analyses of trained generators (see `cyclegan analyze fourier`)."""


@analyze.command("fourier")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Run or checkpoint directory; repeat to compare generators (e.g. U-Net vs ResNet).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Figure (PNG).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Numbers (default: --out with .json).")
@click.option("--direction", type=click.Choice(["a2b", "b2a"]), default="a2b", show_default=True)
@click.option("--real", type=click.Path(path_type=Path),
              help="Folder of real target-domain images: the reference spectrum.")
@click.option("--cutoff", type=float, default=0.25, show_default=True,
              help="High-frequency ratio cutoff in cycles/pixel (0.5 = Nyquist).")
@click.option("--max-side", type=int, help="Downsize images whose longest side is larger.")
@click.option("--max-show", type=int, default=4, show_default=True, help="Inputs drawn in the figure.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
def analyze_fourier_cmd(inputs, checkpoints, out, json_out, direction, real, cutoff, max_side, max_show,
                        device) -> None:
    """Spectra of INPUTS (images or folders) and their translations (seed 001 sec. 5.2)."""
    from cyclegan.analyze.fourier import analyze_fourier
    from cyclegan.devices import resolve_device

    result = analyze_fourier(
        inputs, checkpoints=checkpoints, out=out, json_out=json_out, direction=direction, real=real,
        cutoff=cutoff, max_side=max_side, max_show=max_show, device=resolve_device(device),
        echo=lambda m: click.echo(m, err=True),
    )
    click.echo(f"inputs: high-frequency ratio {result['inputs']['hf_ratio_mean']:.4f}")
    for label, entry in result["checkpoints"].items():
        click.echo(f"{label} ({entry['generator']}): high-frequency ratio {entry['hf_ratio_mean']:.4f}")
    if "real" in result:
        click.echo(f"real: high-frequency ratio {result['real']['hf_ratio_mean']:.4f}")
    click.echo(f"wrote {result['out']} and {result['json']}", err=True)


@analyze.command("video")
@click.argument("input_video", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("output_video", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the numbers (and per-pair values) here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def analyze_video_cmd(input_video, output_video, json_out, quiet) -> None:
    """Warping error of OUTPUT_VIDEO, a translation of INPUT_VIDEO (Lai et al., ECCV 2018): how much it
    flickers along the input's motion, with the input's own error as the floor."""
    from cyclegan.analyze.video import analyze_video, format_video_table

    report = analyze_video(input_video, output_video, json_out=json_out, progress=not quiet)
    click.echo(format_video_table(report))
    if json_out is not None:
        click.echo(f"wrote {json_out}", err=True)


@main.command("report")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file (default: <run>/report.html).")
@click.option("--embed", is_flag=True, help="Inline every image: one portable HTML file.")
@click.option("--smoothing", type=float, default=0.9, show_default=True, help="EMA weight of loss curves.")
@click.option("--max-samples", type=int, default=24, show_default=True, help="Sample grids shown (0 = all).")
def report_cmd(run, out, embed, smoothing, max_samples) -> None:
    """One self-contained HTML page (plus PNGs) about a training run."""
    from cyclegan.report import build_report

    click.echo(build_report(run, out=out, embed=embed, smoothing=smoothing, max_samples=max_samples))


@main.command("translate")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--checkpoint", "--model", "model", required=True,
              help="Run folder (its newest checkpoint), checkpoint folder, safetensors export, .onnx "
                   "(runs through ONNX Runtime) or TorchScript .pt.")
@click.option("--out", help="Output folder (names mirror the inputs), a file name for a single input, or - "
                            "for one image to stdout (the default when the input is - for stdin).")
@click.option("--direction", type=click.Choice(("a2b", "b2a")), default=None,
              help="Generator of a run/checkpoint [default: a2b]; exported models have one direction.")
@click.option("--recursive", is_flag=True, help="Descend into subfolders of folder inputs (and ** in globs).")
@click.option("--suffix", default="", help="Appended to each output file name, e.g. _ghibli.")
@click.option("--format", "fmt", type=click.Choice(("png", "jpg", "webp")), default=None,
              help="Output image format [default: the input's if png/jpg/webp, else png].")
@click.option("--quality", type=int, default=95, show_default=True, help="JPEG/WebP quality.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (inputs are never overwritten).")
@click.option("--max-side", type=int, help="Downsize so the longer side is at most N pixels first.")
@click.option("--size", help="Force the output size: N (square) or WIDTHxHEIGHT.")
@click.option("--tile", default="auto", show_default=True,
              help="auto (tile only when a pass would not fit --memory-budget), off, or a tile size N.")
@click.option("--tile-overlap", type=int, help="Pixels shared by neighbouring tiles [default: tile/4, max 128].")
@click.option("--memory-budget", help="Memory for one forward pass, e.g. 2G [default: half of what is free].")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Same-size images (or frames) per pass.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(TRANSLATE_PRECISIONS), default="auto", show_default=True,
              help="auto: the fastest path within tolerance of fp32: on CPU an int8 model of these weights that "
                   "passed its check (made by --precision int8 or export --int8), bf16 where the hardware has it "
                   "and the output stays within 8 levels, else ONNX Runtime on CPU when installed, else fp32. "
                   "int8: ONNX Runtime static quantization on the CPU, calibrated and checked (cached).")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="--precision int8: images (folder or .npz) of the domain translated from [default: the "
                   "model's training images of that domain].")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads (0: PyTorch's default capped at the CPUs this process may use).")
@click.option("--temporal", type=click.Choice(TEMPORAL_MODES), default="off", show_default=True,
              help="Video flicker: flow warps the previous output along the optical flow and blends it where the "
                   "motion is reliable (needs OpenCV, the prep extra); blend mixes it in place (ghosts motion).")
@click.option("--temporal-strength", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.8,
              show_default=True, help="Weight of the past frame for --temporal flow|blend.")
@click.option("--temporal-smoothing", type=float, default=0.0, metavar="ALPHA",
              help="Former flag: the same as --temporal blend --temporal-strength ALPHA.")
@click.option("--no-ema", is_flag=True, help="Use the trained weights, not the checkpoint's EMA generator.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def translate_cmd(ctx, inputs, model, out, direction, recursive, suffix, fmt, quality, overwrite, max_side, size,
                  tile, tile_overlap, memory_budget, batch_size, device, precision, calibration, threads, temporal,
                  temporal_strength, temporal_smoothing, no_ema, quiet):
    """Translate images, folders, globs, videos or - (stdin) at their full size.

    Under torchrun (e.g. torchrun --nproc-per-node 4 -m cyclegan translate DIR --out OUT) the inputs
    are split across the processes: the same files as one process, one summary line.
    """
    from cyclegan.devices import precision_warning
    from cyclegan.translate import (
        OutputOptions,
        Translator,
        main_first,
        parse_bytes,
        shard_group,
        translate_paths,
    )

    with shard_group() as shard:
        with main_first(shard):  # one process fills the ONNX/int8 cache, the others then read it
            translator = Translator.from_checkpoint(
                model, direction=direction, device=device, precision=precision, tile=tile,
                tile_overlap=tile_overlap, memory_budget=parse_bytes(memory_budget) if memory_budget else None,
                batch_size=batch_size, max_side=max_side, size=size, ema=not no_ema, threads=threads,
                calibration=calibration,
            )
        if precision in ("auto", "int8") and not quiet and shard.is_main:
            click.echo(f"runtime: {translator.runtime.line()}", err=True)
        if (slow := precision_warning(translator.device, translator.precision)) is not None and shard.is_main:
            click.echo(f"warning: {slow}", err=True)
        summary = translate_paths(
            translator, inputs, out=out, recursive=recursive,
            options=OutputOptions(suffix=suffix, format=fmt, quality=quality, overwrite=overwrite),
            temporal=temporal, temporal_strength=temporal_strength, temporal_smoothing=temporal_smoothing,
            progress=not quiet, echo=lambda m: click.echo(m, err=True), shard=shard,
        )
    if shard.is_main:
        click.echo(summary.line(), err=True)
    if not summary.ok:
        ctx.exit(1)


@main.command("export")
@click.option("--checkpoint", required=True,
              help="Run folder (its newest checkpoint), checkpoint folder or safetensors export.")
@click.option("--format", "fmt", type=click.Choice(("onnx", "torchscript", "safetensors")), default="onnx",
              show_default=True)
@click.option("--out", required=True, help="Output .onnx / .pt file, or folder for safetensors.")
@click.option("--direction", type=click.Choice(("a2b", "b2a")), default="a2b", show_default=True)
@click.option("--opset", type=int, help="ONNX opset [default: the exporter's].")
@click.option("--overwrite", is_flag=True, help="Replace an existing export at --out.")
@click.option("--no-ema", is_flag=True, help="Export the trained weights, not the checkpoint's EMA generator.")
@click.option("--int8", is_flag=True,
              help="ONNX int8 (ONNX Runtime static quantization), checked against fp32 on the calibration images "
                   "instead of the parity check; refused above the --int8-* limits.")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="--int8: images (folder or .npz) of the domain translated from [default: the run's training "
                   "images of that domain].")
@click.option("--int8-min-psnr", type=float, default=DEFAULT_INT8_LIMITS.min_psnr, show_default=True,
              help="--int8: least PSNR (dB) of the worst calibration image against fp32.")
@click.option("--int8-max-mean-levels", type=float, default=DEFAULT_INT8_LIMITS.max_mean_levels, show_default=True,
              help="--int8: largest mean difference from fp32, in 8-bit levels.")
@click.option("--int8-max-levels", type=int, default=DEFAULT_INT8_LIMITS.max_levels, show_default=True,
              help="--int8: largest difference of any pixel from fp32, in 8-bit levels.")
def export_cmd(checkpoint, fmt, out, direction, opset, overwrite, no_ema, int8, calibration, int8_min_psnr,
               int8_max_mean_levels, int8_max_levels) -> None:
    """Export one generator (ONNX, TorchScript or plain safetensors), checked against PyTorch."""
    if int8:
        from cyclegan.errors import ExportError
        from cyclegan.quantize import Int8Limits
        from cyclegan.runtime import export_int8_generator

        if fmt != "onnx":
            raise ExportError(f"--int8 is an ONNX export; drop --format {fmt}")
        limits = Int8Limits(min_psnr=int8_min_psnr, max_mean_levels=int8_max_mean_levels, max_levels=int8_max_levels)
        click.echo(export_int8_generator(checkpoint, out=out, direction=direction, calibration=calibration,
                                         limits=limits, overwrite=overwrite, ema=not no_ema).line())
        return
    from cyclegan.export import export_generator

    result = export_generator(checkpoint, fmt=fmt, out=out, direction=direction, overwrite=overwrite, opset=opset,
                              ema=not no_ema)
    click.echo(result.line())


@main.group()
def prep() -> None:
    """Dataset preparation: pack folders into .npz arrays, put subjects on white backgrounds, turn films
    into style frames, edge-smooth style images."""


@prep.command("pack")
@click.argument("in_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .npz to write.")
@click.option("--size", type=int, default=64, show_default=True, help="Square side of the stored images.")
@click.option("--fit", type=click.Choice(["crop", "stretch"]), default="crop", show_default=True,
              help="crop: centre-crop to square then resize; stretch: resize the whole image.")
@click.option("--compress/--no-compress", default=True, show_default=True,
              help="Compressed (smaller, decompressed into memory) or stored (memory-mapped when training).")
@click.option("--limit", type=int, default=0, help="Keep only the first N images (0 = all).")
def prep_pack_cmd(in_dir, out, size, fit, compress, limit) -> None:
    """Pack every image under IN_DIR into one uint8 [N, SIZE, SIZE, 3] .npz (seed 002's format)."""
    from cyclegan.prep import pack_folder

    result = pack_folder(in_dir, out, size=size, fit=fit, compress=compress, limit=limit)
    for path, why in result.skipped:
        click.echo(f"warning: skipped {path} ({why})", err=True)
    click.echo(f"wrote {result.count} images of {size}x{size} to {result.out}")


@prep.command("remove-background")
@click.argument("in_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--masks", "masks_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of masks (white = subject, same relative names as IN_DIR); used instead of GrabCut.")
@click.option("--margin", type=float, default=0.05, show_default=True,
              help="Border fraction GrabCut takes as certain background.")
@click.option("--iterations", type=int, default=5, show_default=True, help="GrabCut iterations.")
@click.option("--max-side", type=int, default=400, show_default=True, help="Segment at most this resolution.")
@click.option("--feather", type=float, default=1.0, show_default=True, help="Mask edge blur (pixels).")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path),
              help="Preview grid PNG (default: OUT_DIR_preview.png next to OUT_DIR).")
@click.option("--preview-count", type=int, default=8, show_default=True, help="Images in the preview.")
def prep_remove_background_cmd(in_dir, out_dir, masks_dir, margin, iterations, max_side, feather, preview,
                               preview_count) -> None:
    """Composite the subject of every image under IN_DIR on white, into OUT_DIR (GrabCut, no downloads)."""
    from cyclegan.prep import remove_background

    if preview is None:  # beside OUT_DIR, not in it: a preview must not become a training image
        preview = out_dir.with_name(out_dir.name + "_preview.png")
    result = remove_background(in_dir, out_dir, masks_dir=masks_dir, margin=margin, iterations=iterations,
                               max_side=max_side, feather=feather, preview=preview,
                               preview_count=preview_count)
    for path, why in result.skipped:
        click.echo(f"warning: skipped {path} ({why})", err=True)
    click.echo(f"wrote {result.written} images to {result.out_dir} ({result.from_masks} from masks)")
    if result.preview is not None:
        click.echo(f"preview: {result.preview}", err=True)


@prep.command("frames")
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of frames (a second run adds to it and skips finished videos).")
@click.option("--per-shot", default="1-2", show_default=True,
              help="Frames per shot: N, or MIN-MAX (one more per 4 seconds of shot).")
@click.option("--size", type=int, default=288, show_default=True, help="Shorter side of the written frames.")
@click.option("--format", "fmt", type=click.Choice(["png", "jpg"]), default="png", show_default=True,
              help="png, or JPEG at quality 95 with full-resolution colour.")
@click.option("--crop-bottom", type=float, default=0.0, show_default=True,
              help="Share of the picture's height dropped at the bottom (burned-in subtitles, e.g. 0.12).")
@click.option("--dedupe-distance", type=int, default=6, show_default=True,
              help="Frames whose 64-bit perceptual hashes differ in at most this many bits are duplicates.")
@click.option("--min-edges", type=float, default=0.015, show_default=True,
              help="Least share of edge pixels (drops skies, walls, out-of-focus frames).")
@click.option("--shot-threshold", type=float, default=27.0, show_default=True,
              help="PySceneDetect ContentDetector threshold (lower finds more cuts).")
@click.option("--max-frames", type=int, default=0, help="At most this many frames in the folder (0 = no cap).")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path),
              help="Contact sheet PNG (default: OUT_contact.png next to OUT).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prep_frames_cmd(videos, out_dir, per_shot, size, fmt, crop_bottom, dedupe_distance, min_edges, shot_threshold,
                    max_frames, preview, quiet) -> None:
    """Turn films or episodes (files or folders) into a folder of style training frames."""
    from cyclegan.prep.frames import FramesSettings, extract_frames, parse_per_shot

    settings = FramesSettings(per_shot=parse_per_shot(per_shot), size=size, fmt=fmt, crop_bottom=crop_bottom,
                              dedupe_distance=dedupe_distance, min_edges=min_edges, shot_threshold=shot_threshold)
    result = extract_frames(videos, out_dir, settings=settings, max_frames=max_frames, preview=preview,
                            progress=not quiet, echo=click.echo)
    click.echo(f"{result.total} frames in {result.out_dir} (list: {result.csv})")
    if result.preview is not None:
        click.echo(f"contact sheet: {result.preview}", err=True)


@prep.command("edge-smooth")
@click.argument("style_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the smoothed copies (not inside STYLE_DIR).")
@click.option("--size", type=int, default=0, show_default=True,
              help="Scale each image's shorter side to this before smoothing (0 = keep); use the training scale.")
def prep_edge_smooth_cmd(style_dir, out_dir, size) -> None:
    """Edge-smoothed copies of style images for loss.lambda_edge_promote (CartoonGAN)."""
    from cyclegan.prep.edges import EdgeSmoothSettings, edge_smooth_folder

    result = edge_smooth_folder(style_dir, out_dir, settings=EdgeSmoothSettings(size=size))
    for path, why in result.skipped:
        click.echo(f"warning: skipped {path} ({why})", err=True)
    click.echo(f"wrote {result.written} edge-smoothed images to {result.out_dir} ({result.existing} already there)")


@main.command("serve")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, metavar="[NAME=]PATH",
              help="Run folder, checkpoint folder or exported model; repeat for several. Named after the "
                   "run folder unless given as NAME=PATH.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the (unauthenticated) API to the network.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(("auto", *PRECISIONS)), default="fp32", show_default=True,
              help="auto: as translate's (bf16 where native and within tolerance, else ONNX Runtime on CPU).")
@click.option("--tile", default="auto", show_default=True, help="auto, off, or a tile size in pixels.")
@click.option("--max-upload-mb", type=float, default=20.0, show_default=True, help="Largest upload accepted.")
@click.option("--max-megapixels", type=float, default=50.0, show_default=True,
              help="Largest image accepted (decompression-bomb guard).")
@click.option("--queue-size", type=int, default=8, show_default=True,
              help="Requests that may wait for a worker; beyond that the API answers 503 + Retry-After.")
@click.option("--workers", type=int, default=1, show_default=True, help="Images translated at the same time.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads per image (0: the CPUs this process may use, shared among --workers; "
                   "1 is often faster on small VMs).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser pages from this origin to call the API (repeatable; default: none).")
@click.option("--header-timeout", type=float, default=10.0, show_default=True, metavar="SECONDS",
              help="Time a client has to send a request's headers (slow-loris guard); then 408 and close.")
@click.option("--body-timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="Time an upload has to arrive in full; then 408 and close.")
@click.option("--max-connections", type=int, default=64, show_default=True,
              help="Open connections at most; more are answered 503 at once and closed.")
@click.option("--max-request-memory", default="1G", show_default=True, metavar="SIZE",
              help="Memory one translation may need, estimated before decoding; larger images get 413, "
                   "or are downscaled when the request gives max_side.")
def serve_cmd(checkpoints, host, port, device, precision, tile, max_upload_mb, max_megapixels, queue_size, workers,
              threads, cors_origins, header_timeout, body_timeout, max_connections, max_request_memory) -> None:
    """Web page and HTTP API: upload a photo, get it back translated."""
    from cyclegan.serve.server import run_server

    run_server(
        checkpoints, host=host, port=port, device=device, precision=precision, tile=tile,
        max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=int(max_megapixels * 1e6),
        queue_size=queue_size, workers=workers, threads=threads, cors_origins=cors_origins,
        header_timeout=header_timeout, body_timeout=body_timeout, max_connections=max_connections,
        max_request_memory=max_request_memory,
        echo=lambda m: click.echo(m, err=True),
    )


def _import_formats() -> list[str]:
    # The importers' registry feeds the FORMAT choices (read once, when the command is defined).
    from cyclegan.importers import IMPORT_FORMATS

    return sorted(IMPORT_FORMATS)


@main.command("import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(_import_formats()))
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Model folder to write: a safetensors export, or a checkpoint for a G_A + G_B pair.")
@click.option("--overwrite", is_flag=True, help="Replace an existing cyclegan model folder at --out.")
def import_cmd(fmt, paths, out, overwrite) -> None:
    """Import generators trained with other projects' code into a model folder usable everywhere.

    FORMAT: official (the CycleGAN/pix2pix authors' .pth files; latest_net_G_A.pth and
    latest_net_G_B.pth together give both directions), cut (CUT/FastCUT generators) or animeganv2
    (the AnimeGANv2 PyTorch port: face_paint_512_v2, paprika, celeba_distill). The architecture is
    read from the file and checked tensor by tensor.
    """
    from cyclegan.importers import import_weights

    click.echo(import_weights(fmt, paths, out, overwrite=overwrite).line())


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"  # pragma: no cover


@main.group()
def pretrained() -> None:
    """Publicly released generators: list them, download one; then use --checkpoint pretrained:NAME."""


@pretrained.command("list")
@click.option("--verbose", "-v", is_flag=True, help="Also each model's URL, architecture and licence notes.")
def pretrained_list_cmd(verbose) -> None:
    """The catalog: name, import format, download size, terms of use, what it does (* = downloaded)."""
    from cyclegan.pretrained import is_downloaded, list_models

    models = list_models()
    width = max(len(e.name) for e in models)
    click.echo(f"  {'NAME':<{width}}  {'FORMAT':<10}  {'SIZE':>8}  {'TERMS':<14}  TASK")
    for e in models:
        mark = "*" if is_downloaded(e.name) else " "
        terms = "non-commercial" if e.non_commercial else "see licence"
        click.echo(f"{mark} {e.name:<{width}}  {e.format:<10}  {_size(e.size_bytes):>8}  {terms:<14}  {e.task}")
        if verbose:
            for label, value in (("url", e.url + (f" ({e.member})" if e.member else "")), ("from", e.family),
                                 ("architecture", e.architecture), ("licence", e.licence),
                                 ("note", e.licence_note), ("sha256", e.sha256 or "not published")):
                click.echo(f"  {'':<{width}}  {label}: {value}")
    click.echo("* downloaded. Sizes marked ? are not published. Check each model's terms (-v) before use.",
               err=True)


@pretrained.command("get")
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Also copy the imported model (a safetensors export) to this folder.")
@click.option("--overwrite", is_flag=True, help="Let --out replace an earlier copy of a model.")
@click.option("--offline", is_flag=True,
              help="Never use the network (as CYCLEGAN_OFFLINE=1): import a file already downloaded or put "
                   "in place by hand, else say which file to fetch and where to put it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pretrained_get_cmd(name, out, overwrite, offline, quiet) -> None:
    """Download catalog model NAME (resumable, checked), import it, and cache it."""
    from cyclegan.pretrained import catalog_entry, get

    result = get(name, out=out, overwrite=overwrite, progress=False if quiet else None,
                 offline=True if offline else None)
    click.echo(result.line())
    entry = catalog_entry(name)
    if result.sha256:
        click.echo(f"sha256 {result.sha256} of {entry.url}", err=True)
    if entry.non_commercial:
        click.echo(f"note: {name} is for non-commercial use: {entry.licence_note}", err=True)


@main.command("push")
@click.argument("run")
@click.argument("repo_id", metavar="OWNER/REPO")
@click.option("--direction", type=click.Choice(("both", "a2b", "b2a")), default="both", show_default=True,
              help="Generators to upload; both = every one the model has (two for CycleGAN, one for CUT).")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--token", help="Hugging Face token [default: HF_TOKEN, or the one `hf auth login` saved].")
@click.option("--license", "license_", metavar="ID", help="Licence id for the model card, e.g. mit, cc-by-nc-4.0.")
@click.option("--eval", "eval_json", type=click.Path(dir_okay=False, path_type=Path),
              help="eval.json whose metrics the card reports [default: the one evaluate wrote for RUN].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the packaged folder (exports + README.md) here.")
@click.option("--dry-run", is_flag=True, help="Package into --out, upload nothing.")
@click.option("--no-ema", is_flag=True, help="Upload the trained weights, not the checkpoint's EMA generator.")
def push_cmd(run, repo_id, direction, private, token, license_, eval_json, out, dry_run, no_ema) -> None:
    """Upload RUN (run/checkpoint folder or export) to the Hugging Face Hub with a model card."""
    from cyclegan.hub import push

    result = push(run, repo_id, direction=direction, private=private, token=token, license=license_,
                  eval_json=eval_json, ema=not no_ema, out=out, dry_run=dry_run)
    click.echo(result.line())


if __name__ == "__main__":  # pragma: no cover
    main()
