"""Web app and HTTP API, in-process: listing, full-resolution translation, limits, errors, the queue.

The model is a tiny randomly initialised checkpoint made here; nothing is downloaded. The queue test
uses a stub translator gated by an event, so "the worker is busy" is a fact, not a race.
"""

from __future__ import annotations

import io
import re
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageFile

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from cyclegan.checkpoint import save_checkpoint
from cyclegan.cli import main
from cyclegan.config import build_config
from cyclegan.errors import TranslateError
from cyclegan.serve.app import create_app
from cyclegan.serve.errors import ServeError
from cyclegan.serve.memory import plan_request
from cyclegan.serve.models import ServedModel, load_models, parse_model_spec
from cyclegan.training import build_models

# ------------------------------------------------------------------------------------------ helpers


def _image_bytes(size: tuple[int, int], *, fmt: str = "PNG", mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    channels = 4 if mode == "RGBA" else 3
    arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt)
    return buf.getvalue()


def _black_png(width: int, height: int) -> bytes:
    """A valid RGB PNG of zeros, compressed row by row: a few KB that decode to width x height x 3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte 0, then black pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _post(client: TestClient, data: bytes, *, params: dict | None = None, name: str = "photo.png",
          content_type: str = "image/png"):
    return client.post("/api/translate", params=params or {}, files={"image": (name, data, content_type)})


def _error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("serve") / "tinyrun"
    cfg = build_config(preset="tiny", overrides={"train.device": "cpu", "train.seed": 5})
    models = build_models(cfg, torch.device("cpu"))
    save_checkpoint(run / "checkpoints" / "latest", config=cfg, networks=models.networks())
    return run


@pytest.fixture(scope="module")
def models(run_dir) -> dict[str, ServedModel]:
    return load_models([str(run_dir)], device="cpu")


@pytest.fixture
def client(models):
    with TestClient(create_app(models)) as c:
        yield c


class _GatedStub:
    """A translator that blocks until released: makes a busy worker deterministic."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def __call__(self, image: Image.Image) -> Image.Image:
        self.started.release()
        assert self.release.wait(timeout=30), "test never released the stub"
        return image.convert("RGB")


# ------------------------------------------------------------------------------------------ listing


def test_models_lists_names_directions_size_and_summary(client):
    body = client.get("/api/models").json()
    assert body["default_model"] == "tinyrun"
    (model,) = body["models"]
    assert model["name"] == "tinyrun"
    assert model["directions"] == ["a2b", "b2a"]
    assert model["image_size"] == 32
    assert model["summary"]["generator"] == "resnet"
    assert model["summary"]["preset"] == "tiny"
    assert body["limits"]["max_upload_bytes"] == 20 * 2**20
    assert body["limits"]["formats"] == ["png", "jpg", "webp"]
    # No server paths leak into the listing.
    assert "/" not in str(body["models"])


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["models"] == ["tinyrun"]
    assert body["queue"]["capacity"] == 1 + 8


def test_page_and_assets_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="file"' in page.text and 'id="result-image"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    css = client.get("/static/style.css")
    assert css.headers["content-type"].startswith("text/css")
    # Offline machines: nothing is fetched from anywhere else (the SVG namespace is a name, not a fetch).
    for text in (page.text, js.text, css.text):
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s'\"<>)]*", text)
        assert all(u.startswith("http://www.w3.org/2000/svg") for u in urls), urls
    # Only the fixed asset names exist: nothing in a URL is looked up on disk.
    _error_of(client.get("/static/../../pyproject.toml"), 404)
    _error_of(client.get("/static/index.html%00.js"), 404)


def test_openapi_documents_the_upload(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/api/translate"]["post"]
    schema = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["image"]["format"] == "binary"
    assert {p["name"] for p in post["parameters"]} >= {"model", "direction", "format", "max_side"}


# ------------------------------------------------------------------------------------------ translating


@pytest.mark.parametrize("fmt,pil_format,media", [("png", "PNG", "image/png"), ("jpg", "JPEG", "image/jpeg"),
                                                   ("webp", "WEBP", "image/webp")])
def test_translate_returns_the_input_size_in_the_asked_format(client, fmt, pil_format, media):
    r = _post(client, _image_bytes((45, 37)), params={"model": "tinyrun", "direction": "b2a", "format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    out = Image.open(io.BytesIO(r.content))
    assert out.format == pil_format
    assert out.size == (45, 37)
    assert (r.headers["x-image-width"], r.headers["x-image-height"]) == ("45", "37")
    assert "tinyrun-b2a" in r.headers["content-disposition"]


def test_defaults_are_first_model_and_first_direction(client, models):
    r = _post(client, _image_bytes((20, 24), seed=1))
    assert r.status_code == 200
    expected = models["tinyrun"].translators["a2b"](Image.open(io.BytesIO(_image_bytes((20, 24), seed=1))))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")), np.asarray(expected))


def test_max_side_downscales_first(client):
    r = _post(client, _image_bytes((120, 60)), params={"max_side": 40})
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (40, 20)
    # A max_side above the image's size changes nothing.
    r = _post(client, _image_bytes((30, 20)), params={"max_side": 4000})
    assert Image.open(io.BytesIO(r.content)).size == (30, 20)


def test_alpha_is_kept_in_png_and_dropped_in_jpg(client):
    data = _image_bytes((24, 16), mode="RGBA")
    assert Image.open(io.BytesIO(_post(client, data).content)).mode == "RGBA"
    assert Image.open(io.BytesIO(_post(client, data, params={"format": "jpg"}).content)).mode == "RGB"


def test_content_is_sniffed_not_the_name_or_type(client):
    # A real JPEG named .txt and declared text/plain is still an image...
    r = _post(client, _image_bytes((16, 16), fmt="JPEG"), name="notes.txt", content_type="text/plain")
    assert r.status_code == 200
    # ...and text named .png and declared image/png is not.
    message = _error_of(_post(client, b"just some text, honestly\n" * 4, name="photo.png"), 415)
    assert "not a supported image" in message


def test_truncated_and_empty_images_are_415(client):
    data = _image_bytes((64, 64))
    assert "cannot decode" in _error_of(_post(client, data[: len(data) // 2]), 415)
    assert "empty" in _error_of(_post(client, b""), 415)


def test_other_image_formats_pillow_knows_are_refused(client):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    _error_of(_post(client, buf.getvalue(), name="a.gif", content_type="image/gif"), 415)


# ------------------------------------------------------------------------------------------ limits


def test_upload_over_the_byte_limit_is_413(models):
    with TestClient(create_app(models, max_upload_bytes=10_000)) as c:
        big = _image_bytes((100, 100))  # ~30 KB of noise
        assert len(big) > 10_000
        assert "limit is" in _error_of(_post(c, big), 413)
        assert _post(c, _image_bytes((20, 20))).status_code == 200


def test_byte_limit_is_enforced_while_reading_without_content_length(models):
    boundary = "testboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def chunks():  # no Content-Length: the server only learns the size by counting
        yield head
        for _ in range(50):
            yield b"\0" * 100_000
        yield f"\r\n--{boundary}--\r\n".encode()

    with TestClient(create_app(models, max_upload_bytes=1_000_000)) as c:
        r = c.post("/api/translate", content=chunks(),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert "content-length" not in {k.lower() for k in r.request.headers}
        _error_of(r, 413)


def test_pixel_limit_refuses_before_decoding(models):
    with TestClient(create_app(models, max_pixels=1000)) as c:
        message = _error_of(_post(c, _image_bytes((40, 40))), 413)
        assert "1600 pixels" in message and "1000" in message
        assert _post(c, _image_bytes((30, 30))).status_code == 200


# just over Pillow's limit (a warning), far over (an error)
@pytest.mark.parametrize("pixels", [64 * 64 - 1, 500])
def test_decompression_bomb_is_413(client, monkeypatch, pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)
    assert "decompression bomb" in _error_of(_post(client, _image_bytes((64, 64))), 413)


# ------------------------------------------------------------------------------------ memory per request


@pytest.fixture
def decodes(monkeypatch) -> list[tuple[int, int]]:
    """The sizes of the images Pillow decodes pixels for, from now on."""
    seen: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def counting_load(self):
        seen.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    return seen


def test_a_small_png_declaring_a_huge_image_is_413_before_decoding(client, decodes):
    # 140 KB declaring 8000x6000: under the 50 MP pixel limit, but translating it would need several
    # GB (a 56 KB 4000x4000 PNG once took the server from 0.74 to 2.99 GB).
    bomb = _black_png(8000, 6000)
    assert len(bomb) < 200_000
    r = _post(client, bomb)
    message = _error_of(r, 413)
    assert "8000x6000" in message and "the limit is 1.00 GiB" in message
    body = r.json()
    assert body["limit_bytes"] == 2**30 and body["estimate_bytes"] > 2**30
    assert f"max_side={body['fitting_max_side']}" in message
    assert (8000, 6000) not in decodes  # refused from the header: no pixel was decoded


def test_max_side_downscales_an_image_over_the_memory_limit_instead(models, decodes):
    bomb = _black_png(2000, 1500)
    limit = 128 * 2**20
    with TestClient(create_app(models, max_request_memory=limit)) as c:
        refused = _post(c, bomb)
        fitting = refused.json()["fitting_max_side"]
        assert "128 MiB" in _error_of(refused, 413) and 64 < fitting < 2000
        assert decodes == []
        # The client accepts a smaller result: downscaled as asked...
        r = _post(c, bomb, params={"max_side": 64})
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(r.content)).size == (64, 48)
        # ...and further, down to what fits, when the side asked for is still too large.
        r = _post(c, bomb, params={"max_side": 2000})
        assert r.status_code == 200, r.text
        width, height = Image.open(io.BytesIO(r.content)).size
        assert width == fitting and height == round(1500 * fitting / 2000)
        assert (r.headers["x-image-width"], r.headers["x-image-height"]) == (str(width), str(height))


def test_an_image_whose_decoded_pixels_alone_are_over_the_limit_is_413_even_with_max_side(models, decodes):
    with TestClient(create_app(models, max_request_memory=32 * 2**20)) as c:
        r = _post(c, _black_png(2000, 1500), params={"max_side": 64})
        assert "max_side=" not in _error_of(r, 413)
        assert r.json()["fitting_max_side"] is None
        assert decodes == []
        assert _post(c, _image_bytes((64, 48))).status_code == 200
        assert c.get("/api/models").json()["limits"]["max_request_memory"] == 32 * 2**20


def test_each_request_gets_a_tiling_budget_within_its_limit(models):
    shared = models["tinyrun"].translators["a2b"]
    budget, max_side = shared.memory_budget, shared.max_side
    whole = plan_request(shared, (600, 400), limit=2**30)
    assert whole.size == (600, 400) and whole.estimate <= 2**30
    # A limit the whole generator pass would not fit: the request's translator tiles within it.
    limit = 32 * 2**20
    tiled = plan_request(shared, (600, 400), limit=limit)
    assert tiled.estimate <= limit < whole.estimate
    assert tiled.translator.memory_budget < 600 * 400 * shared.bytes_per_pixel  # so it tiles
    # The translation itself is what the translator estimates: its copies and its (now tiled) pass.
    assert tiled.estimate > tiled.translator.estimate_peak_bytes(600, 400) > tiled.translator.memory_budget
    assert (shared.memory_budget, shared.max_side) == (budget, max_side)  # the shared one is untouched
    y, x = np.mgrid[0:400, 0:600]
    channels = [x * 255 // 600, y * 255 // 400, (x + y) * 255 // 1000]
    photo_like = Image.fromarray(np.stack(channels, -1).astype(np.uint8))
    got = np.asarray(tiled.translator(photo_like)).astype(int)
    want = np.asarray(shared(photo_like)).astype(int)
    # Tiles share the image's norm statistics (translate's tiling), so a smooth image barely changes.
    assert got.shape == want.shape and np.abs(got - want).mean() < 4


# ------------------------------------------------------------------------------------------ bad requests


def test_unknown_model_is_404_with_the_valid_names(client):
    r = _post(client, _image_bytes((8, 8)), params={"model": "../../etc/passwd"})
    message = _error_of(r, 404)
    assert "tinyrun" in message
    assert r.json()["valid"] == ["tinyrun"]


def test_bad_direction_is_422_with_the_valid_values(client):
    r = _post(client, _image_bytes((8, 8)), params={"direction": "sideways"})
    assert "a2b, b2a" in _error_of(r, 422)
    assert r.json()["valid"] == ["a2b", "b2a"]


def test_direction_a_single_direction_model_lacks_is_422():
    stub = ServedModel(name="export", translators={"b2a": lambda im: im})
    with TestClient(create_app({"export": stub})) as c:
        r = _post(c, _image_bytes((8, 8)), params={"direction": "a2b"})
        assert "choose from b2a" in _error_of(r, 422)
        assert _post(c, _image_bytes((8, 8))).status_code == 200  # default: its one direction


@pytest.mark.parametrize("params", [{"format": "gif"}, {"max_side": 0}, {"max_side": "big"},
                                    {"quality": 101}])
def test_bad_parameters_are_422_json(client, params):
    message = _error_of(_post(client, _image_bytes((8, 8)), params=params), 422)
    assert next(iter(params)) in message


def test_malformed_requests_are_json_errors(client):
    assert "multipart" in _error_of(client.post("/api/translate", content=b"\x89PNG"), 415)
    files = {"photo": ("a.png", _image_bytes((8, 8)), "image/png")}
    _error_of(client.post("/api/translate", files=files), 422)
    _error_of(client.get("/api/nothing"), 404)
    _error_of(client.get("/api/translate"), 405)


# ------------------------------------------------------------------------------------------ the queue


def test_full_queue_answers_503_with_retry_after_and_recovers():
    stub = _GatedStub()
    app = create_app({"stub": ServedModel(name="stub", translators={"a2b": stub})}, queue_size=1, workers=1)
    results: list[int] = []
    with TestClient(app) as c:

        def send() -> None:
            results.append(_post(c, _image_bytes((8, 8))).status_code)

        first = threading.Thread(target=send)
        first.start()
        assert stub.started.acquire(timeout=10)  # the only worker is now busy
        second = threading.Thread(target=send)
        second.start()
        deadline = time.monotonic() + 10
        while app.state.queue.stats()["waiting"] < 1:  # the only waiting place is now taken
            assert time.monotonic() < deadline, app.state.queue.stats()
            time.sleep(0.01)

        r = _post(c, _image_bytes((8, 8)))
        assert "busy" in _error_of(r, 503)
        assert int(r.headers["retry-after"]) >= 1
        assert c.get("/healthz").json()["queue"]["refused"] == 1  # the event loop stayed responsive

        stub.release.set()
        first.join(timeout=10)
        second.join(timeout=10)
        assert results == [200, 200]
        assert _post(c, _image_bytes((8, 8))).status_code == 200
        stats = c.get("/healthz").json()["queue"]
        assert stats["running"] == 0 and stats["waiting"] == 0


# ------------------------------------------------------------------------------------------ CORS


def test_cors_is_off_unless_configured(models):
    preflight = {"Origin": "http://example.com", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(models)) as c:
        assert "access-control-allow-origin" not in c.options("/api/translate", headers=preflight).headers
        assert "access-control-allow-origin" not in c.get("/api/models", headers={"Origin": "http://example.com"}).headers
    with TestClient(create_app(models, cors_origins=["http://example.com"])) as c:
        r = c.options("/api/translate", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "http://example.com"
        other = c.options("/api/translate", headers={**preflight, "Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in other.headers


# ------------------------------------------------------------------------------------------ model specs, CLI


def test_model_specs(tmp_path):
    assert parse_model_spec("ghibli=runs/x") == ("ghibli", Path("runs/x"))
    assert parse_model_spec("runs/a=b") == ("a-b", Path("runs/a=b"))  # "=" inside a path is a path
    run = tmp_path / "h2z"
    (run / "checkpoints" / "latest").mkdir(parents=True)
    assert parse_model_spec(str(run)) == ("h2z", run)
    assert parse_model_spec(str(run / "checkpoints" / "latest"))[0] == "h2z"
    with pytest.raises(ServeError, match="nothing after"):
        parse_model_spec("name=")


def test_duplicate_model_names_are_refused(run_dir):
    with pytest.raises(ServeError, match="two models are named 'tinyrun'"):
        load_models([str(run_dir), str(run_dir)], device="cpu")
    both = load_models([str(run_dir), f"again={run_dir}"], device="cpu")
    assert list(both) == ["tinyrun", "again"]


def test_cli_serve_reports_a_missing_checkpoint_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--checkpoint", str(tmp_path / "nope"), "--port", "0"])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1


def test_cli_serve_checks_the_memory_limit_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--checkpoint", str(tmp_path), "--max-request-memory", "10K"])
    assert result.exit_code == 1
    assert result.output == "error: --max-request-memory '10K': must be at least 64M\n"


def test_translation_options_are_checked_before_any_model_loads(tmp_path):
    # the library names the parameter; the command line names the flag
    with pytest.raises(TranslateError, match="^tile '5': tiles must be at least 16 pixels"):
        load_models([str(tmp_path / "missing")], tile="5")
    result = CliRunner().invoke(main, ["serve", "--checkpoint", str(tmp_path / "missing"), "--port", "0",
                                       "--tile", "5"])
    assert (result.exit_code, result.output) == (1, "error: --tile '5': tiles must be at least 16 pixels\n")


def test_cli_serve_reports_a_busy_port(run_dir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--checkpoint", str(run_dir), "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_an_exported_generator_serves_its_one_direction(run_dir, tmp_path):
    from cyclegan.export import export_generator

    export_generator(run_dir, fmt="safetensors", out=tmp_path / "zebra2horse", direction="b2a")
    notes: list[str] = []
    served = load_models([str(tmp_path / "zebra2horse")], device="cpu", echo=notes.append)
    assert served["zebra2horse"].directions == ["b2a"]
    assert any("serving b2a only" in n for n in notes)
    with TestClient(create_app(served)) as c:
        assert c.get("/api/models").json()["models"][0]["directions"] == ["b2a"]
        r = _post(c, _image_bytes((33, 21)))
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (33, 21)


def test_auto_precision_serves_through_onnxruntime_on_a_cpu_without_bf16(run_dir, models, monkeypatch):
    pytest.importorskip("onnxruntime")
    from cyclegan import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    auto = load_models([str(run_dir)], device="cpu", precision="auto", threads=1)
    assert auto["tinyrun"].summary["runtime"] == "onnxruntime"
    data = _image_bytes((40, 24))
    with TestClient(create_app(auto)) as fast, TestClient(create_app(models)) as reference:
        got = np.asarray(Image.open(io.BytesIO(_post(fast, data).content)).convert("RGB")).astype(int)
        want = np.asarray(Image.open(io.BytesIO(_post(reference, data).content)).convert("RGB")).astype(int)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1
