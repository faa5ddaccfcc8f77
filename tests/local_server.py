"""A file server on 127.0.0.1 for download tests: serves bytes from a dict, honours Range and If-Range
requests (ETag and Last-Modified), and can cut a response short, ignore ranges, answer with an error,
send no length, send bytes for ever, drip them slowly or label them HTML, while recording every request."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FileServer:
    files: dict[str, bytes]
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before closing (once each)
    cuts_left: dict[str, int] = field(default_factory=dict)  # path -> how many responses to cut
    ranges: bool = True  # False: answer every request with the whole file (200)
    status: dict[str, int] = field(default_factory=dict)  # path -> error status to answer with
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    if_range: list[str | None] = field(default_factory=list)  # the If-Range header of each request
    validators: bool = True  # send ETag and Last-Modified (and honour If-Range)
    no_length: set[str] = field(default_factory=set)  # paths sent without Content-Length (closed at the end)
    endless: set[str] = field(default_factory=set)  # paths whose body never ends (no length)
    # path -> Content-Type [application/octet-stream]
    content_type: dict[str, str] = field(default_factory=dict)
    drip: dict[str, float] = field(default_factory=dict)  # path -> seconds between single bytes
    url: str = ""

    def etag(self, path: str) -> str:
        return '"' + hashlib.sha1(self.files[path]).hexdigest()[:16] + '"'

    def cut(self, path: str, after: int, times: int = 1) -> None:
        self.cut_after[path] = after
        self.cuts_left[path] = times


def _handler(server: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            server.requests.append((self.path, rng))
            server.if_range.append(self.headers.get("If-Range"))
            if self.path in server.status:
                self.send_error(server.status[self.path])
                return
            if self.path in server.endless:
                self._endless()
                return
            data = server.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng and server.ranges and self._same_file():
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            if server.validators:
                self.send_header("ETag", server.etag(self.path))
                self.send_header("Last-Modified", "Mon, 07 Dec 2026 00:00:00 GMT")
            self.send_header("Content-Type", server.content_type.get(self.path, "application/octet-stream"))
            if self.path in server.no_length:
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(body)))
            if self.path in server.drip:
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(server.drip[self.path])
                self.close_connection = True
                return
            if server.cuts_left.get(self.path, 0) > 0:
                server.cuts_left[self.path] -= 1
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[: server.cut_after[self.path]])
                self.wfile.flush()
                self.close_connection = True
                return
            self.end_headers()
            self.wfile.write(body)

        def _same_file(self) -> bool:
            """No If-Range, or one naming the file as it is now (a changed file gets a 200, RFC 9110)."""
            tag = self.headers.get("If-Range")
            return tag is None or (server.validators and tag == server.etag(self.path))

        def _endless(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            block = b"\0" * 65536
            with contextlib.suppress(OSError):  # the client hangs up when it has had enough
                for _ in range(1 << 16):  # 4 GiB at most, so a broken client cannot keep the test running
                    self.wfile.write(block)

    return Handler


@contextlib.contextmanager
def serve(files: dict[str, bytes], **kwargs):
    """``with serve({"/a.bin": b"..."}) as srv: download(srv.url + "/a.bin", ...)``."""
    state = FileServer(files=dict(files), **kwargs)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
