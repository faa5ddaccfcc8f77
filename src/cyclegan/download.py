"""HTTP downloads of model files: resumable, checked, atomic, and forbidden when offline.

One downloader serves the pretrained catalog (``cyclegan pretrained get``) and the FID Inception
weights (``evaluate``'s first use). What it guarantees:

- The bytes go to ``<dest>.part`` beside the destination. A ``.part`` left by a cut connection is
  resumed with an HTTP ``Range`` request; a server that answers 200 instead of 206 (no ranges) gets
  a fresh start. A cut connection is retried from where it stopped a few times before giving up,
  and the ``.part`` stays for the next attempt.
- The file is checked before it is renamed into place: the full SHA-256 when the caller knows it, or
  the hash prefix a file name encodes (torch.hub's convention: ``pt_inception-2015-12-05-6726825d.pth``
  carries the first 8 hex digits of its SHA-256). A mismatch deletes the ``.part``: nothing is cached.
- ``os.replace`` moves the checked file into place, so readers never see half a file.
- Every failure is one ``DownloadError`` line naming the URL, the reason, and the file to fetch by
  hand and where to put it (machines without internet are common for GPU boxes).
- ``CYCLEGAN_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``, which users of Hugging Face tools already set)
  forbids any network access.

Only the standard library's ``urllib`` is used: it follows redirects (GitHub release assets are
redirected to a storage host) and honours ``http(s)_proxy`` / ``no_proxy``; no extra dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cyclegan.errors import CycleGANError, first_line, plain_reason
from cyclegan.version import __version__

try:  # POSIX: keeps two processes from writing the same .part at once
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, the hash check still refuses a mixed file
    fcntl = None

__all__ = [
    "CACHE_ENV",
    "OFFLINE_ENV",
    "ChecksumError",
    "DownloadError",
    "DownloadResult",
    "OfflineError",
    "cache_dir",
    "download",
    "file_sha256",
    "hash_prefix_from_name",
    "offline_mode",
    "part_path",
]

CACHE_ENV = "CYCLEGAN_CACHE_DIR"
OFFLINE_ENV = "CYCLEGAN_OFFLINE"
HF_OFFLINE_ENV = "HF_HUB_OFFLINE"
_TRUE = {"1", "true", "yes", "on"}
_CHUNK = 1 << 20
# torch.hub.HASH_REGEX: a hex run between a "-" and the extension is the SHA-256 prefix.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


class DownloadError(CycleGANError):
    """A download that failed (network, server, disk); the message says how to get the file by hand."""


class OfflineError(DownloadError):
    """A download refused because offline mode is on."""


class ChecksumError(DownloadError):
    """Downloaded bytes whose SHA-256 is not the expected one; nothing was kept."""


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str  # of the file at ``path``
    bytes: int
    downloaded: bool  # False when ``path`` was already there and nothing was fetched


def cache_dir() -> Path:
    """The user cache: ``$CYCLEGAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cyclegan``, else ``~/.cache/cyclegan``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cyclegan"


def offline_mode() -> bool:
    """Whether network access is forbidden: ``CYCLEGAN_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1/true/yes/on."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in (OFFLINE_ENV, HF_OFFLINE_ENV))


def offline_reason() -> str:
    """Which variable made ``offline_mode()`` true (for messages)."""
    for k in (OFFLINE_ENV, HF_OFFLINE_ENV):
        if os.environ.get(k, "").strip().lower() in _TRUE:
            return f"{k}={os.environ[k]}"
    return "--offline"


def hash_prefix_from_name(name: str) -> str | None:
    """The SHA-256 prefix a file name encodes the torch.hub way (``name-<hex>.ext``), or None."""
    m = _HASH_IN_NAME.search(Path(name).name)
    return m.group(1) if m else None


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def part_path(dest: str | os.PathLike) -> Path:
    """Where ``download`` keeps the bytes of ``dest`` until they are complete and checked."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _by_hand(url: str, dest: Path) -> str:
    return f"download {url} by hand and put it at {dest}"


def _check_hash(digest: str, *, sha256: str | None, prefix: str | None) -> str | None:
    """Why ``digest`` is not the expected one, or None when it is (or nothing is expected)."""
    if sha256 is not None and digest != sha256.lower():
        return f"SHA-256 {digest} is not the expected {sha256.lower()}"
    if prefix is not None and not digest.startswith(prefix.lower()):
        return f"SHA-256 {digest} does not start with {prefix.lower()}, the hash its file name encodes"
    return None


class _Cut(Exception):
    """The connection ended before the announced length (or errored mid-body): resumable."""


class _RangeRefused(_Cut):
    """HTTP 416 to a resume: the .part is not a prefix of the file any more; start from zero."""


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    expected_prefix: str | None = None,
    progress: bool | None = True,
    offline: bool | None = None,
    timeout: float = 30.0,
    retries: int = 3,
) -> DownloadResult:
    """Fetch ``url`` into ``dest`` (see the module docstring); a ``dest`` already there is checked, not fetched.

    ``progress``: True draws a tqdm bar on stderr, False none, None only when stderr is a terminal.
    ``offline``: None reads ``offline_mode()``. ``timeout``: seconds any one socket operation may
    wait. ``retries``: how many times a connection cut mid-body is resumed before giving up.
    """
    dest = Path(dest)
    if dest.is_file():
        digest = file_sha256(dest)
        if (why := _check_hash(digest, sha256=sha256, prefix=expected_prefix)) is not None:
            raise ChecksumError(f"{dest}: {why}; delete it to download {url} again")
        return DownloadResult(path=dest, sha256=digest, bytes=dest.stat().st_size, downloaded=False)
    if offline if offline is not None else offline_mode():
        reason = offline_reason() if offline is None else "offline mode"
        raise OfflineError(f"{dest} is missing and {reason} forbids downloading it: {_by_hand(url, dest)}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"{dest.parent}: cannot create the folder ({plain_reason(e)})") from None
    part = part_path(dest)
    try:
        fd = os.open(part, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise DownloadError(f"{part}: cannot write ({plain_reason(e)}); {_by_hand(url, dest)}") from None
    with os.fdopen(fd, "r+b") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise DownloadError(f"{part}: another process is downloading {url} there; wait for it") from None
        try:
            digest, size = _fetch_into(f, url, part, dest, progress=progress, timeout=timeout, retries=retries)
        except BaseException:
            f.flush()
            if os.fstat(f.fileno()).st_size == 0:  # nothing worth resuming: leave no empty .part behind
                part.unlink(missing_ok=True)
            raise
        if (why := _check_hash(digest, sha256=sha256, prefix=expected_prefix)) is not None:
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{url}: {why}; nothing was saved (a changed or corrupted file on the server?)")
        try:
            f.flush()
            os.fsync(f.fileno())
            os.replace(part, dest)
        except OSError as e:
            raise DownloadError(f"{dest}: cannot move the download into place ({plain_reason(e)})") from None
    return DownloadResult(path=dest, sha256=digest, bytes=size, downloaded=True)


def _fetch_into(f, url: str, part: Path, dest: Path, *, progress, timeout, retries) -> tuple[str, int]:
    """Fill the open ``.part`` file ``f`` from ``url``, resuming what it holds; its SHA-256 and size."""
    bar = None
    try:
        for attempt in range(retries + 1):
            # Hash what the .part already holds: the final check covers every byte, old and new.
            h = hashlib.sha256()
            f.seek(0)
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
            have = f.tell()
            try:
                response = _open(url, have, timeout, dest)
            except _Cut as e:
                if attempt == retries:
                    raise DownloadError(f"{url}: {e}; {_by_hand(url, dest)}") from None
                if isinstance(e, _RangeRefused):
                    f.seek(0)
                    f.truncate()
                else:
                    time.sleep(min(1.0 + attempt, 5.0))  # a flaky network or a busy server: give it a moment
                continue
            with response:
                if have and response.status != 206:  # the server ignores ranges: start again
                    h, have = hashlib.sha256(), 0
                elif have and _range_start(response) != have:  # a range we did not ask for: start again
                    f.seek(0)
                    f.truncate()
                    continue
                f.seek(have)
                f.truncate()
                total = _total_size(response, have)
                if bar is None:
                    bar = tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=dest.name, file=sys.stderr, leave=False,
                        disable=(not sys.stderr.isatty()) if progress is None else not progress,
                    )
                else:
                    bar.reset(total=total)
                    bar.update(have)
                try:
                    got = _copy_body(response, f, h, bar, part)
                except _Cut as e:
                    if attempt == retries:
                        raise DownloadError(
                            f"{url}: {e} ({f.tell()} bytes kept in {part}; run the command again to resume)"
                        ) from None
                    continue
                size = have + got
                if total is not None and size != total:
                    if attempt == retries:
                        raise DownloadError(
                            f"{url}: connection closed after {size} of {total} bytes ({part} kept; run the "
                            "command again to resume)"
                        )
                    continue
                return h.hexdigest(), size
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        if bar is not None:
            bar.close()


def _open(url: str, have: int, timeout: float, dest: Path):
    """The HTTP response for ``url`` from byte ``have`` on. Retryable failures raise ``_Cut``."""
    headers = {"User-Agent": f"cyclegan/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:  # the .part is as long as the file or longer: not a prefix of it
            raise _RangeRefused("the server refused to resume (HTTP 416)") from None
        if e.code >= 500 or e.code == 429:
            raise _Cut(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; {_by_hand(url, dest)}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (TimeoutError, socket.timeout, ConnectionResetError, ConnectionAbortedError)):
            raise _Cut(first_line(reason, "timed out")) from None
        why = first_line(reason) if isinstance(reason, BaseException) else str(reason)
        raise DownloadError(f"{url}: cannot connect ({why}); {_by_hand(url, dest)}") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Cut(first_line(e, type(e).__name__)) from None


def _range_start(response) -> int | None:
    m = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _total_size(response, have: int) -> int | None:
    """The full file size the response announces (Content-Range for 206, Content-Length for 200)."""
    if response.status == 206:
        m = re.match(r"bytes\s+\d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
        if m:
            return int(m.group(1))
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit():
        return int(length) + (have if response.status == 206 else 0)
    return None


def _copy_body(response, f, h, bar, part: Path) -> int:
    got = 0
    while True:
        try:
            chunk = response.read(_CHUNK)
        except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
            f.flush()
            raise _Cut(f"connection lost ({first_line(e, type(e).__name__)})") from None
        if not chunk:
            return got
        try:
            f.write(chunk)
        except OSError as e:
            raise DownloadError(f"{part}: cannot write ({plain_reason(e)})") from None
        h.update(chunk)
        got += len(chunk)
        bar.update(len(chunk))
