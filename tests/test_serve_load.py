"""Load: 200 requests at concurrency 16 against `cyclegan serve` (a real process) with the tiny model.

Loopback only and bounded in count and time. Every answer must be an image or a clean 503 (JSON with
Retry-After); the server must stay up and its memory bounded. With 8 waiting places the 16 clients
overflow the queue (and, ignoring Retry-After, retry at once); with 32 nobody may be refused. The
figures are printed (``-s``) and written to ``load.json`` in the test's tmp folder for the README.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from cyclegan.checkpoint import save_checkpoint
from cyclegan.config import build_config
from cyclegan.training import build_models

REQUESTS = 200
CONCURRENCY = 16
IMAGE_SIZE = (160, 120)
MAX_RSS_GROWTH_MB = 300
TIME_LIMIT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(tmp_path, request):
    queue_size = request.param
    run = tmp_path / "tinyrun"
    cfg = build_config(preset="tiny", overrides={"train.device": "cpu", "train.seed": 11})
    save_checkpoint(run / "checkpoints" / "latest", config=cfg,
                    networks=build_models(cfg, torch.device("cpu")).networks())
    port = _free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below, after the process ends
    proc = subprocess.Popen(
        [sys.executable, "-m", "cyclegan", "serve", "--checkpoint", str(run), "--host", "127.0.0.1",
         "--port", str(port), "--device", "cpu", "--queue-size", str(queue_size),
         # One intra-op thread: on the 2-core test machine a second one costs more than it gives.
         "--threads", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not come up in 60 s"
        time.sleep(0.2)
    yield url, proc, queue_size
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.mark.parametrize("server", [8, 32], indirect=True, ids=["queue8", "queue32"])
def test_200_requests_at_concurrency_16(server, tmp_path):
    url, proc, queue_size = server
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)).save(buf, "PNG")
    payload = buf.getvalue()

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    with httpx.Client(base_url=url, timeout=30, limits=limits) as client:

        def one(_: int) -> tuple[int, float, dict, bytes]:
            start = time.perf_counter()
            r = client.post("/api/translate", files={"image": ("x.png", payload, "image/png")},
                            params={"format": "png"})
            return r.status_code, time.perf_counter() - start, dict(r.headers), r.content

        for i in range(3):  # warm up: first calls allocate the model's working memory
            assert one(i)[0] == 200
        rss_before = _rss_mb(proc.pid)

        start = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            results = list(pool.map(one, range(REQUESTS)))
        wall = time.perf_counter() - start
        rss_after = _rss_mb(proc.pid)
        health = client.get("/healthz")

    statuses = [s for s, *_ in results]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    for status, _, headers, body in results:
        if status == 200:
            assert headers["content-type"] == "image/png"
            assert Image.open(io.BytesIO(body)).size == IMAGE_SIZE
        else:
            assert headers["content-type"].startswith("application/json")
            assert "busy" in json.loads(body)["error"]
            assert int(headers["retry-after"]) >= 1
    assert health.status_code == 200 and proc.poll() is None
    assert health.json()["queue"]["running"] == 0
    assert rss_after - rss_before < MAX_RSS_GROWTH_MB
    assert wall < TIME_LIMIT_S
    if queue_size >= CONCURRENCY:
        assert statuses.count(503) == 0  # 503 means a full queue, never merely a busy server

    ok = [t for s, t, *_ in results if s == 200]
    busy = [t for s, t, *_ in results if s == 503]
    quantiles = statistics.quantiles(ok, n=20) if len(ok) >= 2 else [ok[0]] * 19
    figures = {
        "requests": REQUESTS,
        "concurrency": CONCURRENCY,
        "queue_size": queue_size,
        "image": f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} PNG",
        "ok": len(ok),
        "refused_503": len(busy),
        "wall_s": round(wall, 2),
        "throughput_ok_per_s": round(len(ok) / wall, 1),
        "p50_ms": round(statistics.median(ok) * 1000, 1),
        "p95_ms": round(quantiles[18] * 1000, 1),
        "p50_503_ms": round(statistics.median(busy) * 1000, 1) if busy else None,
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
    }
    Path(tmp_path / "load.json").write_text(json.dumps(figures, indent=2))
    print("\nload figures:", json.dumps(figures))
