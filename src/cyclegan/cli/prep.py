"""``cyclegan prep pack|remove-background|frames|edge-smooth``: dataset preparation."""

from __future__ import annotations

from pathlib import Path

import click

from cyclegan.prep import pack_folder, remove_background
from cyclegan.prep.edges import EdgeSmoothSettings, edge_smooth_folder
from cyclegan.prep.frames import FramesSettings, extract_frames, parse_per_shot


@click.group()
def prep() -> None:
    """Dataset preparation: pack folders into .npz arrays, put subjects on white backgrounds, turn films
    into style frames, edge-smooth style images."""

@prep.command("pack")
@click.argument("in_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .npz to write.")
@click.option("--size", type=int, default=64, show_default=True, help="Square side of the stored images.")
@click.option("--fit", type=click.Choice(["crop", "stretch"]), default="crop", show_default=True,
              help="crop: centre-crop to square then resize; stretch: resize the whole image.")
@click.option("--compress/--no-compress", default=True, show_default=True,
              help="Compressed (smaller, decompressed into memory) or stored (memory-mapped when training).")
@click.option("--limit", type=int, default=0, help="Keep only the first N images (0 = all).")
def prep_pack_cmd(in_dir, out, size, fit, compress, limit) -> None:
    """Pack every image under IN_DIR into one uint8 [N, SIZE, SIZE, 3] .npz (np.savez_compressed)."""
    result = pack_folder(in_dir, out, size=size, fit=fit, compress=compress, limit=limit)
    for path, why in result.skipped:
        click.echo(f"warning: skipped {path} ({why})", err=True)
    click.echo(f"wrote {result.count} images of {size}x{size} to {result.out}")


@prep.command("remove-background")
@click.argument("in_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--masks", "masks_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of masks (white = subject, same relative names as IN_DIR); used instead of "
                   "GrabCut.")
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
@click.option("--max-frames", type=int, default=0,
              help="At most this many frames in the folder (0 = no cap).")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path),
              help="Contact sheet PNG (default: OUT_contact.png next to OUT).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prep_frames_cmd(videos, out_dir, per_shot, size, fmt, crop_bottom, dedupe_distance, min_edges,
                    shot_threshold, max_frames, preview, quiet) -> None:
    """Turn films or episodes (files or folders) into a folder of style training frames."""
    settings = FramesSettings(per_shot=parse_per_shot(per_shot), size=size, fmt=fmt, crop_bottom=crop_bottom,
                              dedupe_distance=dedupe_distance, min_edges=min_edges,
                              shot_threshold=shot_threshold)
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
              help="Scale each image's shorter side to this before smoothing (0 = keep); use the training "
                   "scale.")
def prep_edge_smooth_cmd(style_dir, out_dir, size) -> None:
    """Edge-smoothed copies of style images for loss.lambda_edge_promote (CartoonGAN)."""
    result = edge_smooth_folder(style_dir, out_dir, settings=EdgeSmoothSettings(size=size))
    for path, why in result.skipped:
        click.echo(f"warning: skipped {path} ({why})", err=True)
    click.echo(f"wrote {result.written} edge-smoothed images to {result.out_dir} ({result.existing} already "
               "there)")


