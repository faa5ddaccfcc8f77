"""Uploads: read the multipart body within a byte limit, then sniff and decode it within a pixel limit.

Neither the file name nor the Content-Type the client sends is trusted: the bytes decide whether
something is an image (Pillow identifies it from its content, restricted to the formats below), and
no part of an upload ever becomes a filesystem path.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from cyclegan.errors import first_line
from cyclegan.serve.errors import ApiError

__all__ = ["ACCEPTED_FORMATS", "FIELD", "load_upload", "open_upload", "read_upload"]

FIELD = "image"

# The formats `cyclegan translate` reads (image.IMAGE_EXTENSIONS). Pillow would otherwise also try
# every other plugin it has, EPS (Ghostscript) among them, on whatever bytes arrive.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")

# Room for the multipart boundaries and part headers around the file itself.
_MULTIPART_OVERHEAD = 64 * 1024

Message = MutableMapping[str, Any]


def _mb(n: int) -> str:
    return f"{n / 2**20:.3g} MB"


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"upload too large: the limit is {_mb(max_bytes)}")


def _limited(receive: Callable[[], Awaitable[Message]], limit: int) -> Callable[[], Awaitable[Message]]:
    """Wrap an ASGI receive so the body is refused as soon as it passes ``limit`` bytes.

    Content-Length can be absent (chunked uploads) or wrong, so counting what actually arrives is
    the only check that bounds memory.
    """
    seen = 0

    async def receive_limited() -> Message:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit - _MULTIPART_OVERHEAD)
        return message

    return receive_limited


async def read_upload(request: Request, *, max_bytes: int, timeout: float | None = None) -> bytes:
    """The bytes of the multipart field ``image``, at most ``max_bytes`` of them (else 413).

    The whole body must arrive within ``timeout`` seconds (else 408, and the connection is closed):
    a client trickling its upload would otherwise hold a connection and its buffered part forever.
    """
    if timeout is None:
        return await _read_upload(request, max_bytes=max_bytes)
    try:
        return await asyncio.wait_for(_read_upload(request, max_bytes=max_bytes), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"upload too slow: the request body must arrive within {timeout:g} s",
                       headers={"Connection": "close"}) from None


async def _read_upload(request: Request, *, max_bytes: int) -> bytes:
    body_limit = max_bytes + _MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise _too_large(max_bytes)  # refused before a byte of the body is read
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, f"send the image as multipart/form-data in a field named {FIELD!r}")
    limited = Request(request.scope, _limited(request.receive, body_limit))
    # One file and a handful of fields: anything more is not a request this API understands.
    async with limited.form(max_files=1, max_fields=8) as form:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise ApiError(422, f"missing file field {FIELD!r} in the multipart form")
        data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    if not data:
        raise ApiError(415, "the uploaded file is empty")
    return data


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Turn whatever Pillow raises while identifying or decoding an upload into a 413 or 415."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, f"image too large: over Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels "
                            "(refusing a possible decompression bomb)") from None
    except UnidentifiedImageError:
        names = ", ".join(f.lower() for f in ACCEPTED_FORMATS)
        raise ApiError(415, f"not a supported image: send {names}") from None
    except MemoryError:
        raise ApiError(413, "image too large: not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, zlib.error...
        reason = first_line(exc)
        raise ApiError(415, f"cannot decode the image ({reason})") from None


def open_upload(data: bytes, *, max_pixels: int) -> Image.Image:
    """Uploaded bytes -> a PIL image whose header is read and checked but whose pixels are not decoded.

    415 for non-images, 413 over ``max_pixels``: the size comes from the header, so a small file that
    claims to be a huge image (a decompression bomb) costs nothing here. Pillow's own global limit
    (``Image.MAX_IMAGE_PIXELS``) is enforced as an error too, not just the warning it gives by default.
    ``load_upload`` decodes it.
    """
    with _decoding():
        img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        width, height = img.size
        if width * height > max_pixels:
            raise ApiError(
                413,
                f"image too large: {width}x{height} is {width * height} pixels, the limit is {max_pixels}",
            )
    return img


def load_upload(img: Image.Image) -> Image.Image:
    """Decode the pixels of an ``open_upload`` image (415 when they turn out to be broken)."""
    with _decoding():
        img.load()
    return img
