"""Library errors name parameters; the command line names flags. This is the one place that maps them.

The library's convention (``cyclegan.translate``, ``cyclegan.devices``, the serve loader): a message
about one argument starts with the parameter's name (``batch_size must be >= 1, got 0``,
``tile '5': tiles must be at least 16 pixels``, ``device cuda: no CUDA device is available``), and
names another argument as ``name=value`` (``use device=cpu``). ``as_flags`` rewrites exactly those
two forms for the parameters in ``FLAGS`` and leaves every other word alone, so a message that
merely contains "size" or "device" in prose is printed as the library wrote it.
"""

from __future__ import annotations

import re

__all__ = ["FLAGS", "as_flags"]

# Library parameter -> the flag that sets it. A parameter is listed only where a command's flag sets
# exactly it (same meaning, same values), so the rewritten message stays true.
FLAGS: dict[str, str] = {
    "batch_size": "--batch-size",
    "calibration": "--calibration",
    "device": "--device",
    "direction": "--direction",
    "max_request_memory": "--max-request-memory",
    "max_side": "--max-side",
    "memory_budget": "--memory-budget",
    "precision": "--precision",
    "size": "--size",
    "threads": "--threads",
    "tile": "--tile",
    "tile_overlap": "--tile-overlap",
    # config keys that `cyclegan train` sets with a flag of their own (its other keys are --set KEY)
    "train.init_from": "--init-from",
    "train.init_nets": "--init-nets",
}

_NAMES = "|".join(re.escape(name) for name in sorted(FLAGS, key=len, reverse=True))
# "name must ...", "name 'value'...", "name 12...", "name value: reason", "name: reason" at the start.
_LEADING = re.compile(rf"^({_NAMES})(?= must\b| '| \"| -?\d| [^\s:]+:|:)")
# "name=value" anywhere, not part of a dotted config key (model.tile=...) or a longer word.
_ASSIGNED = re.compile(rf"(?<![\w.-])({_NAMES})=(?:'([^']*)'|([^\s,;:)']+))")


def as_flags(message: str) -> str:
    """A library error message with its parameter names (``batch_size``) as flags (``--batch-size``)."""
    message = _LEADING.sub(lambda m: FLAGS[m.group(1)], message, count=1)

    def flag_and_value(m: re.Match) -> str:
        value = m.group(2) if m.group(2) is not None else m.group(3)
        return f"{FLAGS[m.group(1)]} {value}"

    return _ASSIGNED.sub(flag_and_value, message)
