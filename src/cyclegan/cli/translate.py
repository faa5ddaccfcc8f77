"""``cyclegan translate``: images, folders, globs, videos or stdin through any model file, split
across processes under torchrun."""

from __future__ import annotations

from pathlib import Path

import click

from cyclegan.cli.choices import NameChoice
from cyclegan.devices import DEVICES, TRANSLATE_PRECISIONS, precision_warning
from cyclegan.temporal import TEMPORAL_MODES
from cyclegan.translate import (
    OutputOptions,
    Translator,
    main_first,
    parse_bytes,
    shard_group,
    translate_paths,
)
from cyclegan.translate.files import check_output_target


@click.command("translate")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--checkpoint", "--model", "model", required=True,
              help="Run folder (its newest checkpoint), checkpoint folder, safetensors export, .onnx "
                   "(runs through ONNX Runtime) or TorchScript .pt.")
@click.option("--out", help="Output folder (names mirror the inputs), a file name for a single input, or - "
                            "for one image to stdout (the default when the input is - for stdin).")
@click.option("--direction", type=NameChoice(("a2b", "b2a")), default=None,
              help="Generator of a run/checkpoint [default: a2b]; exported models have one direction.")
@click.option("--recursive", is_flag=True, help="Descend into subfolders of folder inputs (and ** in globs).")
@click.option("--suffix", default="", help="Appended to each output file name, e.g. _ghibli.")
@click.option("--format", "fmt", type=NameChoice(("png", "jpg", "webp")), default=None,
              help="Output image format [default: the input's if png/jpg/webp, else png].")
@click.option("--quality", type=int, default=95, show_default=True, help="JPEG/WebP quality.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (inputs are never overwritten).")
@click.option("--max-side", type=int, help="Downsize so the longer side is at most N pixels first.")
@click.option("--size", help="Force the output size: N (square) or WIDTHxHEIGHT.")
@click.option("--tile", default="auto", show_default=True,
              help="auto (tile only when a pass would not fit --memory-budget), off, or a tile size N.")
@click.option("--tile-overlap", type=int,
              help="Pixels shared by neighbouring tiles [default: tile/4, max 128].")
@click.option("--memory-budget", help="Memory for one forward pass, e.g. 2G [default: half of what is free].")
@click.option("--batch-size", type=int, default=4, show_default=True,
              help="Same-size images (or frames) per pass.")
@click.option("--device", type=NameChoice(DEVICES), default="auto", show_default=True)
@click.option("--precision", type=NameChoice(TRANSLATE_PRECISIONS), default="auto", show_default=True,
              help="auto: the fastest path within tolerance of fp32: on CPU an int8 model of these weights "
                   "that passed its check (made by --precision int8 or export --int8), bf16 where the "
                   "hardware has it and the output stays within 8 levels, else ONNX Runtime on CPU when "
                   "installed, else fp32. int8: ONNX Runtime static quantization on the CPU, calibrated and "
                   "checked (cached).")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="--precision int8: images (folder or .npz) of the domain translated from [default: the "
                   "model's training images of that domain].")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads (0: PyTorch's default capped at the CPUs this process may use).")
@click.option("--temporal", type=NameChoice(TEMPORAL_MODES), default="off", show_default=True,
              help="Video flicker: flow warps the previous output along the optical flow and blends it where "
                   "the motion is reliable (needs OpenCV, the prep extra); blend mixes it in place (ghosts "
                   "motion).")
@click.option("--temporal-strength", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.8,
              show_default=True, help="Weight of the past frame for --temporal flow|blend.")
@click.option("--temporal-smoothing", type=float, default=0.0, metavar="ALPHA",
              help="Former flag: the same as --temporal blend --temporal-strength ALPHA.")
@click.option("--no-ema", is_flag=True, help="Use the trained weights, not the checkpoint's EMA generator.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def translate_cmd(ctx, inputs, model, out, direction, recursive, suffix, fmt, quality, overwrite, max_side,
                  size,
                  tile, tile_overlap, memory_budget, batch_size, device, precision, calibration, threads,
                  temporal, temporal_strength, temporal_smoothing, no_ema, quiet):
    """Translate images, folders, globs, videos or - (stdin) at their full size.

    Under torchrun (e.g. torchrun --nproc-per-node 4 -m cyclegan translate DIR --out OUT) the inputs
    are split across the processes: the same files as one process, one summary line.
    """
    check_output_target(inputs, out)  # a wrong --out costs no model load
    with shard_group() as shard:
        with main_first(shard):  # one process fills the ONNX/int8 cache, the others then read it
            translator = Translator.from_checkpoint(
                model, direction=direction, device=device, precision=precision, tile=tile,
                tile_overlap=tile_overlap, memory_budget=parse_bytes(memory_budget) if memory_budget
                                                    else None,
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


