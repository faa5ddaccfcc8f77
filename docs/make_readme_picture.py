"""Draw the README's picture: synthetic "photos" and their translations by the offline demo's model.

    python docs/make_readme_picture.py            # writes docs/img/demo_translation.png

Runs ``cyclegan demo`` (no data, no network: the images come from ``cyclegan.synthetic``; a few
minutes on a CPU) into a temporary folder, then puts four test photos above their translations,
each scaled 4x with nearest-neighbour so the 48-px pixels stay visible.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from cyclegan.demo import run_demo

SCALE = 4  # 48-px test images -> 192-px tiles
N_IMAGES = 4
GAP = 8
LABEL_W = 86


def compose(photos: list[Path], translated: list[Path]) -> Image.Image:
    """Photos in the top row, their translations under them, labelled on the left."""
    tiles = [[Image.open(p).convert("RGB") for p in row] for row in (photos, translated)]
    side = tiles[0][0].width * SCALE
    width = LABEL_W + len(photos) * (side + GAP)
    canvas = Image.new("RGB", (width, 2 * side + 3 * GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, label) in enumerate(zip(tiles, ("photo", "translated"))):
        y = GAP + r * (side + GAP)
        draw.text((6, y + side // 2 - 6), label, fill="black")
        for c, img in enumerate(row):
            canvas.paste(img.resize((side, side), Image.NEAREST), (LABEL_W + c * (side + GAP), y))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "img" / "demo_translation.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(run_demo(Path(tmp) / "demo"))
        demo = Path(tmp) / "demo"
        photos = sorted((demo / "data" / "testA").glob("*.png"))[:N_IMAGES]
        translated = [demo / "translated" / p.name for p in photos]
        missing = [p for p in translated if not p.exists()]
        if missing:
            raise SystemExit(f"error: the demo wrote no translation for {missing[0].name}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        compose(photos, translated).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
