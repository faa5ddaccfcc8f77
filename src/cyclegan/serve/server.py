"""``cyclegan serve``: load the models, bind the socket, run the app under uvicorn."""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

import torch

from cyclegan.devices import cap_threads
from cyclegan.serve.errors import ServeError
from cyclegan.serve.memory import DEFAULT_MAX_REQUEST_MEMORY
from cyclegan.serve.models import load_models
from cyclegan.translate import parse_bytes

__all__ = ["bind_socket", "build_server", "run_server"]


def _require_extra() -> None:
    # python-multipart is imported lazily by Starlette on the first upload; check it now instead.
    # It is importable as python_multipart since 0.0.13 and as multipart before.
    missing = [name for name, modules in (("fastapi", ["fastapi"]), ("uvicorn", ["uvicorn"]),
                                          ("python-multipart", ["python_multipart", "multipart"]))
               if not any(importlib.util.find_spec(m) for m in modules)]
    if missing:
        raise ServeError(f"serve needs {', '.join(missing)}; pip install 'cyclegan[serve]'")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one), or a one-line ServeError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ServeError(f"--host {host}: cannot resolve ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    # The protocol number matters: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say
    # IPPROTO_TCP, and with Nagle on every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ServeError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); is another server running?") from None
    sock.set_inheritable(True)
    return sock


def build_server(app: Any, *, header_timeout: float, max_connections: int, send_timeout: float | None = None,
                 log_level: str = "info") -> Any:
    """A ``uvicorn.Server`` for ``app`` whose connections have a header deadline, a send deadline (None:
    ``connections.DEFAULT_SEND_TIMEOUT``) and a cap (serve.connections).

    Run it with ``.run(sockets=[bind_socket(...)])``; setting ``should_exit`` stops it.
    """
    import uvicorn  # the serve extra

    from cyclegan.serve.connections import DEFAULT_SEND_TIMEOUT, guarded_protocol  # uvicorn: the serve extra

    config = uvicorn.Config(
        app,
        http=guarded_protocol(header_timeout=header_timeout, max_connections=max_connections,
                              send_timeout=DEFAULT_SEND_TIMEOUT if send_timeout is None else send_timeout),
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def run_server(
    checkpoints: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    precision: str = "fp32",
    tile: str = "auto",
    max_upload_bytes: int | None = None,
    max_pixels: int | None = None,
    queue_size: int | None = None,
    workers: int = 1,
    threads: int = 0,
    cors_origins: Sequence[str] = (),
    header_timeout: float | None = None,
    body_timeout: float | None = None,
    max_connections: int | None = None,
    max_request_memory: str | int | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Load ``checkpoints`` (``path`` or ``name=path``) once, then serve until Ctrl-C.

    ``max_request_memory`` is a size such as ``1G`` or ``512M``, or a number of bytes.
    """
    _require_extra()
    # app imports FastAPI and connections uvicorn: the serve extra, checked just above.
    from cyclegan.serve.app import (
        DEFAULT_BODY_TIMEOUT,
        DEFAULT_MAX_PIXELS,
        DEFAULT_MAX_UPLOAD_BYTES,
        DEFAULT_QUEUE_SIZE,
        create_app,
    )
    from cyclegan.serve.connections import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS

    if port < 0 or port > 65535:
        raise ServeError(f"--port {port}: expected 0..65535")
    if workers < 1:
        raise ServeError(f"--workers must be >= 1, got {workers}")
    if threads < 0:
        raise ServeError(f"--threads must be >= 0, got {threads}")
    if queue_size is not None and queue_size < 0:
        raise ServeError(f"--queue-size must be >= 0, got {queue_size}")
    if max_upload_bytes is not None and max_upload_bytes < 1:
        raise ServeError("--max-upload-mb must be positive")
    if max_pixels is not None and max_pixels < 1:
        raise ServeError("--max-megapixels must be positive")
    for flag, seconds in (("--header-timeout", header_timeout), ("--body-timeout", body_timeout)):
        if seconds is not None and not seconds > 0:
            raise ServeError(f"{flag} must be a positive number of seconds, got {seconds}")
    if max_connections is not None and max_connections < 1:
        raise ServeError(f"--max-connections must be >= 1, got {max_connections}")
    request_memory = (DEFAULT_MAX_REQUEST_MEMORY if max_request_memory is None
                      else parse_bytes(max_request_memory, name="max_request_memory"))
    # Bind before loading models, so a busy port fails in a second rather than after the loading.
    sock = bind_socket(host, port)
    # Model loading runs here; the workers set the same count for themselves. 0: the CPUs this
    # process may use (PyTorch's default, capped), shared among the workers.
    if not threads:
        threads = max(1, cap_threads() // workers)
    torch.set_num_threads(threads)
    try:
        models = load_models(checkpoints, device=device, precision=precision, tile=tile, threads=threads,
                             echo=echo)
        app = create_app(
            models,
            max_upload_bytes=max_upload_bytes or DEFAULT_MAX_UPLOAD_BYTES,
            max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
            queue_size=DEFAULT_QUEUE_SIZE if queue_size is None else queue_size,
            workers=workers,
            threads=threads,
            cors_origins=list(cors_origins) or None,
            body_timeout=DEFAULT_BODY_TIMEOUT if body_timeout is None else body_timeout,
            max_request_memory=request_memory,
        )
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        echo(f"serving {', '.join(models)} on http://{shown}:{bound_port}  (Ctrl-C stops)")
        if not _is_loopback(host):
            echo(f"warning: {host} is reachable from other machines and the API has no authentication")
        server = build_server(
            app,
            header_timeout=DEFAULT_HEADER_TIMEOUT if header_timeout is None else header_timeout,
            max_connections=DEFAULT_MAX_CONNECTIONS if max_connections is None else max_connections,
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
