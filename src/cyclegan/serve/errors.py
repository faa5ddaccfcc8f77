"""Errors of the web app: one HTTP status and one readable message each."""

from __future__ import annotations

from typing import Any

from cyclegan.errors import CycleGANError


class ServeError(CycleGANError):
    """The server cannot start: bad --checkpoint spec, duplicate model names, missing extra, port in use."""


class ApiError(Exception):
    """A request the API refuses; rendered as ``{"error": message}`` with ``status``."""

    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra  # more JSON fields, e.g. valid=[...] names
