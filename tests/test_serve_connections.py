"""Connection limits of the real server (uvicorn on a loopback socket, in a thread): header and body
deadlines, the cap on open connections.

Raw sockets play the misbehaving clients. The timeouts are made small here; the waits below are
generous upper bounds that only turn a hang into a failure, not timing assertions.
"""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from cyclegan.cli import main
from cyclegan.serve.app import create_app
from cyclegan.serve.models import ServedModel
from cyclegan.serve.server import bind_socket, build_server

WAIT = 10.0  # seconds before a test gives up waiting for the server; far above every limit used


def _stub_app(**options):
    return create_app({"stub": ServedModel(name="stub", translators={"a2b": lambda im: im.convert("RGB")})},
                      **options)


@contextlib.contextmanager
def _serving(app, *, header_timeout: float = 30.0, max_connections: int = 64,
             send_timeout: float | None = None,
             send_buffer: int | None = None) -> Iterator[tuple[int, object]]:
    sock = bind_socket("127.0.0.1", 0)
    if send_buffer is not None:  # inherited by the accepted sockets: a full buffer at a few KB
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    options = {} if send_timeout is None else {"send_timeout": send_timeout}
    server = build_server(app, header_timeout=header_timeout, max_connections=max_connections,
                          log_level="warning", **options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = True
        thread.join(WAIT)
        sock.close()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


def _read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _status_and_json(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _wait_for_connections(server, n: int) -> None:
    deadline = time.monotonic() + WAIT
    while len(server.server_state.connections) != n:
        assert time.monotonic() < deadline, f"{len(server.server_state.connections)} open, expected {n}"
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------ headers


def test_unfinished_headers_get_408_and_the_connection_is_closed():
    with _serving(_stub_app(), header_timeout=0.5) as (port, _):
        with _connect(port) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")  # the blank line never comes
            status, body = _status_and_json(_read_until_closed(s))
        assert status == 408
        assert "within 0.5 s" in body["error"]


def test_headers_trickled_a_byte_at_a_time_are_cut_off_by_the_deadline():
    # The deadline counts from the connection, not from the last byte: trickling does not extend it.
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X-Padding: " + b"a" * 200 + b"\r\n\r\n"
    with _serving(_stub_app(), header_timeout=0.5) as (port, _), _connect(port) as s:
        sent = 0
        deadline = time.monotonic() + WAIT
        while sent < len(request) and time.monotonic() < deadline:
            if select.select([s], [], [], 0.02)[0]:
                break  # the server answered before the headers were complete
            try:
                s.sendall(request[sent : sent + 1])
            except OSError:
                break
            sent += 1
        assert sent < len(request), "the server waited for every trickled byte"
        assert _read_until_closed(s).startswith(b"HTTP/1.1 408")


def test_a_connection_that_sends_nothing_is_closed_quietly():
    with _serving(_stub_app(), header_timeout=0.3) as (port, _), _connect(port) as s:
        assert _read_until_closed(s) == b""


def test_prompt_requests_and_keep_alive_are_unaffected():
    with (_serving(_stub_app(), header_timeout=0.5) as (port, _),
          httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as client):
        assert client.get("/healthz").status_code == 200
        time.sleep(0.8)  # longer than the header deadline, shorter than uvicorn's 5 s keep-alive
        r = client.post("/api/translate", files={"image": ("a.png", _png(), "image/png")})
        assert r.status_code == 200, r.text
        assert client.get("/healthz").status_code == 200


# ------------------------------------------------------------------------------------------ body


def test_an_upload_that_never_finishes_gets_408_and_the_connection_is_closed():
    with _serving(_stub_app(body_timeout=0.5)) as (port, _), _connect(port) as s:
        s.sendall(b"POST /api/translate HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n"
                  b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
                  + _png()[:20])
        response = _read_until_closed(s)
    status, body = _status_and_json(response)
    assert status == 408
    assert "within 0.5 s" in body["error"]
    assert b"connection: close" in response.lower()


# ------------------------------------------------------------------------------------------ cap


def test_connections_over_the_cap_get_503_and_the_server_recovers():
    with _serving(_stub_app(), max_connections=3) as (port, server):
        idle = [_connect(port) for _ in range(3)]
        try:
            _wait_for_connections(server, 3)
            extra = [_connect(port) for _ in range(5)]
            for s in extra:
                with s:
                    status, body = _status_and_json(_read_until_closed(s))
                    assert status == 503 and "3 connections" in body["error"]
            # A client that sends its request (here a 300 KB upload) before reading still gets the 503.
            r = httpx.post(f"http://127.0.0.1:{port}/api/translate", timeout=WAIT,
                           files={"image": ("a.png", bytes(300_000), "image/png")})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert len(server.server_state.connections) == 3  # the refused ones were never counted
        finally:
            for s in idle:
                s.close()
        _wait_for_connections(server, 0)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as client:
            assert client.get("/healthz").status_code == 200


# ------------------------------------------------------------------------------------------ readers


def _noise_png(side: int = 400) -> bytes:
    """A PNG that does not compress (random pixels), so its translation is a response of ~side^2 * 3 bytes."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _multipart(png: bytes) -> bytes:
    boundary = "x-boundary"
    body = (f"--{boundary}\r\ncontent-disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "content-type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    return (f"POST /api/translate?format=png HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; "
            f"boundary={boundary}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


def test_clients_that_never_read_their_response_are_cut_off_and_others_get_served():
    png = _noise_png()
    with _serving(_stub_app(), max_connections=2, send_timeout=0.5, send_buffer=4096) as (port, server):
        readers = []
        for _ in range(2):  # every slot: a request sent, its ~480 KB response never read
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(_multipart(png))
            readers.append(s)
        try:
            _wait_for_connections(server, 2)
            started = time.monotonic()
            _wait_for_connections(server, 0)  # both aborted after their send deadline
            assert time.monotonic() - started >= 0.3  # not closed for another reason before the deadline
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as client:
                r = client.post("/api/translate", params={"format": "png"},
                                files={"image": ("a.png", png, "image/png")})
            assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n" and len(r.content) > 400_000
        finally:
            for s in readers:
                s.close()


def test_a_slow_but_steady_reader_gets_its_whole_response():
    png = _noise_png()
    with _serving(_stub_app(), send_timeout=0.5, send_buffer=4096) as (port, _), _connect(port) as s:
        s.sendall(_multipart(png))
        received, length = bytearray(), None
        while length is None or len(received.partition(b"\r\n\r\n")[2]) < length:
            chunk = s.recv(16384)
            assert chunk, "the server closed the connection before the whole response was sent"
            received += chunk
            if length is None and b"\r\n\r\n" in received:
                length = int(received.lower().split(b"content-length: ")[1].split()[0])
            time.sleep(0.005)  # pauses far shorter than the deadline
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.split()[1] == b"200" and len(body) == length > 400_000


# ------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("flag,value,message", [
    ("--header-timeout", "0", "--header-timeout must be a positive"),
    ("--body-timeout", "-1", "--body-timeout must be a positive"),
    ("--max-connections", "0", "--max-connections must be >= 1"),
])
def test_cli_limits_are_checked_in_one_line(tmp_path, flag, value, message):
    result = CliRunner().invoke(main, ["serve", "--checkpoint", str(tmp_path), "--port", "0", flag, value])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and message in result.output and result.output.count("\n") == 1
