"""Per-request memory: what translating an upload will cost, known from its header before decoding.

A 56 KB PNG can declare 4000x4000 pixels; decoding and translating it whole took the server from
0.74 to 2.99 GB with the tiny model. Each request is therefore planned before it is decoded:

- the *source* phase: the decoded image and the copies made of it before the resize (``max_side``),
  per source pixel;
- the *work* phase: the decoded image, still held, the request's own arrays and output image and
  its encoding per translated pixel, plus what ``Translator.estimate_memory`` says translating it
  holds: the full-resolution tensors around the network (uint8 and float32 copies, the padded input,
  the blended output and its weights) and the generator's largest pass, ``bytes_per_pixel`` per
  padded pixel for a whole pass or, when the translator may tile (``tile`` auto or N), no more than
  its memory budget. Each request's translator gets the budget left over after everything else, so
  tiling keeps the passes inside the request's limit.

The per-pixel figures were measured on the translate path (peak RSS growth, tiny ResNet, CPU fp32,
tiled, PNG inputs from 1500x1500 to 4000x3000, some downscaled with max_side): the source phase
peaked at about 18 B per source pixel and the work phase outside the generator at 63-68 B per
translated pixel including the held source; the constants below and the translator's estimate of
its copies round those up. The estimate counts the generator's working memory as host memory, which
overstates what a GPU server keeps on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cyclegan.serve.errors import ApiError
from cyclegan.translate import Translator

__all__ = ["DEFAULT_MAX_REQUEST_MEMORY", "RequestPlan", "plan_request"]

DEFAULT_MAX_REQUEST_MEMORY = 2**30

_SOURCE_BYTES_PER_PIXEL = 20  # decoding and the copies before the resize, per source pixel
_HELD_SOURCE_BYTES_PER_PIXEL = 4  # the decoded upload (Pillow keeps RGB in 4 bytes a pixel)
# Per translated pixel, besides the translator's own estimate: the prepared RGB array, the output
# image and its encoding. The work phase peaked at 63-68 B/px with the held source (above), the
# translate path alone at 49-58 B/px (peak RSS, same model, tiled, sides not multiples of 4), so these
# take at most ~10 B/px; the translator's estimate of its copies (66-69 B/px) has the rest of the room.
_HANDLING_BYTES_PER_PIXEL = 8
# Tiles below this side spend most of their work on overlaps; a request that leaves the generator
# less than such a tile's memory is refused rather than translated through a keyhole.
_MIN_TILE_SIDE = 256


@dataclass(frozen=True)
class RequestPlan:
    """How one upload will be translated: by ``translator`` (a per-request copy), at ``size``,
    in about ``estimate`` bytes."""

    translator: Any
    size: tuple[int, int]
    estimate: int


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _plan_at(translator: Translator, source: tuple[int, int], side: int | None, limit: int,
             upload_bytes: int) -> RequestPlan:
    w, h = source
    per_request = translator.with_options(max_side=side)  # shares the network and its runtime
    out_w, out_h = per_request.output_size(w, h)
    source_px, out_px = w * h, out_w * out_h
    held = upload_bytes + source_px * _HELD_SOURCE_BYTES_PER_PIXEL + out_px * _HANDLING_BYTES_PER_PIXEL
    copies = per_request.estimate_memory(w, h).copies  # does not depend on the budget
    min_tile = _MIN_TILE_SIDE**2 * translator.bytes_per_pixel
    per_request = per_request.with_options(
        memory_budget=int(min(translator.memory_budget, max(limit - held - copies, min_tile))))
    work = held + per_request.estimate_peak_bytes(w, h)
    estimate = max(upload_bytes + source_px * _SOURCE_BYTES_PER_PIXEL, work)
    return RequestPlan(translator=per_request, size=(out_w, out_h), estimate=estimate)


def _largest_fitting_side(translator: Translator, source: tuple[int, int], upper: int, limit: int,
                          upload_bytes: int) -> int | None:
    """The largest max_side <= upper whose plan fits ``limit`` (the estimate grows with the side)."""
    lo, hi = 1, upper
    if _plan_at(translator, source, lo, limit, upload_bytes).estimate > limit:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _plan_at(translator, source, mid, limit, upload_bytes).estimate <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan_request(
    translator: Any,
    source: tuple[int, int],
    *,
    limit: int,
    max_side: int | None = None,
    upload_bytes: int = 0,
) -> RequestPlan:
    """Plan translating an image of ``source`` (width, height) within ``limit`` bytes, or raise a 413.

    Without ``max_side`` an image whose estimate is over the limit is refused, and the error names the
    limit, the estimate and the largest ``max_side`` that would fit. With ``max_side`` the client has
    accepted a smaller result, so the image is downscaled as far as the limit needs (never above
    ``max_side``); only an image whose decoded pixels alone are over the limit is refused. A
    translator that is not a ``Translator`` (a plain callable) is planned by its decoded size alone.
    """
    w, h = source
    if not isinstance(translator, Translator):
        estimate = upload_bytes + w * h * _SOURCE_BYTES_PER_PIXEL
        if estimate > limit:
            raise _over_limit(source, estimate, limit, None)
        return RequestPlan(translator=translator, size=source, estimate=estimate)

    sides = [s for s in (translator.max_side, max_side) if s is not None]
    side = min(sides) if sides else None
    plan = _plan_at(translator, source, side, limit, upload_bytes)
    if plan.estimate <= limit:
        return plan
    upper = min(side if side is not None else max(w, h), max(w, h))
    fitting = _largest_fitting_side(translator, source, upper, limit, upload_bytes)
    if max_side is not None and fitting is not None:
        return _plan_at(translator, source, fitting, limit, upload_bytes)
    raise _over_limit(source, plan.estimate, limit, fitting)


def _over_limit(source: tuple[int, int], estimate: int, limit: int, fitting: int | None) -> ApiError:
    w, h = source
    message = (f"image too large for this server's memory limit per request: translating {w}x{h} needs "
               f"about {_gib(estimate)}, the limit is {_gib(limit)}")
    if fitting is not None:
        message += f"; send max_side={fitting} or less to have it downscaled first"
    return ApiError(413, message, limit_bytes=limit, estimate_bytes=estimate, fitting_max_side=fitting)
