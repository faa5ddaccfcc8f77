"""Feature networks for FID, KID and IS: uint8 images in, pool features and class logits out.

Every metric in this package sees images only through a ``FeatureExtractor``: a callable mapping a
uint8 batch ``[N, 3, H, W]`` to ``Features(pool=[N, D] float64, logits=[N, C] float64 or None)``.

The default, ``InceptionFeatureExtractor``, is pytorch-fid's ``InceptionV3`` with the TensorFlow FID
weights ``pt_inception-2015-12-05-6726825d.pth`` (Heusel et al. 2017), the network behind published
CycleGAN / CUT FID figures. Its preprocessing is pytorch-fid's own and is not changed here:

    uint8 [0, 255] -> float / 255 -> bilinear resize to 299 x 299 (``F.interpolate``,
    align_corners=False, no antialiasing) -> x * 2 - 1 -> Inception -> 2048-d average pool ("pool3").

so feeding images that were saved as PNG and read back gives exactly pytorch-fid's activations.
The weights are looked up at ``--inception-weights PATH`` or in torch hub's cache
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``, where pytorch-fid keeps
them too). When neither has them they are downloaded once, as every FID tool does, from pytorch-fid's
release (``FID_WEIGHTS_URL``) through ``cyclegan.download``: progress bar, the SHA-256 prefix the file
name encodes checked, atomic move into the hub cache. ``--offline`` / ``CYCLEGAN_OFFLINE=1`` /
``HF_HUB_OFFLINE=1`` forbid that; then, as on any download failure, ``InceptionUnavailableError``
names the file to fetch by hand and where to put it.

``RandomFeatureExtractor`` is a small, randomly initialised, deterministic network with the same
interface; tests and offline smoke runs use it. Its numbers are not comparable with anything published.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from cyclegan.download import DownloadError, download, hash_prefix_from_name
from cyclegan.errors import InceptionUnavailableError, first_line
from cyclegan.torchfile import UnsafeFileError, load_weights_only

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_URL",
    "FeatureExtractor",
    "Features",
    "InceptionFeatureExtractor",
    "RandomFeatureExtractor",
    "default_weights_path",
    "download_inception_weights",
    "find_inception_weights",
]

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILENAME}"


@dataclass(frozen=True)
class Features:
    """What a feature network returns for a batch of images."""

    pool: np.ndarray  # float64 [N, D]: the features FID and KID compare
    logits: np.ndarray | None  # float64 [N, C]: class logits for the Inception Score, None if unavailable


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the metrics need from a feature network."""

    name: str  # short label written into eval.json
    dims: int  # D of Features.pool

    def __call__(self, images: torch.Tensor) -> Features:  # uint8 [N, 3, H, W] -> Features
        ...

    def provenance(self) -> dict:
        """A JSON-able description of the network: library, weights, preprocessing."""
        ...


def _check_uint8_batch(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"feature extractors take uint8 image batches, got {got}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a batch of shape [N, 3, H, W], got {list(images.shape)}")


# ------------------------------------------------------------------------------------- Inception


def default_weights_path() -> Path:
    """Where pytorch-fid itself would cache the FID weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME


def download_inception_weights(
    *, url: str | None = None, dest: str | os.PathLike | None = None, progress: bool | None = None,
    offline: bool | None = None,
) -> Path:
    """Fetch the FID weights (``url``, default ``FID_WEIGHTS_URL``) into torch hub's cache (or ``dest``),
    checking the SHA-256 prefix their file name encodes.

    ``progress``: None draws the bar only on a terminal. ``offline``: None reads CYCLEGAN_OFFLINE /
    HF_HUB_OFFLINE. Any failure is an ``InceptionUnavailableError`` saying what to do by hand.
    """
    url = url or FID_WEIGHTS_URL
    name = url.rsplit("/", 1)[-1]
    dest = Path(dest) if dest is not None else Path(torch.hub.get_dir()) / "checkpoints" / name
    try:
        return download(url, dest, expected_prefix=hash_prefix_from_name(name), progress=progress,
                        offline=offline).path
    except DownloadError as e:
        raise InceptionUnavailableError(
            f"Inception weights not found: {first_line(e)}; or pass --inception-weights PATH"
        ) from None


def find_inception_weights(
    path: str | os.PathLike | None = None, *, allow_download: bool = True, progress: bool | None = None
) -> Path:
    """The FID weights file: ``path`` if given (never downloaded), else torch hub's cache, downloading
    the file there when it is missing and ``allow_download`` (and offline mode does not forbid it)."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            reason = "is a directory, not a weights file" if p.is_dir() else "not found"
            raise InceptionUnavailableError(
                f"Inception weights {p}: {reason} (give the path of {FID_WEIGHTS_FILENAME})"
            )
        return p
    p = default_weights_path()
    if p.is_file():
        return p
    if allow_download:
        return download_inception_weights(dest=p, progress=progress)
    raise InceptionUnavailableError(
        f"Inception weights not found: {p} is missing; download {FID_WEIGHTS_URL} on a machine with "
        f"internet and copy it there, or pass --inception-weights PATH"
    )


def _sha256_prefix(path: Path, n: int = 8) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


class InceptionFeatureExtractor:
    """pytorch-fid's FID Inception-v3: pool3 features [N, 2048] and 1008-way logits for the IS.

    Built from a local weights file, fetched once into torch hub's cache when missing and allowed
    (see module docstring). ``batch_size`` bounds the memory of one forward pass; callers may pass
    batches of any size.
    """

    name = "inception-v3-fid"
    dims = 2048

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 50,
    ) -> None:
        try:
            import pytorch_fid  # the eval extra
            from pytorch_fid import inception as fid_inception
        except ImportError:
            raise InceptionUnavailableError(
                "pytorch-fid is not installed; FID/KID/IS need it: pip install 'cyclegan[eval]'"
            ) from None
        path = find_inception_weights(weights)
        try:
            state = load_weights_only(path)
        # pickled code, a zip bomb or junk: never loaded, torch's advice never shown
        except UnsafeFileError as e:
            raise InceptionUnavailableError(f"Inception weights {path}: unreadable ({e.reason})") from None
        except OSError as e:
            raise InceptionUnavailableError(
                f"Inception weights {path}: unreadable ({first_line(e)})") from None
        if not isinstance(state, dict) or "fc.weight" not in state:
            raise InceptionUnavailableError(
                f"Inception weights {path}: not the FID Inception state dict {FID_WEIGHTS_FILENAME}"
            )

        # pytorch-fid 0.3 takes no weights argument: its builder always fetches through the module-level
        # name `load_state_dict_from_url`, which would download when the cache is empty. Swapping that
        # name for a loader of the file we already read keeps the library's exact architecture while
        # guaranteeing that no network access can happen.
        original = fid_inception.load_state_dict_from_url
        fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state
        try:
            net = fid_inception.InceptionV3(
                [fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
                resize_input=True,
                normalize_input=True,
                use_fid_inception=True,
            )
        except RuntimeError as e:  # load_state_dict(strict=True) on mismatching keys or shapes
            raise InceptionUnavailableError(
                f"Inception weights {path}: do not fit pytorch-fid's FID Inception ({first_line(e)})"
            ) from None
        finally:
            fid_inception.load_state_dict_from_url = original

        self.device = torch.device(device)
        self.batch_size = batch_size
        self.net = net.to(self.device).eval()
        # The original Inception Score code (Salimans et al. 2016) multiplies pool3 by the softmax
        # weights without the bias; torch-fidelity's IS does the same. Kept identical for comparability.
        self.fc_weight = state["fc.weight"].to(self.device, torch.float32)  # [1008, 2048]
        self.weights_path = path
        self.library_version = getattr(pytorch_fid, "__version__", "unknown")
        self._sha = _sha256_prefix(path)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Features:
        _check_uint8_batch(images)
        pools, logits = [], []
        for chunk in images.split(self.batch_size):
            x = chunk.to(self.device).float() / 255.0  # pytorch-fid's input convention: [0, 1]
            pool = self.net(x)[0].flatten(1)  # [n, 2048, 1, 1] -> [n, 2048]
            pools.append(pool.double().cpu())
            logits.append((pool @ self.fc_weight.T).double().cpu())  # [n, 1008]
        return Features(pool=torch.cat(pools).numpy(), logits=torch.cat(logits).numpy())

    def provenance(self) -> dict:
        """pytorch-fid's version, the weights file and its hash, the preprocessing (for eval.json)."""
        return {
            "name": self.name,
            "library": f"pytorch-fid {self.library_version}",
            "weights": str(self.weights_path),
            "weights_sha256_prefix": self._sha,
            "weights_match_filename": self._sha == FID_WEIGHTS_FILENAME.rsplit("-", 1)[1].split(".")[0],
            "preprocessing": "uint8/255, bilinear resize to 299x299 (no antialias), scale to [-1, 1]",
            "features": "pool3, 2048-d",
            "logits": "pool3 @ fc.weight^T (no bias), 1008 classes",
        }


# ------------------------------------------------------------------------------ random stand-in


class _RandomNet(nn.Module):
    def __init__(self, dims: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, dims, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(dims, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self.body(x).flatten(1)  # [N, dims]
        return pool, self.fc(pool)  # [N, dims], [N, num_classes]


class RandomFeatureExtractor:
    """A tiny randomly initialised CNN with the FeatureExtractor interface; same seed, same network.

    For tests and offline smoke runs only: the pipeline runs end to end, the numbers mean nothing.
    """

    name = "random-cnn"

    def __init__(
        self, *, dims: int = 64, num_classes: int = 10, seed: int = 0, device: str | torch.device = "cpu"
    ) -> None:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # local and restored: building it must not shift the caller's RNG stream
        try:
            self.net = _RandomNet(dims, num_classes)
        finally:
            torch.random.set_rng_state(generator_state)
        self.dims, self.num_classes, self.seed = dims, num_classes, seed
        self.device = torch.device(device)
        self.net = self.net.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Features:
        _check_uint8_batch(images)
        pool, logits = self.net(images.to(self.device).float() / 127.5 - 1.0)
        return Features(pool=pool.double().cpu().numpy(), logits=logits.double().cpu().numpy())

    def provenance(self) -> dict:
        """Marks the features as a random stand-in, not comparable with published numbers."""
        return {
            "name": self.name,
            "library": "cyclegan (random stand-in, not comparable with published numbers)",
            "dims": self.dims,
            "num_classes": self.num_classes,
            "seed": self.seed,
        }
