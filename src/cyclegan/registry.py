"""Name -> factory tables for the things users pick by name (generator, discriminator, GAN loss,
LR policy, model kind, import format). A registry is a plain dict filled by a decorator and lives next
to what it registers; its keys feed the CLI's choices and config validation, so a new entry is one
decorated function and nothing else.

Names are matched as users type them: exactly, else case-insensitively where that names one entry;
an unknown name is answered with the nearest names (``did_you_mean``). The CLI's choice flags
(``cli.choices``), config validation and preset loading use the same two functions.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Callable, Iterable
from typing import ClassVar, TypeVar

from cyclegan.errors import short_repr

F = TypeVar("F", bound=Callable)


class Registry(dict):
    """A dict of name -> callable with a ``register(name)`` decorator."""

    # Every registry created, weakly (a throwaway registry in a test leaves when it is collected):
    # tests/test_architecture.py checks each one's names against the CLI's choices and
    # docs/training-options.md.
    _created: ClassVar[list[weakref.ref[Registry]]] = []

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        # name -> the typed options class an entry reads from its config section (the entry owns them);
        # entries registered without one read no options beyond their section's common keys.
        self.options: dict[str, type] = {}
        Registry._created.append(weakref.ref(self))

    @classmethod
    def instances(cls) -> list[Registry]:
        """The registries that exist now, in the order they were created."""
        return [reg for ref in cls._created if (reg := ref()) is not None]

    def register(self, name: str, *, options: type | None = None) -> Callable[[F], F]:
        """Decorator: ``@REGISTRY.register("name")`` adds the decorated factory under ``name`` (with
        ``options``, the dataclass of its options); a name registered twice is a ValueError."""
        def add(fn: F) -> F:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = fn
            if options is not None:
                self.options[name] = options
            return fn

        return add

    def canonical(self, name: str) -> str:
        """The registered spelling of ``name`` (``ResNet`` -> ``resnet``); KeyError naming the
        nearest names when none matches."""
        found = match_name(name, self)
        if found is None:
            raise KeyError(unknown_name_message(self.kind, name, self))
        return found

    def get_or_raise(self, name: str):
        """The entry of ``name`` in any case spelling; KeyError naming the nearest names when none matches."""
        return self[self.canonical(name)]


def match_name(name: str, choices: Iterable[str]) -> str | None:
    """``name`` itself if it is a choice, else the one choice equal to it ignoring case, else None
    (also None when two choices differ only in case: then no guess is safe)."""
    choices = list(choices)
    if name in choices:
        return name
    if not isinstance(name, str):
        return None
    folded = [c for c in choices if c.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for a near miss of one of ``choices`` (difflib's ratio >= 0.6, on
    lower case), else "". Names under 3 characters get no guess: one letter decides their ratio."""
    if not isinstance(name, str) or not 3 <= len(name) <= 200:  # nor does a pasted paragraph
        return ""
    by_folded = {c.casefold(): c for c in choices}
    near = difflib.get_close_matches(name.casefold(), list(by_folded), n=2, cutoff=0.6)
    if not near:
        return ""
    return " (did you mean " + " or ".join(repr(by_folded[n]) for n in near) + "?)"


def unknown_name_message(what: str, name: object, choices: Iterable[str]) -> str:
    """The one-line refusal of an unknown ``name``: the nearest names first, then every choice."""
    choices = sorted(choices)
    return f"unknown {what} {short_repr(name)}{did_you_mean(name, choices)}; choose from {', '.join(choices)}"
