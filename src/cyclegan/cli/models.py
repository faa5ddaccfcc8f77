"""``cyclegan export``, ``import``, ``pretrained list|get|verify`` and ``push``: model files in and out."""

from __future__ import annotations

from pathlib import Path

import click

from cyclegan.cli.choices import NameChoice
from cyclegan.errors import ExportError
from cyclegan.export import export_generator
from cyclegan.hub import push
from cyclegan.importers import IMPORT_FORMATS, import_weights
from cyclegan.importers.onnx_foreign import OnnxImportOptions
from cyclegan.networks.foreign import CHANNELS, LAYOUTS, VALUE_RANGES, ConventionError, OnnxConvention
from cyclegan.pretrained import catalog_entry, get, is_downloaded, list_models, terms, verify
from cyclegan.quantize import DEFAULT_LIMITS as DEFAULT_INT8_LIMITS
from cyclegan.quantize import Int8Limits
from cyclegan.runtime import export_int8_generator


@click.command("export")
@click.option("--checkpoint", required=True,
              help="Run folder (its newest checkpoint), checkpoint folder or safetensors export.")
@click.option("--format", "fmt", type=click.Choice(("onnx", "torchscript", "safetensors")), default="onnx",
              show_default=True)
@click.option("--out", required=True, help="Output .onnx / .pt file, or folder for safetensors.")
@click.option("--direction", type=click.Choice(("a2b", "b2a")), default="a2b", show_default=True)
@click.option("--opset", type=int, help="ONNX opset [default: the exporter's].")
@click.option("--overwrite", is_flag=True, help="Replace an existing export at --out.")
@click.option("--no-ema", is_flag=True,
              help="Export the trained weights, not the checkpoint's EMA generator.")
@click.option("--int8", is_flag=True,
              help="ONNX int8 (ONNX Runtime static quantization), checked against fp32 on the calibration "
                   "images instead of the parity check; refused above the --int8-* limits.")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="--int8: images (folder or .npz) of the domain translated from [default: the run's "
                   "training images of that domain].")
@click.option("--int8-min-psnr", type=float, default=DEFAULT_INT8_LIMITS.min_psnr, show_default=True,
              help="--int8: least PSNR (dB) of the worst calibration image against fp32.")
@click.option("--int8-max-mean-levels", type=float, default=DEFAULT_INT8_LIMITS.max_mean_levels,
              show_default=True, help="--int8: largest mean difference from fp32, in 8-bit levels.")
@click.option("--int8-max-levels", type=int, default=DEFAULT_INT8_LIMITS.max_levels, show_default=True,
              help="--int8: largest difference of any pixel from fp32, in 8-bit levels.")
def export_cmd(checkpoint, fmt, out, direction, opset, overwrite, no_ema, int8, calibration, int8_min_psnr,
               int8_max_mean_levels, int8_max_levels) -> None:
    """Export one generator (ONNX, TorchScript or plain safetensors), checked against PyTorch."""
    if int8:
        if fmt != "onnx":
            raise ExportError(f"--int8 is an ONNX export; drop --format {fmt}")
        limits = Int8Limits(min_psnr=int8_min_psnr, max_mean_levels=int8_max_mean_levels,
                            max_levels=int8_max_levels)
        click.echo(export_int8_generator(checkpoint, out=out, direction=direction, calibration=calibration,
                                         limits=limits, overwrite=overwrite, ema=not no_ema).line())
        return
    result = export_generator(checkpoint, fmt=fmt, out=out, direction=direction, overwrite=overwrite,
                              opset=opset, ema=not no_ema)
    click.echo(result.line())


@click.command("import")
@click.argument("fmt", metavar="FORMAT", type=NameChoice(sorted(IMPORT_FORMATS), "import format"))
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Model folder to write: a safetensors export, or a checkpoint for a G_A + G_B pair.")
@click.option("--overwrite", is_flag=True, help="Replace an existing cyclegan model folder at --out.")
@click.option("--layout", type=click.Choice(LAYOUTS),
              help="onnx: where the graph wants the channels (AnimeGANv3: nhwc).")
@click.option("--range", "value_range", type=click.Choice(VALUE_RANGES),
              help="onnx: the graph's pixel range, in and out (AnimeGANv3: -1,1).")
@click.option("--channels", type=click.Choice(CHANNELS), help="onnx: channel order (AnimeGANv3: rgb).")
@click.option("--multiple", type=int, help="onnx: both sides a multiple of N (AnimeGANv3: 8).")
@click.option("--min-side", type=int, default=0, show_default=True,
              help="onnx: both sides at least N pixels; smaller images are padded (AnimeGANv3: 256).")
@click.option("--no-convert", is_flag=True,
              help="onnx: keep the graph for ONNX Runtime alone (inference only) instead of converting it to "
                   "PyTorch.")
def import_cmd(fmt, paths, out, overwrite, layout, value_range, channels, multiple, min_side,
               no_convert) -> None:
    """Import generators trained with other projects' code into a model folder usable everywhere.

    FORMAT: official (the CycleGAN/pix2pix authors' .pth files; latest_net_G_A.pth and
    latest_net_G_B.pth together give both directions), cut (CUT/FastCUT generators), animeganv2
    (the AnimeGANv2 PyTorch port: face_paint_512_v2, paprika, celeba_distill), animeganv2-tf (the
    AnimeGANv2 authors' TensorFlow-1 checkpoints, e.g. Hayao-64.ckpt: give the prefix, either of its
    .index/.data files or their folder; no TensorFlow needed), whitebox (White-box Cartoonization's
    TensorFlow-1 checkpoint model-33999, guided filter included) or onnx (any image-to-image ONNX
    generator, e.g. AnimeGANv3's: give its convention with --layout, --range, --channels, --multiple and
    --min-side; it is converted to PyTorch and checked against ONNX Runtime). The architecture is read
    from the file and checked tensor by tensor.
    """
    click.echo(import_weights(fmt, paths, out, overwrite=overwrite,
                              options=_import_options(fmt, layout=layout, value_range=value_range,
                                                      channels=channels, multiple=multiple, min_side=min_side,
                                                      no_convert=no_convert)).line())


# The flag of each OnnxConvention field, for its errors.
_CONVENTION_FLAGS = {"layout": "--layout", "value_range": "--range", "channels": "--channels",
                     "multiple": "--multiple", "min_side": "--min-side"}


def _import_options(fmt: str, *, no_convert: bool, **convention) -> OnnxImportOptions | None:
    given = [_CONVENTION_FLAGS[k] for k, v in convention.items() if v is not None
             and not (k == "min_side" and v == 0)]
    if fmt != "onnx":
        if given or no_convert:
            raise click.UsageError(f"{(given or ['--no-convert'])[0]} applies to import onnx only")
        return None
    if missing := [_CONVENTION_FLAGS[k] for k, v in convention.items() if v is None]:
        raise click.UsageError(f"import onnx needs the graph's convention: {', '.join(missing)} "
                               "(AnimeGANv3: --layout nhwc --range -1,1 --channels rgb --multiple 8 "
                               "--min-side 256)")
    try:
        return OnnxImportOptions(convention=OnnxConvention(**convention), convert=not no_convert)
    except ConventionError as e:
        flag = _CONVENTION_FLAGS.get(e.parameter, e.parameter)
        raise click.UsageError(f"{flag}: {str(e).split(': ', 1)[-1]}") from None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"  # pragma: no cover


@click.group()
def pretrained() -> None:
    """Publicly released generators: list them, download one, re-check the cache; then use --model
    pretrained:NAME."""


@pretrained.command("list")
@click.option("--style", metavar="TAG",
              help="Only the models of this style: ghibli, hayao, shinkai, paprika, cartoon, face, ... "
                   "(each model's terms are printed under it).")
@click.option("--verbose", "-v", is_flag=True,
              help="Also each model's URL, publisher, input convention and hashes.")
def pretrained_list_cmd(style, verbose) -> None:
    """The catalog: name, import format, download size, terms of use, what it does (* = downloaded)."""
    models = list_models(style)
    width = max(len(e.name) for e in models)
    tags_width = max(len(",".join(e.styles) or "-") for e in models)
    click.echo(f"  {'NAME':<{width}}  {'FORMAT':<13}  {'SIZE':>8}  {'TERMS':<14}  {'STYLES':<{tags_width}}  "
               "TASK")
    for e in models:
        mark = "*" if is_downloaded(e.name) else " "
        size = sum(f.size_bytes for f in e.downloads()) if all(f.size_bytes for f in e.downloads()) else None
        tags = ",".join(e.styles) or "-"
        click.echo(f"{mark} {e.name:<{width}}  {e.format:<13}  {_size(size):>8}  {_terms_word(e):<14}  "
                   f"{tags:<{tags_width}}  {e.task}")
        if style is not None or verbose:
            click.echo(f"  {'':<{width}}  {terms(e)}")
        if verbose:
            urls = ", ".join(f.url for f in e.downloads()) + (f" ({e.member})" if e.member else "")
            checks = "; ".join(_checks(f) for f in e.downloads())
            for label, value in (("url", urls), ("from", e.publisher or e.family), ("family", e.family),
                                 ("architecture", e.architecture), ("input", e.input_convention or "-"),
                                 ("checked by", checks + (f" ({e.hash_note})" if e.hash_note else ""))):
                click.echo(f"  {'':<{width}}  {label}: {value}")
    click.echo("* downloaded. Sizes marked ? are not published. Check each model's terms before use "
               "(--style or -v prints them).", err=True)


def _terms_word(entry) -> str:
    return "non-commercial" if entry.non_commercial else "see licence"


def _checks(file) -> str:
    parts = [f"{k} {v}" for k, v in (("sha256", file.sha256), ("git blob", file.git_sha1),
                                      ("bytes", file.size_bytes)) if v is not None]
    return f"{file.name}: " + (", ".join(parts) if parts else "no published hash (SHA-256 recorded on "
                                                              "download)")


@pretrained.command("get")
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Also copy the imported model to this folder.")
@click.option("--overwrite", is_flag=True, help="Let --out replace an earlier copy of a model.")
@click.option("--offline", is_flag=True,
              help="Never use the network (as CYCLEGAN_OFFLINE=1): import files already downloaded or put "
                   "in place by hand, else say which file to fetch and where to put it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pretrained_get_cmd(name, out, overwrite, offline, quiet) -> None:
    """Download catalog model NAME (resumable, bounded, checked), import it, and cache it."""
    entry = catalog_entry(name)
    # Before the download, so nobody fetches a model without seeing its terms.
    if entry.non_commercial:
        click.echo(f"note: {name} is for non-commercial use only: {entry.licence}; {entry.licence_note}",
                   err=True)
    else:
        click.echo(f"terms of {name}: {entry.licence}; {entry.licence_note}", err=True)
    result = get(name, out=out, overwrite=overwrite, progress=False if quiet else None,
                 offline=True if offline else None)
    click.echo(result.line())
    if result.sha256:
        click.echo(f"sha256 {result.sha256} of {entry.url}", err=True)


@pretrained.command("verify")
@click.argument("name", required=False)
def pretrained_verify_cmd(name) -> None:
    """Re-check the cache: every download against the catalog and download.json, every imported model
    against its recorded hashes (one line per problem; exit status 1 if any)."""
    checks = verify(name)
    if not checks:
        click.echo("nothing downloaded yet: nothing to verify", err=True)
        return
    bad = 0
    for check in checks:
        if check.ok:
            click.echo(f"ok   {check.name} ({check.checked} files)")
        for problem in check.problems:
            click.echo(f"BAD  {check.name}: {problem}")
        bad += not check.ok
    if bad:
        click.echo(f"error: {bad} of {len(checks)} models failed the check; delete the folder named and run "
                   "`cyclegan pretrained get NAME` again", err=True)
        raise SystemExit(1)


@click.command("push")
@click.argument("run")
@click.argument("repo_id", metavar="OWNER/REPO")
@click.option("--direction", type=click.Choice(("both", "a2b", "b2a")), default="both", show_default=True,
              help="Generators to upload; both = every one the model has (two for CycleGAN, one for CUT).")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--token", help="Hugging Face token [default: HF_TOKEN, or the one `hf auth login` saved].")
@click.option("--license", "license_", metavar="ID",
              help="Licence id for the model card, e.g. mit, cc-by-nc-4.0.")
@click.option("--eval", "eval_json", type=click.Path(dir_okay=False, path_type=Path),
              help="eval.json whose metrics the card reports [default: the one evaluate wrote for RUN].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the packaged folder (exports + README.md) here.")
@click.option("--dry-run", is_flag=True, help="Package into --out, upload nothing.")
@click.option("--no-ema", is_flag=True,
              help="Upload the trained weights, not the checkpoint's EMA generator.")
def push_cmd(run, repo_id, direction, private, token, license_, eval_json, out, dry_run, no_ema) -> None:
    """Upload RUN (run/checkpoint folder or export) to the Hugging Face Hub with a model card."""
    result = push(run, repo_id, direction=direction, private=private, token=token, license=license_,
                  eval_json=eval_json, ema=not no_ema, out=out, dry_run=dry_run)
    click.echo(result.line())
