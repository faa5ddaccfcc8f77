"""Reading back the JSON files this project writes (manifests, cache records, metadata), checked by type.

Such a file may have been edited, truncated or replaced by anything: ``[1, 2]`` where an object was
written, a string where a number was. ``read_json_object`` and ``check_fields`` turn every such case
into one line naming the file and the field, before any of it is used.

A field's type is a Python type or a tuple of them, as for ``isinstance``, except that ``bool`` is
never taken for ``int`` or ``float`` and an ``int`` is taken for ``float``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cyclegan.errors import CycleGANError, first_line

FieldTypes = Mapping[str, "type | tuple[type, ...]"]


class JsonFileError(CycleGANError):
    """A JSON file that is unreadable or does not hold the fields expected, with their types."""


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
             bool: "true or false", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _found_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def has_type(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, except that True/False are not numbers and an integer is a float."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


def check_fields(
    doc: Any,
    where: str | os.PathLike,
    fields: FieldTypes,
    *,
    optional: FieldTypes | None = None,
    what: str = "",
    error: type[Exception] = JsonFileError,
) -> dict:
    """``doc`` when it is an object holding every field of ``fields`` (and, where present, of ``optional``)
    with its type; otherwise ``error`` with one line naming ``where`` (and ``what``, e.g. "video entry x").
    """
    label = f"{where}: " + (f"{what}: " if what else "")
    if not isinstance(doc, dict):
        raise error(f"{label}expected a JSON object, found {_found_name(doc)}")
    for name, kind in fields.items():
        if name not in doc:
            raise error(f"{label}field {name!r} is missing")
    for name, kind in {**(optional or {}), **fields}.items():
        if name in doc and not has_type(doc[name], kind):
            raise error(f"{label}field {name!r} must be {_type_name(kind)}, found {_found_name(doc[name])}")
    return doc


def read_json(path: str | os.PathLike, *, error: type[Exception] = JsonFileError) -> Any:
    """The parsed contents of ``path``, or ``error`` with one line (unreadable, not UTF-8, not JSON, nested
    too deeply)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise error(f"{path}: unreadable ({e.strerror or first_line(e)})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as e:
        raise error(f"{path}: not valid JSON ({first_line(e)})") from None


def read_json_object(
    path: str | os.PathLike,
    fields: FieldTypes = {},  # noqa: B006 - read only
    *,
    optional: FieldTypes | None = None,
    error: type[Exception] = JsonFileError,
) -> dict:
    """The JSON object in ``path``, checked by ``check_fields``; ``error`` (one line) otherwise."""
    return check_fields(read_json(path, error=error), path, fields, optional=optional, error=error)
