"""User-facing errors. The CLI prints these as one line and exits non-zero; anything else is a bug."""

import errno
import reprlib


class CycleGANError(Exception):
    """Base class for errors caused by the user's input (files, flags, config, checkpoints)."""


class ConfigError(CycleGANError):
    """An invalid config key or value."""


class NetworkMemoryError(ConfigError, MemoryError):
    """A network the config asks for that this machine cannot allocate. Also a MemoryError, so a caller
    that guards a model load against running out of memory (export.model_memory_guard) still catches
    it and names the checkpoint."""


class DataError(CycleGANError):
    """A dataset folder that cannot be used (missing, empty, too few images)."""


class ImageLoadError(CycleGANError):
    """One image file that cannot be decoded; carries the path and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class CheckpointError(CycleGANError):
    """A missing, corrupt or incompatible checkpoint."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file whose bytes differ from those written (SHA-256), or whose weights are not finite."""


class RunDirError(CycleGANError):
    """A run directory that would be overwritten, or is not a run."""


class TrainingDivergedError(CycleGANError):
    """A loss became NaN or infinite: the run stopped without saving the broken weights."""


class TranslateError(CycleGANError):
    """An input, output path or model that translation cannot use (names the path and the reason)."""


class ExportError(CycleGANError):
    """An export that failed or whose exported model disagrees with PyTorch."""


class EvaluationError(CycleGANError):
    """Metrics, analyses or reports that cannot be computed (no test split, missing optional package)."""


class InceptionUnavailableError(EvaluationError):
    """The Inception feature network cannot be loaded (weights file missing or unusable, no pytorch-fid).

    Reconstruction metrics need no pretrained network and are still computed when this is raised.
    """


class DeviceError(CycleGANError):
    """A device or precision this machine does not have (``--device cuda`` without a GPU)."""


class PrepError(CycleGANError):
    """A dataset-preparation request that cannot be carried out (bad option, missing OpenCV)."""


def first_line(error: BaseException, default: str | None = None) -> str:
    """The first non-blank line of ``error``'s message (library messages can run to many lines), or
    ``default`` (the exception's type name unless given) when it has none."""
    line = next((x.strip() for x in str(error).splitlines() if x.strip()), None)
    if line is not None:
        return line
    return type(error).__name__ if default is None else default


# reprlib abbreviates while it walks, so even a value with millions of items costs a few dozen
# element reprs, never the full repr (a YAML alias bomb's once ran to 722 MB).
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4
_SHORT.maxlevel = 3


def short_repr(value, limit: int = 80) -> str:
    """``repr(value)`` cut to at most ``limit`` characters (ending in "...") for echoing user input in
    an error message: a value pasted by mistake must not turn a one-line error into megabytes."""
    try:
        text = _SHORT.repr(value)
    except ValueError:  # an int past Python's 4300-digit str() limit
        text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Messages libraries give for a full disk: OSError's strerror, safetensors' Rust io error, and
# PyTorch's zip writer, which reports a short write as "[enforce fail at inline_container.cc:NNN]
# . unexpected pos X vs Y" (a write that stopped short: the disk or the quota is full).
_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DISK_FULL_TEXT = ("no space left on device", "storagefull", "disk quota exceeded", "unexpected pos")


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) says the disk or the quota is full."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        text = str(error).lower()
        if any(needle in text for needle in _DISK_FULL_TEXT):
            return True
        error = error.__cause__ or error.__context__
    return False


def plain_reason(error: BaseException) -> str:
    """One line saying why a write failed, in plain words: "no space left on device" for every way
    the libraries report a full disk, else the error's first line."""
    if is_disk_full(error):
        return "no space left on device"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return first_line(error)


# Problems found while cleaning up after an error (a stop record that cannot be written, a
# checkpoint write that failed too) must not replace that error: they ride along with it and are
# reported after it, one line each (the CLI prints them as warnings after the error line).


def add_followup(error: BaseException, line: str) -> None:
    """Attach ``line`` to ``error`` to be reported after it."""
    error.followups = [*getattr(error, "followups", ()), line]


def followups(error: BaseException) -> list[str]:
    """The lines attached to ``error`` by ``add_followup``, in order."""
    return list(getattr(error, "followups", ()))
