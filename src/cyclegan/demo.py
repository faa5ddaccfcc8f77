"""``cyclegan demo``: the whole pipeline offline on CPU, on images the project draws itself.

Domain A is "photos" (gradients, shading, noise), domain B is "cartoons" (flat posterised colours with
dark outlines); the demo trains the ``tiny`` recipe on them, writes sample grids and checkpoints, and
translates the test photos with the trained generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from cyclegan.checkpoint import load_generator
from cyclegan.config import build_config
from cyclegan.data import find_images
from cyclegan.image import load_image, pil_to_uint8, save_image_atomic, to_model_range, to_uint8, uint8_to_pil
from cyclegan.synthetic import make_unpaired_dataset
from cyclegan.training import train

DEMO_STEPS = 600


def _fresh_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... so a demo never writes into an existing folder."""
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def run_demo(
    out: Path | None = None,
    *,
    steps: int | None = None,
    device: str = "cpu",
    echo: Callable[[str], None] = print,
) -> str:
    out = _fresh_dir(Path(out) if out is not None else Path("runs") / "demo")
    start = time.perf_counter()
    data = make_unpaired_dataset(out / "data", n_train=60, n_test=6, size=48, seed=0)
    echo(f"demo: drew 2 x 60 training images in {data}")
    steps = steps or DEMO_STEPS
    cfg = build_config(
        preset="tiny",
        overrides={
            "data.dataroot": str(data),
            "data.load_size": 40,
            "data.crop_size": 32,
            "train.device": device,
            "train.max_steps": steps,
            "train.epochs": max(1, -(-steps // 60)),
            "train.log_every": 20,
            "train.tensorboard": False,
            # A toy network: a second intra-op thread costs more in synchronisation than it saves,
            # and on a busy machine it can slow every step down tenfold.
            "train.num_threads": 1,
        },
    )
    run = out / "run"
    echo(f"demo: training the 'tiny' recipe for {steps} iterations into {run}")
    result = train(cfg, run, progress=True, echo=echo)

    generator, _ = load_generator(run, direction="a2b", device="cpu")
    translated = out / "translated"
    with torch.no_grad():
        for path in find_images(data / "testA"):
            x = to_model_range(pil_to_uint8(load_image(path)).unsqueeze(0))  # [1, 3, 48, 48]
            y = to_uint8(generator(x))[0]
            save_image_atomic(uint8_to_pil(y), translated / path.name)
    elapsed = time.perf_counter() - start
    losses = ", ".join(f"{k} {result.last_log[k]:.3f}" for k in ("G_total", "cycle_A", "D_B") if k in result.last_log)
    return (
        f"demo finished in {elapsed:.0f} s: {result.step} iterations ({losses})\n"
        f"  samples:     {run / 'samples'}\n"
        f"  checkpoints: {run / 'checkpoints'}\n"
        f"  translated:  {translated}"
    )
