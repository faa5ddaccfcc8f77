"""The training log: ``log.jsonl`` (one JSON record per line, appended) and, when TensorBoard is
installed and ``train.tensorboard`` is on, the same scalars in ``tensorboard/``."""

from __future__ import annotations

import json
from pathlib import Path

from cyclegan.errors import RunDirError, plain_reason


class JsonlLog:
    """Append-only JSON-lines log, plus TensorBoard scalars when available."""

    def __init__(self, path: Path, tensorboard_dir: Path | None):
        self.path = path
        self.tb = None
        if tensorboard_dir is not None:
            try:  # optional heavy dependency: the ``tensorboard`` extra
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(tensorboard_dir))
            except ImportError:
                self.tb = None

    def write(self, record: dict) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if self.tb is not None and "step" in record:
                for k, v in record.items():
                    if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                        self.tb.add_scalar(k, v, record["step"])
        except OSError as e:  # a full disk: one line naming the log, not a traceback
            raise RunDirError(f"{self.path}: could not write the training log ({plain_reason(e)})") from None

    def close(self) -> None:
        if self.tb is not None:
            try:
                self.tb.close()
            except OSError as e:
                raise RunDirError(
                    f"{self.path.parent / 'tensorboard'}: could not write ({plain_reason(e)})") from None

