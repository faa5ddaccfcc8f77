"""Name -> factory tables for the things users pick by name (generator, discriminator, GAN loss,
LR policy). A registry is a plain dict filled by a decorator; its keys feed the CLI's choices and
config validation, so a new entry is one decorated function and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class Registry(dict):
    """A dict of name -> callable with a ``register(name)`` decorator."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[F], F]:
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
