"""The pretrained catalog, `pretrained:NAME` resolution, and `pretrained get` end to end against a
local HTTP server standing in for the publishers' sites (nothing is downloaded from the internet)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from local_server import serve

from cyclegan import pretrained
from cyclegan.cli import main
from cyclegan.download import ChecksumError, cache_dir
from cyclegan.modelfile import load_any_generator
from cyclegan.sources import (
    ModelSourceError,
    catalog_entry,
    load_catalog,
    pretrained_model_dir,
    resolve_source,
)

ZOO = ["apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite", "horse2zebra",
       "zebra2horse", "monet2photo", "style_monet", "style_cezanne", "style_ukiyoe", "style_vangogh", "sat2map",
       "map2sat", "cityscapes_photo2label", "cityscapes_label2photo", "facades_photo2label", "facades_label2photo",
       "iphone2dslr_flower"]


def test_catalog_holds_the_zoo_cut_and_animeganv2_releases():
    catalog = load_catalog()
    by_format = {f: [e.name for e in catalog.values() if e.format == f] for f in ("official", "cut", "animeganv2")}
    assert by_format["official"] == ZOO  # the authors' 18, in their script's order
    assert len(by_format["cut"]) == 6 and len(by_format["animeganv2"]) == 4
    assert sum(map(len, by_format.values())) == len(catalog)
    for e in catalog.values():
        assert e.url.startswith(("http://", "https://")) and e.task and e.architecture and e.licence
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        if e.non_commercial:
            assert "non-commercial" in e.licence_note.lower(), e.name
    assert catalog["horse2zebra"].url.endswith("/cyclegan/pretrained_models/horse2zebra.pth")
    assert catalog["cat2dog_cut"].member == "cat2dog_cut_pretrained/latest_net_G.pth"
    assert catalog["animeganv2_paprika"].non_commercial  # converted from the original's NC weights


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ModelSourceError, match="did you mean horse2zebra"):
        catalog_entry("hors2zebra")


def test_extra_catalog_adds_and_replaces_entries(tmp_path, monkeypatch):
    extra = tmp_path / "mirror.json"
    mirror = dict(vars(catalog_entry("horse2zebra")), url="https://mirror.example/horse2zebra.pth")
    mine = dict(mirror, name="my_model", url="https://models.example/my.pth", file="my.pth")
    extra.write_text(json.dumps({"models": [mirror, mine]}))
    monkeypatch.setenv("CYCLEGAN_PRETRAINED_CATALOG", str(extra))
    catalog = load_catalog()
    assert catalog["horse2zebra"].url == "https://mirror.example/horse2zebra.pth"
    assert catalog["my_model"].file == "my.pth" and len(catalog) == len(ZOO) + 6 + 4 + 1
    extra.write_text(json.dumps({"models": [dict(mine, sha256="abc")]}))
    with pytest.raises(ModelSourceError, match="sha256 must be 64 hex digits"):
        load_catalog()
    extra.write_text("{not json")
    with pytest.raises(ModelSourceError, match="mirror.json: not valid JSON"):
        load_catalog()


def test_plain_paths_pass_through(tmp_path):
    assert resolve_source(tmp_path / "run") == tmp_path / "run"
    assert resolve_source("runs/x/model.onnx") == Path("runs/x/model.onnx")
    odd = tmp_path / "hf:odd"  # an existing local folder wins over the prefix
    odd.mkdir()
    assert resolve_source(str(odd)) == odd


def test_missing_pretrained_model_says_what_to_run_and_what_to_fetch():
    with pytest.raises(ModelSourceError) as info:
        resolve_source("pretrained:horse2zebra")
    msg = str(info.value)
    model = cache_dir() / "pretrained" / "horse2zebra" / "model"
    assert "\n" not in msg and "`cyclegan pretrained get horse2zebra`" in msg
    assert catalog_entry("horse2zebra").url in msg and f"`cyclegan import official FILE --out {model}`" in msg
    with pytest.raises(ModelSourceError, match="take cat2dog_cut_pretrained/latest_net_G.pth out of it"):
        resolve_source("pretrained:cat2dog_cut")
    with pytest.raises(ModelSourceError, match="unknown pretrained model 'nope'"):
        resolve_source("pretrained:nope")


def test_pretrained_model_in_the_cache_resolves_and_picks_a_direction(tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    model = pretrained_model_dir("style_monet")
    model.mkdir(parents=True)
    (model / "generator.safetensors").write_bytes(b"x")
    assert resolve_source("pretrained:style_monet") == model
    two = pretrained_model_dir("horse2zebra")
    (two / "a2b").mkdir(parents=True)
    (two / "b2a").mkdir()
    assert resolve_source("pretrained:horse2zebra") == two / "a2b"
    assert resolve_source("pretrained:horse2zebra", direction="b2a") == two / "b2a"
    (two / "b2a").rmdir()
    with pytest.raises(ModelSourceError, match="has no b2a model"):
        resolve_source("pretrained:horse2zebra", direction="b2a")


# ------------------------------------------------------------------ pretrained get, against a local server


def official_state(ngf: int = 4, n_blocks: int = 1, seed: int = 0) -> dict:
    """A generator in the CycleGAN authors' file layout (their ResNet ``model.<i>`` Sequential), tiny."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    sd = {"model.1.weight": r(ngf, 3, 7, 7), "model.1.bias": r(ngf),
          "model.4.weight": r(2 * ngf, ngf, 3, 3), "model.4.bias": r(2 * ngf),
          "model.7.weight": r(4 * ngf, 2 * ngf, 3, 3), "model.7.bias": r(4 * ngf)}
    for i in range(n_blocks):
        for c in (1, 5):
            sd[f"model.{10 + i}.conv_block.{c}.weight"] = r(4 * ngf, 4 * ngf, 3, 3)
            sd[f"model.{10 + i}.conv_block.{c}.bias"] = r(4 * ngf)
    n = n_blocks
    sd |= {f"model.{10 + n}.weight": r(4 * ngf, 2 * ngf, 3, 3), f"model.{10 + n}.bias": r(2 * ngf),
           f"model.{13 + n}.weight": r(2 * ngf, ngf, 3, 3), f"model.{13 + n}.bias": r(ngf),
           f"model.{17 + n}.weight": r(3, ngf, 7, 7), f"model.{17 + n}.bias": r(3)}
    return sd


def _bytes_of(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


ZOO_FILE = _bytes_of(official_state())


def _tar_with(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE = _tar_with({"checkpoints/tiny_a_pretrained/latest_net_G.pth": ZOO_FILE,
                     "checkpoints/tiny_b_pretrained/latest_net_G.pth": _bytes_of(official_state(seed=1))})


def _entry(name: str, url: str, **kw) -> dict:
    base = dict(vars(catalog_entry("horse2zebra")), name=name, url=url, file=url.rsplit("/", 1)[-1],
                task="tiny test model", non_commercial=False)
    return base | kw


@pytest.fixture
def local_catalog(tmp_path, monkeypatch):
    """A private cache, and catalog entries served by a 127.0.0.1 server (network allowed only there)."""
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CYCLEGAN_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    files = {"/zoo/tiny.pth": ZOO_FILE, "/cut/models.tar": ARCHIVE}
    with serve(files) as srv:
        entries = [
            _entry("tiny", srv.url + "/zoo/tiny.pth", sha256=hashlib.sha256(ZOO_FILE).hexdigest(),
                   size_bytes=len(ZOO_FILE)),
            _entry("tiny_nohash", srv.url + "/zoo/tiny.pth", file="tiny_nohash.pth", non_commercial=True,
                   licence_note="Trained on data for non-commercial research only"),
            _entry("tiny_badhash", srv.url + "/zoo/tiny.pth", sha256="0" * 64),
            _entry("tiny_a", srv.url + "/cut/models.tar", member="tiny_a_pretrained/latest_net_G.pth"),
            _entry("tiny_b", srv.url + "/cut/models.tar", member="tiny_b_pretrained/latest_net_G.pth"),
            _entry("tiny_c", srv.url + "/cut/models.tar", member="tiny_c_pretrained/latest_net_G.pth"),
        ]
        path = tmp_path / "catalog.json"
        path.write_text(json.dumps({"models": entries}))
        monkeypatch.setenv("CYCLEGAN_PRETRAINED_CATALOG", str(path))
        yield srv


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click 8.1; 8.2+ always separates the streams
    except TypeError:
        return CliRunner()


def test_get_downloads_checks_imports_records_and_then_is_instant(local_catalog):
    srv = local_catalog
    got = pretrained.get("tiny", progress=False)
    assert got.downloaded and got.sha256 == hashlib.sha256(ZOO_FILE).hexdigest()
    assert got.model_dir == pretrained_model_dir("tiny") and got.source.read_bytes() == ZOO_FILE
    assert sorted(p.name for p in got.model_dir.iterdir()) == ["config.json", "generator.safetensors", "meta.json"]
    record = pretrained.read_record("tiny")
    assert record["sha256"] == got.sha256 and record["bytes"] == len(ZOO_FILE) and record["url"].endswith("tiny.pth")
    assert len(srv.requests) == 1
    again = pretrained.get("tiny", progress=False)
    assert not again.downloaded and again.sha256 == got.sha256 and len(srv.requests) == 1  # from the cache
    # pretrained:NAME now loads like any exported model, and runs.
    loaded = load_any_generator(resolve_source("pretrained:tiny"), device="cpu")
    y = loaded.model(torch.zeros(1, 3, 16, 16))  # [1, 3, 16, 16]
    assert y.shape == (1, 3, 16, 16) and loaded.info.direction == "a2b"


def test_get_resumes_a_cut_download(local_catalog):
    srv = local_catalog
    srv.cut("/zoo/tiny.pth", after=len(ZOO_FILE) // 3)
    got = pretrained.get("tiny", progress=False)
    assert got.source.read_bytes() == ZOO_FILE
    assert srv.requests == [("/zoo/tiny.pth", None), ("/zoo/tiny.pth", f"bytes={len(ZOO_FILE) // 3}-")]


def test_checksum_mismatch_caches_nothing(local_catalog):
    with pytest.raises(ChecksumError, match="nothing was saved"):
        pretrained.get("tiny_badhash", progress=False)
    base = cache_dir() / "pretrained" / "tiny_badhash"
    assert not pretrained.is_downloaded("tiny_badhash")
    assert not base.exists() or [p for p in base.rglob("*") if p.is_file()] == []


def test_archive_release_is_downloaded_once_and_each_model_taken_out(local_catalog):
    srv = local_catalog
    a = pretrained.get("tiny_a", progress=False)
    b = pretrained.get("tiny_b", progress=False)
    assert a.source.read_bytes() == ZOO_FILE and b.source.name == "latest_net_G.pth"
    assert [r for r in srv.requests if r[0] == "/cut/models.tar"] == [("/cut/models.tar", None)]  # shared
    with pytest.raises(pretrained.PretrainedError, match="has no tiny_c_pretrained/latest_net_G.pth"):
        pretrained.get("tiny_c", progress=False)


def test_offline_get_names_the_file_and_imports_one_put_there_by_hand(local_catalog, monkeypatch):
    srv = local_catalog
    monkeypatch.setenv("CYCLEGAN_OFFLINE", "1")
    res = _runner().invoke(main, ["pretrained", "get", "tiny"])
    dest = cache_dir() / "pretrained" / "tiny" / "source" / "tiny.pth"
    assert res.exit_code == 1 and srv.requests == []
    error = res.stderr.strip()
    assert error.startswith("error:") and "\n" not in error
    assert f"download {srv.url}/zoo/tiny.pth by hand and put it at {dest}" in error
    dest.parent.mkdir(parents=True)
    dest.write_bytes(ZOO_FILE)  # what the user does by hand
    res = _runner().invoke(main, ["pretrained", "get", "tiny", "--offline"])
    assert res.exit_code == 0, res.output
    assert "tiny: downloaded and imported" in res.stdout and srv.requests == []
    assert resolve_source("pretrained:tiny") == pretrained_model_dir("tiny")


def test_cli_get_with_out_and_list(local_catalog, tmp_path):
    out = tmp_path / "mine"
    res = _runner().invoke(main, ["pretrained", "get", "tiny_nohash", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"copied to {out}" in res.stdout and (out / "generator.safetensors").is_file()
    assert "note: tiny_nohash is for non-commercial use" in res.stderr
    assert f"sha256 {hashlib.sha256(ZOO_FILE).hexdigest()}" in res.stderr  # recorded, though none was published
    res = _runner().invoke(main, ["pretrained", "get", "tiny_nohash", "--out", str(out)])
    assert res.exit_code == 1 and "already exists; pass --overwrite" in res.stderr
    res = _runner().invoke(main, ["pretrained", "get", "tiny_nohash", "--out", str(out), "--overwrite"])
    assert res.exit_code == 0 and "already in the cache" in res.stdout
    (out / "notes.txt").write_text("mine")
    res = _runner().invoke(main, ["pretrained", "get", "tiny_nohash", "--out", str(out), "--overwrite"])
    assert res.exit_code == 1 and "refusing to replace it" in res.stderr and (out / "notes.txt").exists()
    res = _runner().invoke(main, ["pretrained", "list"])
    lines = res.stdout.splitlines()
    assert res.exit_code == 0 and len(lines) == 1 + 28 + 6
    row = next(line for line in lines if " tiny_nohash " in line)
    assert row.startswith("*") and "non-commercial" in row and "official" in row
    assert any(line.startswith("  horse2zebra ") and "?" in line for line in lines)  # size not published
    res = _runner().invoke(main, ["pretrained", "get", "hors2zebra"])
    assert res.exit_code == 1 and "did you mean horse2zebra" in res.stderr


def test_translate_with_a_pretrained_model_before_and_after_get(local_catalog, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (20, 12), (200, 120, 40)).save(photo)
    out = tmp_path / "styled.png"
    args = ["translate", str(photo), "--checkpoint", "pretrained:tiny", "--out", str(out), "--device", "cpu",
            "--precision", "fp32", "--quiet"]
    res = _runner().invoke(main, args)
    assert res.exit_code == 1 and not out.exists()
    assert "pretrained model tiny is not downloaded: run `cyclegan pretrained get tiny`" in res.stderr
    assert _runner().invoke(main, ["pretrained", "get", "tiny", "--quiet"]).exit_code == 0
    res = _runner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (20, 12)
