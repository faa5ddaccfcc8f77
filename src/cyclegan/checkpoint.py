"""Checkpoints: safetensors weights + JSON config + a tensors-only training state, written atomically.

A checkpoint is a directory::

    config.json           the full resolved Config: rebuilds every network with no flags
    meta.json             step, epoch, time, package version (for humans and tools), and the
                          SHA-256 of every other file, checked whenever one is loaded
    G_A.safetensors ...   one file per network (G_A: A->B, G_B: B->A, D_A, D_B; a CUT model has
                          G_A, D_B and F; with EMA also G_A_ema, G_B_ema)
    state.pt              optimizers, grad scaler, image pools, RNG states, step counters;
                          only tensors and plain containers, so torch.load(weights_only=True) reads it

It is written into a hidden temporary directory, flushed, and renamed into place; the previous
version is renamed to ``<name>.prev`` first and deleted last, so a kill at any instant leaves either
the old or the new checkpoint complete, and ``resolve_checkpoint`` finds whichever exists.

Loading checks each file against the SHA-256 recorded when it was written (flipped bytes on a
disk or in a copy would otherwise load silently and translate wrongly) and refuses NaN or infinite
weights; checkpoints from before the hashes were recorded load unchecked.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load
from torch import nn

from cyclegan import networks as nets  # not `networks`: functions here name their dicts so
from cyclegan.config import Config, config_from_dict
from cyclegan.errors import CheckpointError, CorruptCheckpointError, CycleGANError, plain_reason
from cyclegan.fileio import save_safetensors_atomic, write_text_atomic
from cyclegan.torchfile import UnsafeFileError, load_weights_only
from cyclegan.version import __version__

GENERATOR_FOR_DIRECTION = {"a2b": "G_A", "b2a": "G_B"}


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module under torch.compile (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        if hasattr(net, "_orig_mod"):
            net = net._orig_mod
        elif isinstance(net, nn.parallel.DistributedDataParallel):
            net = net.module
        else:
            return net


SHA256_KEY = "sha256"  # meta.json: {file name: hex SHA-256 of its bytes}
_CHUNK = 1 << 20


def _sha256_of(f) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _hash_and_fsync(path: Path) -> str:
    """SHA-256 of a file just written (read back from the page cache), then flushed to disk."""
    with open(path, "rb") as f:
        digest = _sha256_of(f)
        os.fsync(f.fileno())
    return digest


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return _sha256_of(f)


def record_sha256(folder: str | Path, names) -> dict[str, str]:
    """Record the SHA-256 of the files ``names`` of ``folder`` in its ``meta.json`` (other keys kept),
    so that ``load_weights`` / ``load_state`` check them. For folders not written by
    ``save_checkpoint``: the safetensors export (generator.safetensors + config.json)."""
    folder = Path(folder)
    meta = read_meta(folder)
    meta[SHA256_KEY] = {**meta.get(SHA256_KEY, {}), **{name: file_sha256(folder / name) for name in names}}
    write_text_atomic(folder / "meta.json", json.dumps(meta, indent=2))
    return meta[SHA256_KEY]


SIDECAR_SUFFIX = ".sha256"  # single-file exports: "<hex>  <name>" next to the file, as sha256sum writes it


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sha256_sidecar(path: str | Path) -> Path:
    """Record a single-file model's SHA-256 next to it (``sha256sum -c`` checks it too)."""
    path = Path(path)
    return write_text_atomic(sidecar_path(path), f"{file_sha256(path)}  {path.name}\n")


def verify_sha256_sidecar(path: str | Path) -> None:
    """Check a single-file model against its ``.sha256`` sidecar, when it has one (older exports don't)."""
    path, sidecar = Path(path), sidecar_path(path)
    if not sidecar.is_file():
        return
    try:
        expected = sidecar.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        raise CorruptCheckpointError(f"{sidecar}: unreadable checksum file") from None
    if file_sha256(path) != expected:
        raise CorruptCheckpointError(
            f"{path}: corrupt model file (its SHA-256 differs from the one in {sidecar.name}, written at "
            "export)"
        )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on some platforms (Windows); rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _weights(net: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous, unshared tensors; channels_last weights are not contiguous.
    return {k: v.detach().cpu().contiguous().clone() for k, v in unwrap(net).state_dict().items()}


def host_copy(obj):
    """``obj`` with every tensor copied to the CPU (containers rebuilt): a snapshot that later
    in-place updates (optimizer steps) cannot change."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return obj._make(host_copy(v) for v in obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    if isinstance(obj, (int, float, str, bool, bytes, type(None), torch.dtype, torch.device)):
        return obj
    return copy.deepcopy(obj)  # anything else mutable must not be shared with the live state


def save_checkpoint(
    dest: Path,
    *,
    config: Config,
    networks: Mapping[str, nn.Module],
    state: dict | None = None,
    meta: dict | None = None,
) -> Path:
    """Write a checkpoint directory at ``dest`` atomically (see module docstring)."""
    weights = {name: _weights(net) for name, net in networks.items()}
    return _write_checkpoint(Path(dest), config=config, weights=weights, state=state, meta=meta)


def _check_finite_weights(dest: Path, weights: Mapping[str, dict]) -> None:
    # A diverged run must not replace a good checkpoint with NaN weights (they translate to black).
    for name, tensors in weights.items():
        for key, t in tensors.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise CheckpointError(
                    f"{dest}: refusing to write non-finite weights ({name}: tensor {key} holds non-finite "
                    "values, NaN or inf); the previous checkpoint is kept"
                )


def _write_checkpoint(
    dest: Path, *, config: Config, weights: Mapping[str, dict], state: dict | None, meta: dict | None
) -> Path:
    _check_finite_weights(dest, weights)
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{dest.name}.tmp-*"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".{dest.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        (tmp / "config.json").write_text(config.to_json(), encoding="utf-8")
        for name, tensors in weights.items():
            # Not safetensors' save_file: it creates files 0600 whatever the umask (fileio's note).
            save_safetensors_atomic(tensors, tmp / f"{name}.safetensors")
        if state is not None:
            torch.save(state, tmp / "state.pt")
        # Every file is hashed right after it was written, while it is still in the page cache.
        hashes = {f.name: _hash_and_fsync(f) for f in sorted(tmp.iterdir())}
        info = {"version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **(meta or {})}
        info["networks"] = sorted(weights)
        info[SHA256_KEY] = hashes
        (tmp / "meta.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        _hash_and_fsync(tmp / "meta.json")
        _fsync_dir(tmp)
        prev = parent / f"{dest.name}.prev"
        if dest.exists():
            shutil.rmtree(prev, ignore_errors=True)
            os.replace(dest, prev)
        os.replace(tmp, dest)
        _fsync_dir(parent)
        shutil.rmtree(prev, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


class CheckpointWriter:
    """Checkpoints written on a background thread, so training goes on while the files are written.

    ``save`` copies every tensor to the host first (the optimizer state is updated in place by the
    next step, so the copy is the snapshot); that copy is all the training loop waits for. The
    write itself (serialisation, fsync, the atomic rename of ``save_checkpoint``) runs on one
    writer thread. At most one write is pending: a ``save`` while the previous one is still being
    written waits for it, so checkpoints land in call order and at most one extra copy is held.
    A failed write raises CheckpointError from the next ``save``, ``wait`` or ``close``.
    ``background=False`` writes in the caller's thread (the same files, for debugging).
    """

    def __init__(self, *, background: bool = True) -> None:
        self.background = background
        self._pool = ThreadPoolExecutor(max_workers=1,
                                        thread_name_prefix="checkpoint") if background else None
        self._pending: Future | None = None

    def save(
        self,
        dest: Path,
        *,
        config: Config,
        networks: Mapping[str, nn.Module],
        state: dict | None = None,
        meta: dict | None = None,
    ) -> None:
        self.wait()
        weights = {name: _weights(net) for name, net in networks.items()}
        job = partial(_write_checkpoint, Path(dest), config=config, weights=weights,
                      # the copy is only needed while training goes on during the write
                      state=state if self._pool is None else host_copy(state), meta=dict(meta or {}))
        if self._pool is None:
            self._run(job, Path(dest))
        else:
            self._pending = self._pool.submit(self._run, job, Path(dest))

    @staticmethod
    def _run(job, dest: Path) -> None:
        try:
            job()
        except CycleGANError:
            raise  # already one line naming the checkpoint (non-finite weights)
        except Exception as e:  # noqa: BLE001 - disk full reaches us as OSError, SafetensorError or
            # torch's RuntimeError: one line naming the checkpoint, in plain words, for all of them
            raise CheckpointError(f"{dest}: could not write the checkpoint ({plain_reason(e)})") from None

    def wait(self) -> None:
        """Block until the pending write is on disk; raise its error, once."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self, *, raise_errors: bool = True) -> CheckpointError | None:
        """Wait for the pending write and stop the thread. With ``raise_errors=False`` (another error
        is already on its way) a failed write is returned instead of raised, so it cannot hide that one."""
        try:
            self.wait()
        except CheckpointError as e:
            if raise_errors:
                raise
            return e
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        return None


def read_meta(ckpt: Path) -> dict:
    """A checkpoint's ``meta.json`` ({} when it is missing or unreadable: old or damaged checkpoints)."""
    try:
        meta = json.loads((Path(ckpt) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: hostile nesting
        return {}
    return meta if isinstance(meta, dict) else {}


def checkpoint_step(ckpt: Path) -> int | None:
    """The training step a checkpoint was written at (from its meta.json), or None when unknown."""
    step = read_meta(ckpt).get("step")
    return step if isinstance(step, int) else None


def missing_files(ckpt: Path, *, resumable: bool = False) -> list[str]:
    """The files checkpoint ``ckpt`` lacks: its config, a network its meta.json lists, ``state.pt``
    when ``resumable`` (what a kill in the middle of copying or deleting would leave out)."""
    ckpt = Path(ckpt)
    wanted = ["config.json"] + (["state.pt"] if resumable else [])
    networks = read_meta(ckpt).get("networks")
    if isinstance(networks, list) and networks:
        wanted += [f"{name}.safetensors" for name in networks]
    elif not any(ckpt.glob("*.safetensors")):  # older meta.json without the list
        wanted.append("G_A.safetensors")
    return [name for name in wanted if not (ckpt / name).is_file()]


def is_complete(ckpt: Path, *, resumable: bool = False) -> bool:
    return not missing_files(ckpt, resumable=resumable)


def _no_checkpoint(run: Path) -> CheckpointError:
    folder = run / "checkpoints"
    partial = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    if partial:
        what = "; ".join(f"{p.name} ({', '.join(missing_files(p))} missing)" for p in partial[:3])
        return CheckpointError(f"{run}: no complete checkpoint in checkpoints/: {what}")
    return CheckpointError(f"{run}: no checkpoint yet (the run stopped before its first save): start again "
                           "with --overwrite")


def _recency(ckpt: Path) -> tuple[int, int]:
    # Newest step first; on a tie (latest and the epoch checkpoint written at the same step) latest,
    # then epoch, then best; a .prev version is older than the checkpoint it was replaced by.
    name = ckpt.name
    rank = 0 if name.endswith(".prev") else 3 if name == "latest" else 2 if name.startswith("epoch_") else 1
    step = checkpoint_step(ckpt)
    return (-1 if step is None else step, rank)


def run_checkpoints(run: str | Path, *, resumable: bool = False) -> list[Path]:
    """The complete checkpoints of run directory ``run`` (latest, epoch_*, best and any .prev
    version), newest first by the step in their meta.json; ``resumable``: those with ``state.pt``."""
    folder = Path(run) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
             and is_complete(p, resumable=resumable)]
    return sorted(found, key=_recency, reverse=True)


def resume_checkpoint(run: str | Path) -> Path:
    """The checkpoint ``--resume`` continues from: the newest complete one holding a training state."""
    run = Path(run)
    if found := run_checkpoints(run, resumable=True):
        return found[0]
    if weights_only := run_checkpoints(run):
        name = weights_only[0].relative_to(run)
        raise CheckpointError(
            f"{run}: {name} holds weights only (no state.pt: epoch and best checkpoints keep no training "
            "state unless train.epoch_checkpoint_state is on) and cannot be resumed; start a new run from "
            f"its weights with --init-from {weights_only[0]} --init-nets G_A,G_B,D_A,D_B"
        )
    raise _no_checkpoint(run)


def is_run_dir(path: Path) -> bool:
    """A training run's folder (its log or checkpoints folder), as opposed to one checkpoint."""
    return (path / "checkpoints").is_dir() or (path / "log.jsonl").is_file()


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (-> its newest complete checkpoint of any kind), or a checkpoint directory itself."""
    path = Path(path)
    prev = path.with_name(path.name + ".prev")
    if not path.exists() and prev.is_dir():  # killed between the two renames of save_checkpoint
        return prev
    if not path.exists():
        raise CheckpointError(f"{path}: no such run or checkpoint")
    if path.is_dir() and is_run_dir(path) and not any(path.glob("*.safetensors")):
        if found := run_checkpoints(path):
            return found[0]
        raise _no_checkpoint(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no config.json)")
    return path


def load_checkpoint_config(ckpt: Path) -> Config:
    try:
        tree = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
        return config_from_dict(tree)
    except RecursionError:  # hostile nesting: json and the config builder recurse per level
        raise CheckpointError(f"{ckpt / 'config.json'}: unreadable (nested too deeply)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt / 'config.json'}: unreadable ({e})") from None
    except CycleGANError as e:
        raise CheckpointError(f"{ckpt / 'config.json'}: invalid config ({e})") from None


def _read_checked(path: Path, what: str) -> bytes:
    """The bytes of checkpoint file ``path``, checked against the SHA-256 its folder's meta.json
    recorded when it was written (no record, as in older checkpoints: no check)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable ({plain_reason(e)})") from None
    expected = read_meta(path.parent).get(SHA256_KEY, {})
    expected = expected.get(path.name) if isinstance(expected, dict) else None
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CorruptCheckpointError(
            f"{path}: corrupt {what} (its SHA-256 differs from the one recorded in meta.json when it was "
            "written)"
        )
    return data


def _check_finite(path: Path, tensors: Mapping[str, torch.Tensor], prefix: str = "") -> None:
    for key, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CorruptCheckpointError(
                f"{path}: tensor {prefix}{key} holds non-finite values (NaN or inf): the run had diverged "
                "when it was saved; use an earlier checkpoint"
            )


def load_weights(ckpt: Path, name: str) -> dict[str, torch.Tensor]:
    path = Path(ckpt) / f"{name}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing from the checkpoint")
    data = _read_checked(path, "weights file")
    try:
        tensors = load(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt weights file ({e})") from None
    _check_finite(path, tensors)
    return tensors


def load_into(net: nn.Module, ckpt: Path, name: str) -> None:
    weights = load_weights(ckpt, name)
    try:
        unwrap(net).load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:2]
        raise CheckpointError(
            f"{Path(ckpt) / (name + '.safetensors')}: does not match the configured network "
            f"({' '.join(first)})"
        ) from None


def load_state(ckpt: Path, *, map_location: str | torch.device = "cpu") -> dict:
    path = Path(ckpt) / "state.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (this checkpoint holds weights only and cannot resume)")
    data = _read_checked(path, "training state")
    try:
        state = load_weights_only(data, map_location=map_location)
    except UnsafeFileError as e:  # pickled code, a zip bomb or junk: never loaded, torch's advice never shown
        raise CheckpointError(f"{path}: corrupt training state ({e.reason})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: corrupt training state (a {type(state).__name__}, not a mapping)")
    _check_finite(path, _flatten(state))
    return state


def _flatten(obj, prefix: str = "") -> dict:
    """{"opt_g.state.3.exp_avg": tensor, ...} for every tensor in nested dicts and lists."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return {prefix.rstrip("."): obj} if isinstance(obj, torch.Tensor) else {}
    flat = {}
    for k, v in items:
        flat.update(_flatten(v, f"{prefix}{k}."))
    return flat


def load_generator(
    path: str | Path, *, direction: str = "a2b", device: str | torch.device = "cpu", ema: bool = True
) -> tuple[nn.Module, Config]:
    """Rebuild one generator from a run or checkpoint directory using only its saved config.

    With ``ema`` (the default) a checkpoint's moving-average generator (``G_A_ema``) is used when it
    has one; ``ema=False`` takes the trained weights. A damaged checkpoint (SHA-256 mismatch,
    non-finite weights) falls back to its ``.prev`` version where one exists.
    """
    if direction not in GENERATOR_FOR_DIRECTION:
        raise CheckpointError(f"direction {direction!r}: choose from a2b, b2a")
    ckpt = resolve_checkpoint(path)
    try:
        return _load_generator(ckpt, direction=direction, device=device, ema=ema)
    except CorruptCheckpointError as e:
        # A kill after the new version was renamed in may leave the previous one complete beside it.
        if (prev := previous_version(ckpt)) is None:
            raise
        try:
            return _load_generator(prev, direction=direction, device=device, ema=ema)
        except CheckpointError:
            raise e from None


def previous_version(ckpt: Path) -> Path | None:
    """``<name>.prev`` beside checkpoint ``ckpt`` when it exists (left by a save killed before it
    could delete it): the fallback when ``ckpt`` turns out to be damaged."""
    ckpt = Path(ckpt)
    prev = ckpt.with_name(ckpt.name + ".prev")
    return prev if not ckpt.name.endswith(".prev") and (prev / "config.json").is_file() else None


def _load_generator(ckpt: Path, *, direction: str, device, ema: bool) -> tuple[nn.Module, Config]:
    cfg = load_checkpoint_config(ckpt)
    if direction == "b2a" and cfg.model.kind != "cyclegan":
        raise CheckpointError(
            f"{ckpt}: a {cfg.model.kind} model is one-sided and translates a2b only (it has no B -> A "
            "generator)"
        )
    net = nets.build_generator(cfg.model.generator, init=cfg.model.init, init_gain=cfg.model.init_gain)
    name = GENERATOR_FOR_DIRECTION[direction]
    if ema and (Path(ckpt) / f"{name}_ema.safetensors").is_file():
        name += "_ema"
    load_into(net, ckpt, name)
    return net.to(device).eval(), cfg
