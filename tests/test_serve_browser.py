"""The web page in a real browser: headless Debian Chromium driven by Playwright, against a live server.

Needs the ``chromium`` Debian package (``.ci/run`` installs it); Playwright's own browser downloads
are never used. The server runs in a background thread on a free loopback port.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

from cyclegan.checkpoint import save_checkpoint
from cyclegan.config import build_config
from cyclegan.serve.app import create_app
from cyclegan.serve.models import load_models
from cyclegan.serve.server import bind_socket
from cyclegan.training import build_models

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    run = tmp_path_factory.mktemp("browser") / "tinyrun"
    cfg = build_config(preset="tiny", overrides={"train.device": "cpu", "train.seed": 7})
    save_checkpoint(run / "checkpoints" / "latest", config=cfg,
                    networks=build_models(cfg, torch.device("cpu")).networks())
    app = create_app(load_models([str(run)], device="cpu"))
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server_url):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    # Script errors fail the test; the browser's own note on a 4xx answer is expected, not a problem.
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    # The page must not reach beyond its own server (no CDN): record every request's origin.
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(server_url + "/")
    page.wait_for_selector("#direction option", state="attached")  # models loaded
    yield page
    context.close()
    assert all(u.startswith((server_url, "blob:", "data:")) for u in requested), requested
    assert not problems, problems


def _png(path: Path, size: tuple[int, int]) -> Path:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) % 256], axis=-1)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def test_upload_translates_at_full_size(page, tmp_path):
    source = _png(tmp_path / "garden.png", (123, 77))
    page.set_input_files("#file", str(source))
    page.wait_for_selector("#download:not([hidden])", timeout=30_000)
    size = page.locator("#result-image").evaluate("el => [el.naturalWidth, el.naturalHeight]")
    assert size == [123, 77]
    assert page.locator("#error").is_hidden()
    assert page.locator("#busy").is_hidden()
    assert "123 × 77" in page.inner_text("#result-meta")
    # The download link carries the translated image itself, under a helpful name.
    assert page.get_attribute("#download", "download") == "garden-tinyrun-a2b.png"
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "saved.png"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "garden-tinyrun-a2b.png"
    assert Image.open(saved).size == (123, 77)
    # The comparison slider moves the cut between before and after.
    page.locator("#slider").fill("20")
    assert page.locator("#compare").evaluate("el => el.style.getPropertyValue('--pos')") == "20%"
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_direction_format_and_max_side_reach_the_server(page, tmp_path):
    page.select_option("#direction", "b2a")
    page.select_option("#format", "webp")
    page.fill("#max-side", "50")
    page.set_input_files("#file", str(_png(tmp_path / "wide.png", (200, 100))))
    page.wait_for_selector("#download:not([hidden])", timeout=30_000)
    assert page.locator("#result-image").evaluate("el => [el.naturalWidth, el.naturalHeight]") == [50, 25]
    assert page.get_attribute("#download", "download") == "wide-tinyrun-b2a.webp"


def test_a_non_image_shows_a_readable_error(page, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a shopping list, not a photo\n")
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    text = page.inner_text("#error")
    assert "not an image" in text and "not a supported image" in text
    assert page.locator("#busy").is_hidden()
    assert page.locator("#go").is_enabled()  # the user can pick another file and go again


def test_drag_and_drop(page):
    # A real drop event carrying a File, as the browser makes one when a photo is dragged in.
    page.locator("#drop").evaluate(
        """async (zone) => {
            const canvas = document.createElement("canvas");
            canvas.width = 64;
            canvas.height = 48;
            const ctx = canvas.getContext("2d");
            ctx.fillStyle = "#4a8";
            ctx.fillRect(0, 0, 64, 48);
            const blob = await new Promise((done) => canvas.toBlob(done, "image/png"));
            const transfer = new DataTransfer();
            transfer.items.add(new File([blob], "dropped.png", { type: "image/png" }));
            zone.dispatchEvent(new DragEvent("dragover",
                                             { dataTransfer: transfer, bubbles: true, cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop",
                                             { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }"""
    )
    page.wait_for_selector("#download:not([hidden])", timeout=30_000)
    assert page.locator("#result-image").evaluate("el => [el.naturalWidth, el.naturalHeight]") == [64, 48]
    assert "dropped.png" in page.inner_text("#file-name")
