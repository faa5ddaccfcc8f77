"""Name -> factory tables for the things users pick by name (generator, discriminator, GAN loss,
LR policy, model kind, import format). A registry is a plain dict filled by a decorator and lives next
to what it registers; its keys feed the CLI's choices and config validation, so a new entry is one
decorated function and nothing else."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import ClassVar, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(dict):
    """A dict of name -> callable with a ``register(name)`` decorator."""

    # Every registry created, weakly (a throwaway registry in a test leaves when it is collected):
    # tests/test_architecture.py checks each one's names against the CLI's choices and README.
    _created: ClassVar[list[weakref.ref[Registry]]] = []

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        Registry._created.append(weakref.ref(self))

    @classmethod
    def instances(cls) -> list[Registry]:
        """The registries that exist now, in the order they were created."""
        return [reg for ref in cls._created if (reg := ref()) is not None]

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: ``@REGISTRY.register("name")`` adds the decorated factory under ``name``; a name
        registered twice is a ValueError."""
        def add(fn: F) -> F:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = fn
            return fn

        return add

    def get_or_raise(self, name: str):
        if name not in self:
            raise KeyError(f"unknown {self.kind} {name!r}; choose from {', '.join(sorted(self))}")
        return self[name]
