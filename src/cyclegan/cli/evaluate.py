"""``cyclegan evaluate``, ``analyze fourier|video`` and ``report``: scores, analyses and the HTML
report of trained models and runs."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cyclegan.analyze.fourier import analyze_fourier
from cyclegan.analyze.video import analyze_video, format_video_table
from cyclegan.devices import DEVICES, resolve_device
from cyclegan.errors import InceptionUnavailableError
from cyclegan.evaluate import evaluate_checkpoint, evaluate_reference
from cyclegan.report import build_report


@click.command("evaluate")
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
              help="Also score with a domain classifier trained on the training images (no download; "
                   "cached per data set): share of translations it assigns to the target domain, Frechet "
                   "distance in its features. Comparable only within one data set and classifier.")
@click.option("--classifier-min-accuracy", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="Refuse the classifier below this held-out accuracy on real training images.")
@click.option("--reference", type=click.Path(path_type=Path),
              help="Instead: PSNR/SSIM/L1 of this model's translations against another model's (a distilled "
                   "student against its teacher), written to <run>/eval_reference.json.")
@click.option("--reference-direction", type=click.Choice(("a2b", "b2a")),
              help="The reference's generator compared with a2b (default: a2b, or a student's "
                   "distill.direction).")
def evaluate_cmd(checkpoint, dataroot, test_a, test_b, out, inception_weights, offline, no_inception,
                 image_size, max_images, batch_size, device, quiet, reference, reference_direction,
                 classifier, classifier_min_accuracy) -> None:
    """FID, KID, IS, GMS and cycle L1/PSNR/SSIM of a checkpoint on a test split, both directions."""
    if reference is not None:
        record = evaluate_reference(
            checkpoint, reference, reference_direction=reference_direction, dataroot=dataroot, test_a=test_a,
            test_b=test_b, out=out, image_size=image_size, max_images=max_images, batch_size=batch_size,
            device=device, echo=lambda m: click.echo(m, err=True))
        for direction in ("a2b", "b2a"):
            if direction in record:
                r = record[direction]
                shown = f"psnr {r['psnr']:.4g} dB" if r["psnr"] is not None else "identical outputs"
                click.echo(f"{direction} vs reference {r['reference_direction']}: {shown}, "
                           f"ssim {r['ssim']:.4g}, l1 {r['l1']:.4g} ({r['n']} images)")
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
    keys = ("fid", "kid_mean", "is_mean", "gms", "cycle_l1", "psnr", "ssim", "target_share",
            "target_share_real", "classifier_fd")
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
        click.echo(f"warning: no FID/KID/IS ({result['inception_error']}); the classifier score stands in",
                   err=True)
    elif result["inception_error"] and not no_inception:
        raise InceptionUnavailableError(
            f"{result['inception_error']} (reconstruction metrics were written to {result['out']})"
        )


@click.group()
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
    """Spectra of INPUTS (images or folders) and their translations (Durall et al., CVPR 2020)."""
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
    report = analyze_video(input_video, output_video, json_out=json_out, progress=not quiet)
    click.echo(format_video_table(report))
    if json_out is not None:
        click.echo(f"wrote {json_out}", err=True)


@click.command("report")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file (default: <run>/report.html).")
@click.option("--embed", is_flag=True, help="Inline every image: one portable HTML file.")
@click.option("--smoothing", type=float, default=0.9, show_default=True, help="EMA weight of loss curves.")
@click.option("--max-samples", type=int, default=24, show_default=True, help="Sample grids shown (0 = all).")
def report_cmd(run, out, embed, smoothing, max_samples) -> None:
    """One self-contained HTML page (plus PNGs) about a training run."""
    click.echo(build_report(run, out=out, embed=embed, smoothing=smoothing, max_samples=max_samples))


