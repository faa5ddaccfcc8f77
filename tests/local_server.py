"""A file server on 127.0.0.1 for download tests: serves bytes from a dict, honours Range requests, and
can cut a response short, ignore ranges, or answer with an error, while recording every request."""

from __future__ import annotations

import contextlib
import threading
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
    url: str = ""

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
            if self.path in server.status:
                self.send_error(server.status[self.path])
                return
            data = server.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng and server.ranges:
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
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
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
