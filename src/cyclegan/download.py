"""HTTP downloads of model files: resumable, checked, bounded, atomic, and forbidden when offline.

One downloader serves the pretrained catalog (``cyclegan pretrained get``) and the FID Inception
weights (``evaluate``'s first use). What it guarantees:

- The bytes go to ``<dest>.part`` beside the destination, with what the server said about the file
  (its ``ETag`` or ``Last-Modified``) in ``<dest>.part.json``. A ``.part`` left by a cut connection is
  resumed with a ``Range`` request carrying ``If-Range``: a server whose file changed since answers
  200 with the whole new file, which replaces the old bytes, so a resumed file is never half of one
  version and half of another. A ``.part`` with no validator is resumed only when a hash will check
  the result; otherwise it is started again.
- The file is checked before it is renamed into place: its size, its full SHA-256, the git blob
  SHA-1 (``sha1(b"blob <size>\\0" + content)``, what a git host publishes for each file of a
  repository), or the hash prefix a file name encodes (torch.hub's convention:
  ``pt_inception-2015-12-05-6726825d.pth`` carries the first 8 hex digits of its SHA-256), whichever
  the caller knows. A mismatch deletes the ``.part``: nothing is cached.
- Nothing is read past the expected size (the caller's, else the announced length, else
  ``max_bytes``): a longer body is refused the moment it passes it, so an endless server cannot
  fill the disk. A body without a length is taken only when a hash will check it.
- An overall deadline, scaled to the expected size (``Deadline``), bounds the whole download: a
  server that drips a byte every few seconds cannot hold it, though each read is quick.
- An HTML page served in place of the file (a login wall, a "file moved" page) is recognised by its
  content type or its first bytes and refused; nothing is cached.
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
import json
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
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_BYTES",
    "OFFLINE_ENV",
    "ChecksumError",
    "Deadline",
    "DownloadError",
    "DownloadResult",
    "OfflineError",
    "cache_dir",
    "check_file",
    "download",
    "file_git_sha1",
    "file_sha256",
    "hash_prefix_from_name",
    "offline_mode",
    "part_path",
    "validators_path",
]

CACHE_ENV = "CYCLEGAN_CACHE_DIR"
OFFLINE_ENV = "CYCLEGAN_OFFLINE"
HF_OFFLINE_ENV = "HF_HUB_OFFLINE"
_TRUE = {"1", "true", "yes", "on"}
_CHUNK = 1 << 20
# torch.hub.HASH_REGEX: a hex run between a "-" and the extension is the SHA-256 prefix.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")
# Bound on a file whose size nobody states (no catalog size, no Content-Length): far above any model here.
DEFAULT_MAX_BYTES = 4 << 30
# An HTML document's first bytes, after optional whitespace and a byte-order mark.
_HTML_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*<(?:!doctype\s+html|html[\s>]|head[\s>]|!--)", re.IGNORECASE)


class DownloadError(CycleGANError):
    """A download that failed (network, server, disk); the message says how to get the file by hand."""


class OfflineError(DownloadError):
    """A download refused because offline mode is on."""


class ChecksumError(DownloadError):
    """Downloaded bytes whose size or hash is not the expected one; nothing was kept."""


@dataclass(frozen=True, kw_only=True)
class Deadline:
    """The overall time a download may take: ``base_s`` plus the expected size at ``min_bytes_per_s``.

    Each socket operation has its own ``timeout``; this bounds their sum, so a server that sends a
    byte just before every timeout cannot hold a download for ever. The check runs between reads,
    so a download stops at most one ``timeout`` after its deadline.
    """

    base_s: float = 120.0
    min_bytes_per_s: float = 16 * 1024.0

    def seconds(self, size: int) -> float:
        return self.base_s + size / self.min_bytes_per_s


DEFAULT_DEADLINE = Deadline()


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str  # of the file at ``path``
    bytes: int
    downloaded: bool  # False when ``path`` was already there and nothing was fetched
    git_sha1: str | None = None  # git blob SHA-1 of the file, when the caller expected one


def cache_dir() -> Path:
    """The user cache: ``$CYCLEGAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cyclegan``, else
    ``~/.cache/cyclegan``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cyclegan"


def offline_mode() -> bool:
    """Whether network access is forbidden: ``CYCLEGAN_OFFLINE`` or ``HF_HUB_OFFLINE`` set to
    1/true/yes/on."""
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


def file_git_sha1(path: str | os.PathLike) -> str:
    """The git blob id of a file: SHA-1 of ``b"blob <size>\\0"`` and its bytes (``git hash-object``)."""
    h = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode("ascii"))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def part_path(dest: str | os.PathLike) -> Path:
    """Where ``download`` keeps the bytes of ``dest`` until they are complete and checked."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def validators_path(dest: str | os.PathLike) -> Path:
    """Where ``download`` keeps the ETag / Last-Modified of the file whose bytes ``.part`` holds."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part.json")


def _by_hand(url: str, dest: Path) -> str:
    return f"download {url} by hand and put it at {dest}"


@dataclass(frozen=True, kw_only=True)
class _Expected:
    """What the caller knows of the file: any of size, SHA-256, git blob SHA-1, SHA-256 prefix."""

    size: int | None = None
    sha256: str | None = None
    git_sha1: str | None = None
    prefix: str | None = None

    def has_hash(self) -> bool:
        return any(v is not None for v in (self.sha256, self.git_sha1, self.prefix))


def _mismatch(digest: str, size: int, git_sha1: str | None, want: _Expected) -> str | None:
    """Why a file of SHA-256 ``digest``, ``size`` bytes and blob id ``git_sha1`` is not the expected one."""
    if want.size is not None and size != want.size:
        return f"{size} bytes, not the expected {want.size}"
    if want.sha256 is not None and digest != want.sha256.lower():
        return f"SHA-256 {digest} is not the expected {want.sha256.lower()}"
    if want.git_sha1 is not None and git_sha1 != want.git_sha1.lower():
        return f"git blob SHA-1 {git_sha1} is not the publisher's {want.git_sha1.lower()}"
    if want.prefix is not None and not digest.startswith(want.prefix.lower()):
        return f"SHA-256 {digest} does not start with {want.prefix.lower()}, the hash its file name encodes"
    return None


def check_file(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    git_sha1: str | None = None,
    expected_prefix: str | None = None,
) -> tuple[str, str | None, int, str | None]:
    """Hash the file at ``path``: (its SHA-256, its git blob SHA-1 when ``git_sha1`` is given, its size,
    why it is not the expected file or None)."""
    want = _Expected(size=size, sha256=sha256, git_sha1=git_sha1, prefix=expected_prefix)
    digest = file_sha256(path)
    blob = file_git_sha1(path) if git_sha1 is not None else None
    nbytes = os.path.getsize(path)
    return digest, blob, nbytes, _mismatch(digest, nbytes, blob, want)


class _Cut(Exception):
    """The connection ended before the announced length (or errored mid-body): resumable."""


class _RangeRefused(_Cut):
    """HTTP 416 to a resume: the .part is not a prefix of the file any more; start from zero."""


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    git_sha1: str | None = None,
    size: int | None = None,
    expected_prefix: str | None = None,
    progress: bool | None = True,
    offline: bool | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    deadline: Deadline = DEFAULT_DEADLINE,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DownloadResult:
    """Fetch ``url`` into ``dest`` (see the module docstring); a ``dest`` already there is checked, not
    fetched.

    ``sha256``, ``git_sha1`` (git blob id), ``size`` and ``expected_prefix`` (of the SHA-256) are
    checked when given. ``progress``: True draws a tqdm bar on stderr, False none, None only when
    stderr is a terminal. ``offline``: None reads ``offline_mode()``. ``timeout``: seconds any one
    socket operation may wait; ``deadline``: the whole download's bound. ``retries``: how many times
    a connection cut mid-body is resumed before giving up. ``max_bytes``: the most read when neither
    ``size`` nor the server states the length.
    """
    dest = Path(dest)
    want = _Expected(size=size, sha256=sha256, git_sha1=git_sha1, prefix=expected_prefix)
    if dest.is_file():
        digest, blob, nbytes, why = check_file(dest, size=size, sha256=sha256, git_sha1=git_sha1,
                                               expected_prefix=expected_prefix)
        if why is not None:
            raise ChecksumError(f"{dest}: {why}; delete it to download {url} again")
        return DownloadResult(path=dest, sha256=digest, bytes=nbytes, downloaded=False, git_sha1=blob)
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
    fetch = _Fetch(url=url, dest=dest, want=want, progress=progress, timeout=timeout, retries=retries,
                   deadline=deadline, max_bytes=max_bytes)
    with os.fdopen(fd, "r+b") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise DownloadError(
                    f"{part}: another process is downloading {url} there; wait for it") from None
        try:
            digest, nbytes = fetch.into(f)
        except _Refused:
            _discard(dest)
            raise
        except BaseException:
            f.flush()
            if os.fstat(f.fileno()).st_size == 0:  # nothing worth resuming: leave no empty .part behind
                _discard(dest)
            raise
        f.flush()
        blob = file_git_sha1(part) if git_sha1 is not None else None
        if (why := _mismatch(digest, nbytes, blob, want)) is not None:
            _discard(dest)
            raise ChecksumError(f"{url}: {why}; nothing was saved (a changed or corrupted file on the "
                                "server?)")
        try:
            os.fsync(f.fileno())
            os.replace(part, dest)
        except OSError as e:
            raise DownloadError(f"{dest}: cannot move the download into place ({plain_reason(e)})") from None
    validators_path(dest).unlink(missing_ok=True)
    return DownloadResult(path=dest, sha256=digest, bytes=nbytes, downloaded=True, git_sha1=blob)


def _discard(dest: Path) -> None:
    part_path(dest).unlink(missing_ok=True)
    validators_path(dest).unlink(missing_ok=True)


class _Refused(DownloadError):
    """A response that is not the file (HTML, too long, no length and no hash): nothing is kept."""


def _read_validators(dest: Path, url: str) -> dict[str, str] | None:
    """The ETag / Last-Modified saved with ``dest``'s ``.part`` for ``url``; None when absent or malformed."""
    try:
        doc = json.loads(validators_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("url") != url:
        return None
    out = {k: doc[k] for k in ("etag", "last_modified") if isinstance(doc.get(k), str) and doc[k]}
    return out or None


def _write_validators(dest: Path, url: str, response) -> None:
    etag = response.headers.get("ETag")
    modified = response.headers.get("Last-Modified")
    doc = {"url": url, "etag": etag, "last_modified": modified}
    try:
        validators_path(dest).write_text(json.dumps(doc), encoding="utf-8")
    except OSError:  # no validator: the next call starts again rather than resume blind
        validators_path(dest).unlink(missing_ok=True)


def _if_range(validators: dict[str, str] | None) -> str | None:
    """The If-Range value: a strong ETag (weak ones are not allowed there, RFC 9110 13.1.5), else the date."""
    if not validators:
        return None
    etag = validators.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return validators.get("last_modified")


@dataclass(kw_only=True)
class _Fetch:
    url: str
    dest: Path
    want: _Expected
    progress: bool | None
    timeout: float
    retries: int
    deadline: Deadline
    max_bytes: int
    started: float = 0.0
    budget: float | None = None  # seconds, fixed once the expected size is known

    def _by_hand(self) -> str:
        return _by_hand(self.url, self.dest)

    def into(self, f) -> tuple[str, int]:
        """Fill the open ``.part`` file ``f``, resuming what it holds; its SHA-256 and size."""
        self.started = time.monotonic()
        part = part_path(self.dest)
        bar = None
        try:
            for attempt in range(self.retries + 1):
                h, have, validator = self._resume_point(f)
                try:
                    response = _open(self.url, have, validator, self._op_timeout(), self.dest)
                except _Cut as e:
                    if attempt == self.retries:
                        raise DownloadError(f"{self.url}: {e}; {self._by_hand()}") from None
                    if isinstance(e, _RangeRefused):
                        f.seek(0)
                        f.truncate()
                    else:
                        self._pause(min(1.0 + attempt, 5.0))  # a flaky network or a busy server
                    continue
                with response:
                    if have and response.status != 206:  # changed since (If-Range) or no ranges: start again
                        h, have = hashlib.sha256(), 0
                    elif have and _range_start(response) != have:  # a range we did not ask for: start again
                        f.seek(0)
                        f.truncate()
                        continue
                    f.seek(have)
                    f.truncate()
                    total = _total_size(response, have)
                    limit = self._admit(response, total)
                    if have == 0:
                        _write_validators(self.dest, self.url, response)
                    if bar is None:
                        bar = tqdm(
                            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=self.dest.name, file=sys.stderr, leave=False,
                            disable=(not sys.stderr.isatty()) if self.progress is None else not self.progress,
                        )
                    else:
                        bar.reset(total=total)
                        bar.update(have)
                    try:
                        got = self._copy_body(response, f, h, bar, have=have, limit=limit)
                    except _Cut as e:
                        if attempt == self.retries:
                            raise DownloadError(
                                f"{self.url}: {e} ({f.tell()} bytes kept in {part}; run the command again to "
                                "resume)"
                            ) from None
                        continue
                    size = have + got
                    if total is not None and size != total:
                        if attempt == self.retries:
                            raise DownloadError(
                                f"{self.url}: connection closed after {size} of {total} bytes ({part} kept; "
                                "run the command again to resume)"
                            )
                        continue
                    return h.hexdigest(), size
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if bar is not None:
                bar.close()

    def _resume_point(self, f):
        """(SHA-256 of what the .part holds, its length, the If-Range value); a .part that cannot be
        proven to belong to the same file (no validator, no hash to check it) is emptied first."""
        f.seek(0, os.SEEK_END)
        validator = _if_range(_read_validators(self.dest, self.url))
        if f.tell() and validator is None and not self.want.has_hash():
            f.seek(0)
            f.truncate()
        # Hash what the .part already holds: the final check covers every byte, old and new.
        h = hashlib.sha256()
        f.seek(0)
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
        return h, f.tell(), validator

    def _admit(self, response, total: int | None) -> int:
        """Refuse a response that cannot be the file; the most bytes the file may have; starts the
        deadline."""
        ctype = response.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
            raise _Refused(f"{self.url}: the server sent an HTML page (Content-Type {ctype}), not the file; "
                           f"nothing was saved ({self._by_hand()})")
        want = self.want.size
        if want is not None and total is not None and total != want:
            raise _Refused(f"{self.url}: the server announces {total} bytes, the expected size is {want}; "
                           "nothing was saved (a changed file on the server?)")
        if total is None and not self.want.has_hash():
            raise _Refused(f"{self.url}: the server sent no length and no hash is known to check the body, "
                           f"so a cut or padded file could not be told apart; refused ({self._by_hand()})")
        limit = want if want is not None else total if total is not None else self.max_bytes
        if self.budget is None:
            self.budget = self.deadline.seconds(limit)
        return limit

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _op_timeout(self) -> float:
        if self.budget is None:
            return self.timeout
        return max(0.05, min(self.timeout, self.budget - self._elapsed()))

    def _pause(self, seconds: float) -> None:
        if self.budget is not None:
            seconds = min(seconds, max(0.0, self.budget - self._elapsed()))
        time.sleep(seconds)

    def _copy_body(self, response, f, h, bar, *, have: int, limit: int) -> int:
        part = part_path(self.dest)
        got = 0
        while True:
            if self.budget is not None and self._elapsed() > self.budget:
                f.flush()
                raise DownloadError(
                    f"{self.url}: still incomplete after {self._elapsed():.1f} s, more than the "
                    f"{self.budget:.1f} s allowed for {limit} bytes; {have + got} bytes kept in {part} (run "
                    "the command again to resume)"
                )
            try:
                # read1: what one receive brings, so the deadline is checked even when bytes trickle in.
                chunk = response.read1(_CHUNK)
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                f.flush()
                raise _Cut(f"connection lost ({first_line(e, type(e).__name__)})") from None
            if not chunk:
                return got
            if have == 0 and got == 0 and _HTML_START.match(chunk[:512]):
                raise _Refused(f"{self.url}: the server sent an HTML page, not the file; nothing was saved "
                               f"({self._by_hand()})")
            if have + got + len(chunk) > limit:
                raise _Refused(f"{self.url}: the body is longer than the expected {limit} bytes; stopped "
                               "reading there and nothing was saved")
            try:
                f.write(chunk)
            except OSError as e:
                raise DownloadError(f"{part}: cannot write ({plain_reason(e)})") from None
            h.update(chunk)
            got += len(chunk)
            bar.update(len(chunk))


def _open(url: str, have: int, validator: str | None, timeout: float, dest: Path):
    """The HTTP response for ``url`` from byte ``have`` on. Retryable failures raise ``_Cut``."""
    headers = {"User-Agent": f"cyclegan/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator is not None:
            headers["If-Range"] = validator
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
