"""Flags that take a name from a fixed set (presets, generators, losses, LR policies, model kinds,
import formats...): the exact name, or the same name in any case where that names one choice; a near
miss is refused with "did you mean" (``registry.match_name`` / ``registry.did_you_mean``, the
rules the library's own lookups follow)."""

from __future__ import annotations

import click

from cyclegan.registry import match_name, unknown_name_message


class NameChoice(click.Choice):
    """``click.Choice`` that matches case-insensitively where unambiguous and suggests near names.
    The value handed to the command is the choice's own spelling."""

    def __init__(self, choices, what: str | None = None):
        super().__init__(list(choices), case_sensitive=True)
        self.what = what  # "preset", "generator"...: named in the refusal; None: the flag's name

    def convert(self, value, param, ctx):
        found = match_name(value, self.choices)
        if found is not None:
            return found
        what = self.what or "value"  # click names the flag before it: "Invalid value for '--format': ..."
        self.fail(unknown_name_message(what, value, self.choices), param, ctx)
