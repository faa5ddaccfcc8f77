"""User-facing errors. The CLI prints these as one line and exits non-zero; anything else is a bug."""


class CycleGANError(Exception):
    """Base class for errors caused by the user's input (files, flags, config, checkpoints)."""


class ConfigError(CycleGANError):
    """An invalid config key or value."""


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


class RunDirError(CycleGANError):
    """A run directory that would be overwritten, or is not a run."""


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


class PrepError(CycleGANError):
    """A dataset-preparation request that cannot be carried out (bad option, missing OpenCV)."""


def first_line(error: BaseException, default: str | None = None) -> str:
    """The first non-blank line of ``error``'s message (library messages can run to many lines), or
    ``default`` (the exception's type name unless given) when it has none."""
    line = next((x.strip() for x in str(error).splitlines() if x.strip()), None)
    if line is not None:
        return line
    return type(error).__name__ if default is None else default
