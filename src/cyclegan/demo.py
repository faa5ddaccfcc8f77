"""``cyclegan demo``: the whole pipeline offline on CPU, on images the project draws itself.

Domain A is "photos" (gradients, shading, noise), domain B is "cartoons" (flat posterised colours with
dark outlines); the demo trains the ``tiny`` recipe at twice its widths on them (ResNet generators
with ngf 16 and 3 residual blocks, a 2-layer PatchGAN with ndf 16, 32px crops, 3000 iterations =
50 epochs of 60 images), writes sample grids and checkpoints (latest and one weights-only epoch
checkpoint), and translates the test photos with the trained generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cyclegan.config import Config, build_config
from cyclegan.synthetic import make_unpaired_dataset
from cyclegan.training import train
from cyclegan.translate import Translator, translate_paths

DEMO_STEPS = 3000  # its CPU time, measured: docs/benchmarks.md, "Install size and the demo"
DEMO_IMAGES = 60  # training images per domain: 3000 iterations are 50 epochs


def _fresh_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... so a demo never writes into an existing folder."""
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def demo_config(data: Path, *, steps: int, device: str) -> Config:
    """The demo's recipe: the ``tiny`` preset, twice as wide, for ``steps`` iterations."""
    epochs = max(1, -(-steps // DEMO_IMAGES))  # batch 1: one iteration per training image
    return build_config(
        preset="tiny",
        overrides={
            "data.dataroot": str(data),
            "data.load_size": 40,
            "data.crop_size": 32,
            # twice the tiny preset's widths: visibly learns the flat colours and outlines in 3000 steps
            "model.generator.ngf": 16,
            "model.generator.n_blocks": 3,
            "model.discriminator.ndf": 16,
            "train.sample_every": 10,
            "train.device": device,
            "train.max_steps": steps,
            "train.epochs": epochs,
            # The demo needs latest (translate, resume); the tiny preset's checkpoint per epoch
            # would be 50 copies. Only the last epoch's, weights only, is written.
            "train.save_epoch_every": epochs,
            "train.keep_epochs": 1,
            "train.log_every": 20,
            "train.tensorboard": False,
            # A toy network: a second intra-op thread costs more in synchronisation than it saves,
            # and on a busy machine it can slow every step down tenfold.
            "train.num_threads": 1,
        },
    )


def run_demo(
    out: Path | None = None,
    *,
    steps: int | None = None,
    device: str = "cpu",
    echo: Callable[[str], None] = print,
) -> str:
    out = _fresh_dir(Path(out) if out is not None else Path("runs") / "demo")
    start = time.perf_counter()
    data = make_unpaired_dataset(out / "data", n_train=DEMO_IMAGES, n_test=6, size=48, seed=0)
    echo(f"demo: drew 2 x {DEMO_IMAGES} training images in {data}")
    steps = steps or DEMO_STEPS
    cfg = demo_config(data, steps=steps, device=device)
    run = out / "run"
    echo(f"demo: training the 'tiny' recipe (twice as wide) for {steps} iterations into {run}")
    result = train(cfg, run, progress=True, echo=echo)

    # The same path as `cyclegan translate`: full resolution, one pre/post-processing implementation.
    translated = out / "translated"
    translator = Translator.from_checkpoint(run, direction="a2b", device=device)
    summary = translate_paths(translator, [str(data / "testA")], out=translated, echo=echo)
    echo(f"demo: {summary.line()}")
    elapsed = time.perf_counter() - start
    losses = ", ".join(f"{k} {result.last_log[k]:.3f}" for k in ("G_total", "cycle_A",
                                                                 "D_B") if k in result.last_log)
    return (
        f"demo finished in {elapsed:.0f} s: {result.step} iterations ({losses})\n"
        f"  samples:     {run / 'samples'}\n"
        f"  checkpoints: {run / 'checkpoints'}\n"
        f"  translated:  {translated}"
    )
