"""Share a trained model on the Hugging Face Hub: ``cyclegan push RUN OWNER/REPO``.

The repository gets safetensors exports (``cyclegan.export``; weights, config.json and meta.json with
their SHA-256) and a generated model card (README.md): what it translates, the architecture, the
training data and recipe, and the metrics of ``cyclegan evaluate`` when an eval.json is found. A
two-sided model (CycleGAN) gets both generators, in ``a2b/`` and ``b2a/``; a one-sided one (CUT,
FastCUT) or an export gets its one direction at the top. Either loads back with
``--checkpoint hf:OWNER/REPO`` (``cyclegan.sources``), ``--direction`` choosing between the two.

Uploading goes through ``huggingface_hub.HfApi`` (the ``hub`` extra): its token (``--token``,
``HF_TOKEN`` or ``hf auth login``) and endpoint settings apply.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from cyclegan.checkpoint import read_meta
from cyclegan.config import Config
from cyclegan.download import offline_mode, offline_reason
from cyclegan.errors import CheckpointError, CycleGANError, first_line
from cyclegan.export import export_module
from cyclegan.fileio import temp_sibling, write_text_atomic
from cyclegan.modelfile import LoadedGenerator, load_any_generator
from cyclegan.sources import parse_hf_spec, resolve_source
from cyclegan.version import __version__

__all__ = ["PushError", "PushResult", "build_push_folder", "model_card", "push"]

DIRECTIONS = ("a2b", "b2a")
_METRICS = (("fid", "FID"), ("kid_mean", "KID"), ("is_mean", "IS"), ("gms", "GMS"),
            ("cycle_l1", "cycle L1"), ("psnr", "PSNR"), ("ssim", "SSIM"))


class PushError(CycleGANError):
    """A model that cannot be packaged or uploaded (no weights, no token, Hub refusal)."""


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    directions: tuple[str, ...]
    folder: Path | None  # the packaged folder when kept (--out), else None
    url: str | None  # the commit on the Hub, None for a dry run

    def line(self) -> str:
        what = " and ".join(self.directions)
        if self.url is None:
            return f"packaged {what} for {self.repo_id} in {self.folder} (dry run: nothing uploaded)"
        return f"pushed {what} to {self.repo_id}: {self.url} (load with --checkpoint hf:{self.repo_id})"


# ------------------------------------------------------------------------------------- packaging


def _directions(loaded: LoadedGenerator, wanted: str) -> tuple[str, ...]:
    """Which generators to package: ``wanted`` a2b/b2a, or "both" = every one the model has."""
    two_sided = loaded.kind == "checkpoint" and loaded.info.config is not None and (
        loaded.info.config.model.kind == "cyclegan"
    )
    if wanted == "both":
        return DIRECTIONS if two_sided else (loaded.info.direction,)
    if wanted not in DIRECTIONS:
        raise PushError(f"direction {wanted!r}: choose from a2b, b2a, both")
    if wanted != loaded.info.direction and not two_sided:
        raise PushError(f"{loaded.path}: has only the {loaded.info.direction} generator")
    return (wanted,)


def _find_eval(source: Path, ckpt: Path | None) -> Path | None:
    """The eval.json ``cyclegan evaluate`` wrote for this checkpoint (or for the run's latest)."""
    candidates = [source / "eval.json"] if source.is_dir() else []
    if ckpt is not None:
        if ckpt.parent.name == "checkpoints":
            run = ckpt.parent.parent
            candidates[:0] = [run / ("eval.json" if ckpt.name == "latest" else f"eval_{ckpt.name}.json")]
        candidates.append(ckpt.parent / f"{ckpt.name}.eval.json")
    return next((p for p in candidates if p.is_file()), None)


def build_push_folder(
    source: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    repo_id: str,
    direction: str = "both",
    ema: bool = True,
    eval_json: str | os.PathLike | None = None,
    license: str | None = None,
) -> tuple[str, ...]:
    """Write the exports and README.md for ``source`` into the new folder ``folder``; the directions."""
    folder = Path(folder)
    path = resolve_source(source)
    loaded = load_any_generator(path, direction=None if direction == "both" else direction, ema=ema)
    if not isinstance(loaded.model, nn.Module) or loaded.kind in ("torchscript", "onnx"):
        raise PushError(f"{path}: push needs the PyTorch weights (a run, checkpoint or safetensors export)")
    if loaded.info.config is None:
        raise PushError(f"{path}: has no config; the Hub export needs one to be rebuildable")
    directions = _directions(loaded, direction)
    nets: dict[str, LoadedGenerator] = {}
    for d in directions:
        net = loaded if d == loaded.info.direction else load_any_generator(path, direction=d, ema=ema)
        nets[d] = net
        out = folder / d if len(directions) > 1 else folder
        if out != folder:
            out.parent.mkdir(parents=True, exist_ok=True)
        export_module(net.model, fmt="safetensors", out=out, info=net.info, source=net.path)
    ckpt = loaded.path if loaded.kind == "checkpoint" else None
    eval_path = Path(eval_json) if eval_json is not None else _find_eval(path, ckpt)
    metrics = _read_eval(eval_path) if eval_path is not None else None
    meta = read_meta(ckpt) if ckpt is not None else {}
    card = model_card(
        repo_id=repo_id, config=loaded.info.config, directions=directions,
        parameters=sum(p.numel() for p in nets[directions[0]].model.parameters()),
        size_multiple=loaded.info.size_multiple, step=meta.get("step"), epoch=meta.get("epoch"),
        metrics=metrics, license=license,
    )
    write_text_atomic(folder / "README.md", card)
    return directions


def _read_eval(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PushError(f"{path}: unreadable eval.json ({first_line(e)})") from None
    if not isinstance(doc, dict):
        raise PushError(f"{path}: not an eval.json written by cyclegan evaluate")
    return {**doc, "path": str(path)}


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"


def model_card(
    *,
    repo_id: str,
    config: Config,
    directions: tuple[str, ...],
    parameters: int,
    size_multiple: int,
    step: int | None = None,
    epoch: int | None = None,
    metrics: dict | None = None,
    license: str | None = None,
) -> str:
    """The README.md of a pushed model: Hub metadata, use, architecture, data, recipe, metrics, licence."""
    tree = config.to_dict()
    kind = tree["model"]["kind"]
    sections = [
        _card_header(repo_id, kind=kind, directions=directions, license=license),
        _card_architecture(tree["model"], parameters=parameters, size_multiple=size_multiple),
        _card_data(tree["data"]),
        _card_recipe(tree, step=step, epoch=epoch),
        _card_metrics(metrics),
        _card_licence(license),
    ]
    return "\n".join(line for section in sections for line in section)


def _card_header(repo_id: str, *, kind: str, directions: tuple[str, ...], license: str | None) -> list[str]:
    """Hub metadata (YAML front matter), title, what the repository holds and how to use it."""
    two = len(directions) == 2
    lines = [
        "---",
        "library_name: cyclegan",
        f"license: {license or 'other'}",
        "pipeline_tag: image-to-image",
        "tags:",
        "- image-to-image",
        "- unpaired-image-to-image-translation",
        f"- {kind}",
        "---",
        "",
        f"# {repo_id}",
        "",
        (f"A {kind} model trained with the `cyclegan` toolkit ({__version__}): "
         + ("both generators, domain A -> B (`a2b/`) and B -> A (`b2a/`)." if two
            else f"one generator, direction {directions[0]}.")),
        "",
        "## Use",
        "",
        "```bash",
        "pip install 'cyclegan[hub]'",
        f"cyclegan translate photo.jpg --checkpoint hf:{repo_id} --out translated.png",
    ]
    if two:
        lines.append(f"cyclegan translate photo.jpg --checkpoint hf:{repo_id} --direction b2a --out back.png")
    return lines + [
        "```",
        "",
        ("Each folder is a safetensors export: `generator.safetensors` (the weights, with the model's "
         "settings in its metadata), `config.json` (the full training config) and `meta.json` (SHA-256 of "
         "both, checked on load)."),
        "",
    ]


def _card_architecture(model: dict, *, parameters: int, size_multiple: int) -> list[str]:
    gen = model["generator"]
    return [
        "## Architecture",
        "",
        "| | |",
        "|---|---|",
        f"| model | {model['kind']} |",
        f"| generator | {gen['name']}: " + ", ".join(f"{k} {v}" for k, v in gen.items() if k != "name")
        + " |",
        f"| parameters | {parameters:,} per generator |",
        f"| input | RGB in [-1, 1], height and width multiples of {size_multiple} (translate pads) |",
        "",
    ]


def _card_data(data: dict) -> list[str]:
    lines = ["## Training data", ""]
    if data.get("data_a") or data.get("data_b"):
        lines += [f"- domain A: `{data.get('data_a')}`", f"- domain B: `{data.get('data_b')}`"]
    else:
        lines.append(f"- `{data.get('dataroot')}` (trainA/ and trainB/)")
    return lines + [
        (f"- images resized to {data['load_size']}, random crops of {data['crop_size']} "
         f"({data['preprocess']}, flip {'on' if data['flip'] else 'off'})"),
        "",
    ]


def _card_recipe(tree: dict, *, step: int | None, epoch: int | None) -> list[str]:
    train, optim, loss = tree["train"], tree["optim"], tree["loss"]
    return [
        "## Recipe",
        "",
        f"- preset: `{tree.get('preset') or 'none'}`",
        f"- {train.get('epochs')} epochs, batch size {train.get('batch_size')}, Adam lr {optim.get('lr')}"
        + (f"; trained to step {step}" if step is not None else "")
        + (f" (epoch {epoch})" if epoch is not None else ""),
        "- loss settings: " + ", ".join(f"{k} {v}" for k, v in loss.items()
                                        if isinstance(v, (int, float, str)) and not isinstance(v, bool)
                                        and v not in (0, 0.0, None)),
        "",
    ]


def _card_metrics(metrics: dict | None) -> list[str]:
    """The eval.json scores as a table, or a note saying how to get them."""
    lines = ["## Metrics", ""]
    if not metrics:
        return lines + [("No eval.json was found for this checkpoint: run `cyclegan evaluate` before pushing "
                         "to report FID, KID, IS and cycle metrics here.")]
    feats = metrics.get("features") or {}
    d = metrics.get("data") or {}
    lines += [
        (f"From `cyclegan evaluate` ({metrics.get('time', '?')}; checkpoint step {metrics.get('step', '?')}; "
        f"test images {d.get('test_a', '?')} and {d.get('test_b', '?')} at {d.get('image_size', '?')} px; "
        f"features: {feats.get('name', 'none')})."),
        "",
        "| direction | " + " | ".join(label for _, label in _METRICS) + " |",
        "|---|" + "---|" * len(_METRICS),
    ]
    for direction in DIRECTIONS:
        if isinstance(metrics.get(direction), dict):
            scores = metrics[direction]
            lines.append(f"| {direction} | " + " | ".join(_fmt(scores.get(k)) for k, _ in _METRICS) + " |")
    if metrics.get("inception_error"):
        lines += ["", f"FID/KID/IS were not computed: {metrics['inception_error']}"]
    return lines


def _card_licence(license: str | None) -> list[str]:
    return [
        "",
        "## Licence",
        "",
        (f"Released by the uploader under `{license}`." if license else
         "The uploader gave no licence (`cyclegan push --license`).")
        + " The weights are learnt from the training data above: its terms (many image datasets allow "
        "non-commercial use only) apply to them too.",
        "",
    ]


# -------------------------------------------------------------------------------------- upload


def push(
    source: str | os.PathLike,
    repo_id: str,
    *,
    direction: str = "both",
    private: bool = False,
    token: str | None = None,
    license: str | None = None,
    eval_json: str | os.PathLike | None = None,
    ema: bool = True,
    out: str | os.PathLike | None = None,
    dry_run: bool = False,
    commit_message: str | None = None,
    api_factory: Callable[..., object] | None = None,
) -> PushResult:
    """Package ``source`` (run, checkpoint, export, ``pretrained:``/``hf:``) and upload it to ``repo_id``.

    ``out`` keeps the packaged folder (it must not exist); ``dry_run`` packages without uploading
    (and needs ``out``). ``api_factory`` builds the Hub client (default ``huggingface_hub.HfApi``).
    """
    repo_id, revision = parse_hf_spec(repo_id if repo_id.startswith("hf:") else "hf:" + repo_id)
    if revision is not None:
        raise PushError(f"{repo_id}@{revision}: push to OWNER/REPO (the main branch)")
    if dry_run and out is None:
        raise PushError("--dry-run needs --out DIR to keep the packaged folder")
    if not dry_run and offline_mode():
        raise PushError(f"{offline_reason()} forbids uploading to the Hub")
    if out is not None and (Path(out).exists() or Path(out).is_symlink()):
        raise PushError(f"{out}: already exists; choose a new folder for --out")
    if not dry_run and api_factory is None:
        try:
            import huggingface_hub  # optional: the `hub` extra
        except ImportError:
            raise PushError("push needs huggingface_hub: pip install 'cyclegan[hub]'") from None
        api_factory = huggingface_hub.HfApi
    with tempfile.TemporaryDirectory(prefix="cyclegan-push-") as tmp:
        folder = Path(out) if out is not None else Path(tmp) / "model"
        staging = Path(tmp) / "staging"
        try:
            directions = build_push_folder(source, staging, repo_id=repo_id, direction=direction, ema=ema,
                                           eval_json=eval_json, license=license)
        except CheckpointError as e:
            raise PushError(first_line(e)) from None
        if out is not None:  # whole or not at all, like every other output
            folder.parent.mkdir(parents=True, exist_ok=True)
            keep = temp_sibling(folder)
            try:
                shutil.copytree(staging, keep)
                os.replace(keep, folder)
            finally:
                shutil.rmtree(keep, ignore_errors=True)
        if dry_run:
            return PushResult(repo_id=repo_id, directions=directions, folder=folder, url=None)
        message = commit_message or f"Upload {' and '.join(directions)} with cyclegan {__version__}"
        url = _upload(api_factory(token=token), repo_id, staging, private=private, message=message)
    return PushResult(repo_id=repo_id, directions=directions, folder=Path(out) if out else None, url=url)


def _upload(api, repo_id: str, folder: Path, *, private: bool, message: str) -> str:
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=message)
    except CycleGANError:
        raise
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises HTTP, auth and validation errors alike
        raise PushError(f"upload to {repo_id} failed: {type(e).__name__}: {first_line(e, '')}") from None
    return str(getattr(info, "commit_url", None) or getattr(info, "oid", None) or info)
