"""Building a ``Config``: YAML and JSON files (read bounded, parsed safely), presets, dotted
``--set`` overrides, and the one function that merges them (``build_config``); every path ends in
``validation.validate``.

Precedence (later wins): dataclass defaults (the CycleGAN paper) -> preset YAML -> ``--config`` YAML
-> command-line flags and ``--set section.key=value``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from cyclegan.config.schema import Config
from cyclegan.config.validation import check_finite, refuse_unused, short_text, validate
from cyclegan.errors import ConfigError, first_line, short_repr
from cyclegan.registry import match_name, unknown_name_message

# The shipped recipes (cyclegan/presets/*.yaml), beside this package.
PRESET_DIR = Path(__file__).parent.parent / "presets"

# Config files are read whole and parsed by pure-Python PyYAML: refuse anything far beyond a real
# config (the shipped presets are 1-3 KB, a config with every key set about 4 KB) before parsing.
MAX_CONFIG_BYTES = 1 << 20
# A config is at most three mappings deep (model.generator.ngf) and no value is a collection; the
# limit only needs to stop hostile nesting before Python's recursion limit (about 1000 frames).
MAX_YAML_DEPTH = 32


# ----------------------------------------------------------------------------------------------
# Building from dicts


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/JSON/CLI value to the annotated type, or raise a ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true or false, got {short_repr(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {short_repr(value)}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif not isinstance(value, int):
            try:
                value = int(str(value))
            except ValueError:
                raise ConfigError(f"{key}: expected an integer, got {short_repr(value)}") from None
        # Beyond 64 bits no setting means anything (torch takes int64, seeds at most 2**64 - 1), and
        # such a number could not even be printed in an error (str() stops at 4300 digits).
        if value.bit_length() > 64:
            raise ConfigError(f"{key}: {short_repr(value)} is out of range (more than 64 bits)")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {short_repr(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {short_repr(value)}") from None
        check_finite(key, number)
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {short_repr(value)}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")


def _from_dict(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {short_repr(data)}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_), key=str)  # YAML keys may be ints as well as strings
    if unknown:
        raise ConfigError(
            f"unknown config key {short_text(prefix + str(unknown[0]))}; valid keys here: "
            f"{', '.join(sorted(types_))}"
        )
    kwargs = {}
    for name, tp in types_.items():
        if name not in data:
            continue
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _from_dict(tp, data[name], key + ".")
        else:
            kwargs[name] = _coerce(data[name], tp, key)
    return cls(**kwargs)


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{short_text(dotted)}: {short_text(p)} is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_set(item: str) -> tuple[str, Any]:
    """``section.key=value`` -> (key, value); the value is parsed as YAML (so 1e-4, true, null work)."""
    if "=" not in item:
        raise ConfigError(f"--set {short_repr(item)}: expected section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {short_repr(item)}: empty key")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):
        # Not YAML we accept (a syntax error, an alias, an int past str()'s 4300 digits): the
        # literal text, which the key's type check then accepts or refuses.
        value = raw
    return key, value


class _UnsafeYAMLError(yaml.YAMLError):
    """A YAML feature a config has no use for and that costs unbounded memory or stack."""


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors, aliases and deep nesting while composing, before any
    object is built. Aliases let a few hundred bytes expand to 10**8 strings ("billion laughs"), and
    the composer recurses once per nesting level."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _UnsafeYAMLError(
                f"YAML anchors and aliases (&name, *name) are not allowed in a config "
                f"(line {event.start_mark.line + 1})"
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise _UnsafeYAMLError(
                f"nested more than {MAX_YAML_DEPTH} levels deep (line {event.start_mark.line + 1})"
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.1 (PyYAML's dialect) reads digits joined by colons as base-60 numbers: `64:2000` is the
# integer 236000 and `1:30.5` a float. YAML 1.2 dropped that, and nobody typing a config means it (the
# resolution schedule "64:2000,128:4000" is one such text); those scalars stay text here.
_BASE_60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_ConfigLoader.yaml_implicit_resolvers = {  # checked in order: the base-60 test first, as text
    first: [*([("tag:yaml.org,2002:str", _BASE_60)] if first in "-+0123456789" else []), *resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: builds plain data only


def _read_config_text(path: Path) -> str:
    """The text of a config file, refusing before parsing one larger than MAX_CONFIG_BYTES."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # bounded even for a device or a FIFO
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: more than {MAX_CONFIG_BYTES} bytes; a config file is at most 1 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None


# ----------------------------------------------------------------------------------------------
# Presets


def list_presets() -> dict[str, dict]:
    """Preset name -> {description, source} for every YAML file shipped in ``cyclegan/presets``."""
    out = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        doc = _read_yaml(path)
        out[path.stem] = {"description": doc.get("description", ""), "source": doc.get("source", "")}
    return out


def _read_yaml(path: Path) -> dict:
    text = _read_config_text(Path(path))
    try:
        doc = _load_yaml(text)
    except _UnsafeYAMLError as e:
        raise ConfigError(f"{path}: {e}") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an int past str()'s 4300-digit limit
        raise ConfigError(f"{path}: invalid YAML ({short_text(first_line(e))})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return doc


def preset_name(name: str) -> str:
    """The shipped preset ``name`` names, in its own spelling (``Ghibli`` -> ``ghibli``); a near miss
    is refused with the nearest names. A preset is a bare name: "../x" from a --config file must not
    read YAML outside presets/."""
    shipped = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    found = match_name(name, shipped) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(unknown_name_message("preset", name, shipped))
    return found


def preset_dict(name: str) -> dict:
    path = PRESET_DIR / f"{preset_name(name)}.yaml"
    doc = _read_yaml(path)
    return {k: v for k, v in doc.items() if k not in ("description", "source")}


# ----------------------------------------------------------------------------------------------
# The one place configs are built


def build_config(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: tuple[str, ...] | list[str] = (),
    base: dict | None = None,
) -> Config:
    """Defaults <- ``base`` (e.g. a saved run's config) <- preset <- config file <- overrides <- sets.

    ``overrides`` maps dotted keys to values from dedicated CLI flags (None values are ignored);
    ``sets`` are raw ``section.key=value`` strings from ``--set``.
    """
    tree: dict = dict(base or {})
    if preset is not None:
        tree = _deep_merge(tree, preset_dict(preset))
        tree["preset"] = preset_name(preset)
    # What the saved config and the preset set: kept by refuse_unused (a recipe is for its own kind and
    # networks; swapping one part keeps the rest). Copied: the merges below write into nested sections.
    recipe = copy.deepcopy(tree)
    if config_file is not None:
        doc = _read_yaml(Path(config_file))
        if "preset" in doc and preset is None and doc["preset"] is not None:
            tree = _deep_merge(tree, preset_dict(str(doc["preset"])))
            recipe = copy.deepcopy(tree)
        tree = _deep_merge(tree, {k: v for k, v in doc.items() if k not in ("description", "source")})
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    for item in sets:
        key, value = parse_set(item)
        _set_dotted(tree, key, value)
    cfg = _from_dict(Config, tree)
    validate(cfg)
    refuse_unused(cfg, inherited=recipe)  # what was asked now is never ignored; saved configs still load
    return cfg


def config_from_dict(tree: dict) -> Config:
    cfg = _from_dict(Config, tree)
    validate(cfg)
    return cfg


def load_config_json(path: str | Path) -> Config:
    if not Path(path).exists():
        raise ConfigError(f"{path}: not found")
    text = _read_config_text(Path(path))
    try:
        tree = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: hostile nesting
        raise ConfigError(f"{path}: not a readable config ({short_text(first_line(e))})") from None
    return config_from_dict(tree)


def replace(cfg, **changes):
    """``dataclasses.replace`` that accepts dotted keys: ``replace(cfg, **{"train.epochs": 3})``."""
    tree = cfg.to_dict() if isinstance(cfg, Config) else dataclasses.asdict(cfg)
    for key, value in changes.items():
        _set_dotted(tree, key, value)
    return config_from_dict(tree) if isinstance(cfg, Config) else _from_dict(type(cfg), tree)
