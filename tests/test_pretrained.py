"""The pretrained catalog, `pretrained:NAME` resolution, and `pretrained get` end to end against a
local HTTP server standing in for the publishers' sites (nothing is downloaded from the internet)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from local_server import serve

from cyclegan import pretrained
from cyclegan.cli import main
from cyclegan.download import ChecksumError, Deadline, cache_dir
from cyclegan.modelfile import load_any_generator
from cyclegan.sources import (
    ModelSourceError,
    catalog_entry,
    load_catalog,
    pretrained_model_dir,
    resolve_source,
)

ZOO = ["apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite", "horse2zebra",
       "zebra2horse", "monet2photo", "style_monet", "style_cezanne", "style_ukiyoe", "style_vangogh",
       "sat2map",
       "map2sat", "cityscapes_photo2label", "cityscapes_label2photo", "facades_photo2label",
       "facades_label2photo", "iphone2dslr_flower"]
# the zoo's 18, CUT's 6, 4 AnimeGANv2 port files, 4 AnimeGANv2 originals, White-box, 2 v3, Scenimefy
N_SHIPPED = 36


def test_catalog_holds_the_zoo_cut_animegan_whitebox_and_scenimefy_releases():
    catalog = load_catalog()
    formats = ("official", "cut", "animeganv2", "animeganv2-tf", "whitebox", "onnx")
    by_format = {f: [e.name for e in catalog.values() if e.format == f] for f in formats}
    assert by_format["official"] == ZOO  # the authors' 18, in their script's order
    assert len(by_format["cut"]) == 7 and len(by_format["animeganv2"]) == 4  # CUT's 6 + Scenimefy
    assert by_format["animeganv2-tf"] == ["animeganv2_hayao_64", "animeganv2_hayao_99",
                                          "animeganv2_shinkai_53", "animeganv2_paprika_54"]
    assert by_format["whitebox"] == ["whitebox_cartoon"]
    assert by_format["onnx"] == ["animeganv3_hayao_36", "animeganv3_shinkai_37"]
    assert sum(map(len, by_format.values())) == len(catalog)
    for e in catalog.values():
        # every host serves https
        assert e.url.startswith("https://") and e.task and e.architecture and e.licence
        assert e.styles and e.publisher and e.input_convention, e.name
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256)
        if e.non_commercial:
            assert "non-commercial" in e.licence_note.lower(), e.name
        # git and release hosts: https
        if e.format not in ("official", "cut") or e.name == "scenimefy_shinkai":
            assert all(f.url.startswith("https://") for f in e.downloads()), e.name
        if e.format in ("animeganv2-tf", "whitebox", "onnx") or e.name == "scenimefy_shinkai":
            assert e.non_commercial, e.name
            if not any(f.sha256 or f.git_sha1 for f in e.downloads()):
                assert "no hash" in e.hash_note, e.name  # said, not silently missing
    assert catalog["horse2zebra"].url.endswith("/cyclegan/pretrained_models/horse2zebra.pth")
    assert catalog["cat2dog_cut"].member == "cat2dog_cut_pretrained/latest_net_G.pth"
    assert catalog["animeganv2_paprika"].non_commercial  # converted from the original's NC weights
    assert catalog["sat2map"].non_commercial and catalog["map2sat"].non_commercial  # scraped Google Maps
    assert {e.name for e in catalog.values() if "ghibli" in e.styles} == {
        "animeganv2_hayao_64", "animeganv2_hayao_99", "animeganv3_hayao_36"}
    assert {"animeganv2_shinkai_53", "animeganv3_shinkai_37", "scenimefy_shinkai"} <= {
        e.name for e in catalog.values() if "shinkai" in e.styles}


def test_git_hosted_weights_carry_the_publishers_blob_ids_and_are_pinned_to_a_commit():
    catalog = load_catalog()
    blobs = {"animeganv2_paprika": "58086c9db9fc7a9e5c2876ca31b8079599352643",
             "animeganv2_face_paint_512_v2": "d75102f8f201ddaf8dbe6b913b1a97585b55f838",
             "animeganv2_face_paint_512_v1": "19c1a1da4d9580186109a2b055d91044e5127de6",
             "animeganv2_celeba_distill": "3b7ea61b02254980831cc3bc77af30666dbc999c"}
    for name, blob in blobs.items():
        e = catalog[name]
        assert e.git_sha1 == blob
        assert re.fullmatch(r"https://raw\.githubusercontent\.com/bryandlee/animegan2-pytorch/[0-9a-f]{40}/weights/"
                            + re.escape(e.file), e.url)
    wb = catalog["whitebox_cartoon"]
    assert [f.name for f in wb.downloads()] == ["model-33999.index", "model-33999.data-00000-of-00001"]
    assert [f.git_sha1 for f in wb.downloads()] == ["f1749e5542e83cf01a19aa1b2a3a7370a17efa41",
                                                     "785cdcb8a0ab9bf44171c087878cc84863562eab"]
    assert wb.import_path == "model-33999" and wb.licence == "CC BY-NC-SA 4.0"
    hayao = catalog["animeganv2_hayao_64"]
    assert hayao.import_path == "Hayao-64.ckpt"
    assert [f.name for f in hayao.downloads()] == ["Hayao-64.ckpt.index", "Hayao-64.ckpt.data-00000-of-00001"]
    v3 = catalog["animeganv3_hayao_36"]
    assert v3.url == "https://github.com/TachibanaYoshino/AnimeGANv3/releases/download/v1.1.0/AnimeGANv3_Hayao_36.onnx"
    assert v3.import_options == {"layout": "nhwc", "value_range": "-1,1", "channels": "rgb", "multiple": 8,
                                 "min_side": 256}
    assert catalog["scenimefy_shinkai"].licence == "S-Lab License 1.0"


@pytest.mark.parametrize(("change", "message"), [
    ({"member": 5}, "model horse2zebra: member must be a string or null, not an integer"),
    ({"non_commercial": "yes"}, "non_commercial must be true or false, not a string"),
    ({"size_bytes": True}, "size_bytes must be an integer or null, not true or false"),
    ({"url": None}, "url must be a string, not null"),
    ({"styles": "ghibli"}, "styles must be a list"),
    ({"styles": ["Ghibli!"]}, "styles must be a list of lower-case tags"),
    ({"git_sha1": "abc"}, "git_sha1 must be 40 hex digits"),
    ({"import_options": {"layout": 3}}, "import_options: layout must be a string, not an integer"),
    ({"import_options": {"colour": "rgb"}}, "import_options has unknown key 'colour'"),
    ({"files": [{"name": "a.index", "url": 5}]}, "files[0]: url must be a string"),
    ({"files": [{"name": "../a", "url": "https://x/a"}], "url": None}, "url must be a string"),
    ({"task": ["a"]}, "task must be a string, not a list"),
])
def test_every_catalog_field_is_checked_by_type_with_one_line_naming_file_model_and_field(
        tmp_path, monkeypatch, change, message):
    extra = tmp_path / "mine.json"
    extra.write_text(json.dumps({"models": [catalog_entry("horse2zebra").to_json() | change]}))
    monkeypatch.setenv("CYCLEGAN_PRETRAINED_CATALOG", str(extra))
    with pytest.raises(ModelSourceError) as info:
        load_catalog()
    msg = str(info.value)
    assert msg.startswith(f"{extra}: model horse2zebra") and message in msg and "\n" not in msg
    res = _runner().invoke(main, ["pretrained", "list"])
    assert res.exit_code == 1 and res.stderr.startswith(f"error: {extra}: model horse2zebra")
    assert "Traceback" not in res.output + res.stderr


def test_files_entries_are_checked_too(tmp_path, monkeypatch):
    extra = tmp_path / "mine.json"
    base = {k: v for k, v in catalog_entry("whitebox_cartoon").to_json().items()}
    for files, message in (([{"name": "../evil", "url": "https://x/a"}],
                            "files[0]: name must be a plain file name"),
                           ([{"name": "a", "url": "https://x/a"}, {"name": "a", "url": "https://x/b"}],
                            "two entries of the same name"),
                           (["a"], "files[0]: must be an object")):
        extra.write_text(json.dumps({"models": [base | {"files": files}]}))
        monkeypatch.setenv("CYCLEGAN_PRETRAINED_CATALOG", str(extra))
        with pytest.raises(ModelSourceError, match=re.escape(message)):
            load_catalog()
    extra.write_text(json.dumps({"models": [base | {"url": "https://x/a"}]}))
    with pytest.raises(ModelSourceError, match="either files or url"):
        load_catalog()


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ModelSourceError, match="did you mean horse2zebra"):
        catalog_entry("hors2zebra")


def test_extra_catalog_adds_and_replaces_entries(tmp_path, monkeypatch):
    extra = tmp_path / "mirror.json"
    mirror = dict(catalog_entry("horse2zebra").to_json(), url="https://mirror.example/horse2zebra.pth")
    mine = dict(mirror, name="my_model", url="https://models.example/my.pth", file="my.pth")
    extra.write_text(json.dumps({"models": [mirror, mine]}))
    monkeypatch.setenv("CYCLEGAN_PRETRAINED_CATALOG", str(extra))
    catalog = load_catalog()
    assert catalog["horse2zebra"].url == "https://mirror.example/horse2zebra.pth"
    assert catalog["my_model"].file == "my.pth" and len(catalog) == N_SHIPPED + 1
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
    # a two-file checkpoint: both files, and the prefix to import
    with pytest.raises(ModelSourceError) as info:
        resolve_source("pretrained:whitebox_cartoon")
    msg = str(info.value)
    assert "model-33999.index and " in msg and "model-33999.data-00000-of-00001 into one folder" in msg
    assert "`cyclegan import whitebox model-33999 --out " in msg


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


SPLIT_INDEX = b"tiny index of a two-file checkpoint"
LOCAL = 9  # the entries local_catalog serves


def _blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


ARCHIVE = _tar_with({"checkpoints/tiny_a_pretrained/latest_net_G.pth": ZOO_FILE,
                     "checkpoints/tiny_b_pretrained/latest_net_G.pth": _bytes_of(official_state(seed=1))})


def _entry(name: str, url: str, **kw) -> dict:
    base = dict(catalog_entry("horse2zebra").to_json(), name=name, url=url, file=url.rsplit("/", 1)[-1],
                task="tiny test model", non_commercial=False, styles=["test"])
    return base | kw


@pytest.fixture
def local_catalog(tmp_path, monkeypatch):
    """A private cache, and catalog entries served by a 127.0.0.1 server (network allowed only there)."""
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CYCLEGAN_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    files = {"/zoo/tiny.pth": ZOO_FILE, "/cut/models.tar": ARCHIVE, "/split/tiny.ckpt.index": SPLIT_INDEX,
             "/split/tiny.ckpt.data-00000-of-00001": ZOO_FILE, "/zoo/junk.pth": b"\x00junk" * 100,
             "/zoo/page.pth": b"<html><body>Sign in to download</body></html>"}
    with serve(files, content_type={"/zoo/page.pth": "text/html"}) as srv:
        split = _entry("tiny_split", srv.url, import_path="tiny.ckpt", files=[
            {"name": "tiny.ckpt.index", "url": srv.url + "/split/tiny.ckpt.index",
             "git_sha1": _blob(SPLIT_INDEX)},
            {"name": "tiny.ckpt.data-00000-of-00001", "url": srv.url + "/split/tiny.ckpt.data-00000-of-00001",
             "git_sha1": _blob(ZOO_FILE), "size_bytes": len(ZOO_FILE)}])
        for key in ("url", "file", "member", "size_bytes", "sha256", "git_sha1"):
            split.pop(key, None)
        entries = [
            _entry("tiny", srv.url + "/zoo/tiny.pth", sha256=hashlib.sha256(ZOO_FILE).hexdigest(),
                   size_bytes=len(ZOO_FILE)),
            _entry("tiny_nohash", srv.url + "/zoo/tiny.pth", file="tiny_nohash.pth", non_commercial=True,
                   licence_note="Trained on data for non-commercial research only"),
            _entry("tiny_badhash", srv.url + "/zoo/tiny.pth", sha256="0" * 64),
            _entry("tiny_a", srv.url + "/cut/models.tar", member="tiny_a_pretrained/latest_net_G.pth"),
            _entry("tiny_b", srv.url + "/cut/models.tar", member="tiny_b_pretrained/latest_net_G.pth"),
            _entry("tiny_c", srv.url + "/cut/models.tar", member="tiny_c_pretrained/latest_net_G.pth"),
            split,
            _entry("tiny_junk", srv.url + "/zoo/junk.pth"),
            _entry("tiny_html", srv.url + "/zoo/page.pth", styles=["test", "ghibli"]),
        ]
        assert len(entries) == LOCAL
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
    assert sorted(p.name for p in got.model_dir.iterdir()) == ["config.json", "generator.safetensors",
                                                               "meta.json"]
    record = pretrained.read_record("tiny")
    assert record["sha256"] == got.sha256 and record["bytes"] == len(ZOO_FILE) and record["url"].endswith(
        "tiny.pth")
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
    terms, error = res.stderr.strip().splitlines()  # the terms come first, before any download
    assert terms.startswith("terms of tiny: BSD-2-Clause") and error.startswith("error:")
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
    # recorded, though none was published
    assert f"sha256 {hashlib.sha256(ZOO_FILE).hexdigest()}" in res.stderr
    res = _runner().invoke(main, ["pretrained", "get", "tiny_nohash", "--out", str(out)])
    assert res.exit_code == 1 and "already exists; pass --overwrite" in res.stderr
    res = _runner().invoke(main, ["pretrained", "get", "tiny_nohash", "--out", str(out), "--overwrite"])
    assert res.exit_code == 0 and "already in the cache" in res.stdout
    (out / "notes.txt").write_text("mine")
    res = _runner().invoke(main, ["pretrained", "get", "tiny_nohash", "--out", str(out), "--overwrite"])
    assert res.exit_code == 1 and "refusing to replace it" in res.stderr and (out / "notes.txt").exists()
    res = _runner().invoke(main, ["pretrained", "list"])
    lines = res.stdout.splitlines()
    assert res.exit_code == 0 and len(lines) == 1 + N_SHIPPED + LOCAL
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


# ------------------------------------------------------------------ trust: multi-file, failures, re-checks,
# verify


def test_a_two_file_checkpoint_is_fetched_into_one_folder_checked_and_imported_from_its_prefix(
        local_catalog, monkeypatch):
    srv = local_catalog
    seen = []
    real = pretrained.import_weights

    def by_prefix(fmt, paths, out, *, options=None, **kw):  # stands in for animeganv2-tf / whitebox
        (prefix,) = paths
        seen.append((fmt, Path(prefix).name, sorted(p.name for p in Path(prefix).parent.iterdir()), options))
        data = Path(str(prefix) + ".data-00000-of-00001")
        return real("official", [data], out, **kw)

    monkeypatch.setattr(pretrained, "import_weights", by_prefix)
    got = pretrained.get("tiny_split", progress=False)
    assert seen == [("official", "tiny.ckpt", ["tiny.ckpt.data-00000-of-00001", "tiny.ckpt.index"], None)]
    assert got.source == cache_dir() / "pretrained" / "tiny_split" / "source" / "tiny.ckpt"
    assert sorted(r[0] for r in srv.requests) == ["/split/tiny.ckpt.data-00000-of-00001",
                                                  "/split/tiny.ckpt.index"]
    record = pretrained.read_record("tiny_split")
    assert [(f["name"], f["git_sha1"]) for f in record["files"]] == [
        ("tiny.ckpt.index", _blob(SPLIT_INDEX)), ("tiny.ckpt.data-00000-of-00001", _blob(ZOO_FILE))]
    res = _runner().invoke(main, ["pretrained", "verify", "tiny_split"])
    assert res.exit_code == 0 and res.stdout.startswith("ok   tiny_split (")


def test_a_file_that_does_not_match_the_publishers_git_blob_is_not_kept(local_catalog, tmp_path, monkeypatch):
    srv = local_catalog
    srv.files["/split/tiny.ckpt.index"] = b"a different index"  # the server's copy is not the publisher's
    with pytest.raises(ChecksumError, match="git blob SHA-1 .* is not the publisher's"):
        pretrained.get("tiny_split", progress=False)
    assert not (cache_dir() / "pretrained" / "tiny_split" / "source" / "tiny.ckpt.index").exists()


def test_a_download_that_fails_to_import_is_removed_with_one_line(local_catalog):
    srv = local_catalog
    for attempt in (1, 2):  # the second get downloads again instead of failing on the cached bytes
        res = _runner().invoke(main, ["pretrained", "get", "tiny_junk", "--quiet"])
        error = res.stderr.strip().splitlines()[-1]
        assert res.exit_code == 1 and error.startswith("error: tiny_junk: importing")
        assert "removed junk.pth from the cache" in error and "next get downloads it again" in error
        assert not (cache_dir() / "pretrained" / "tiny_junk" / "source" / "junk.pth").exists()
        assert [r for r in srv.requests if r[0] == "/zoo/junk.pth"] == [("/zoo/junk.pth", None)] * attempt
    assert not pretrained.is_downloaded("tiny_junk")


def test_an_html_page_is_never_cached_by_get(local_catalog):
    srv = local_catalog
    for attempt in (1, 2):
        res = _runner().invoke(main, ["pretrained", "get", "tiny_html", "--quiet"])
        assert res.exit_code == 1 and "sent an HTML page" in res.stderr and "nothing was saved" in res.stderr
        assert len([r for r in srv.requests if r[0] == "/zoo/page.pth"]) == attempt
    base = cache_dir() / "pretrained" / "tiny_html"
    assert not base.exists() or [p for p in base.rglob("*") if p.is_file()] == []


def _recatalog(monkeypatch, name: str, **change) -> None:
    path = Path(os.environ["CYCLEGAN_PRETRAINED_CATALOG"])
    doc = json.loads(path.read_text())
    for e in doc["models"]:
        if e["name"] == name:
            e.update(change)
    path.write_text(json.dumps(doc))


def test_get_rechecks_a_cached_model_against_a_hash_the_catalog_gained_later(local_catalog, monkeypatch):
    srv = local_catalog
    pretrained.get("tiny_nohash", progress=False)
    _recatalog(monkeypatch, "tiny_nohash", sha256="ab" * 32)
    with pytest.raises(pretrained.PretrainedError) as info:
        pretrained.get("tiny_nohash", progress=False)
    msg = str(info.value)
    assert "does not match the catalog" in msg and f"the catalog says {'ab' * 32}" in msg
    assert f"delete {cache_dir() / 'pretrained' / 'tiny_nohash'}" in msg and "\n" not in msg
    _recatalog(monkeypatch, "tiny_nohash", sha256=hashlib.sha256(ZOO_FILE).hexdigest(),
               git_sha1=_blob(ZOO_FILE))
    assert not pretrained.get("tiny_nohash", progress=False).downloaded
    _recatalog(monkeypatch, "tiny_nohash", sha256=None, git_sha1="1" * 40)
    with pytest.raises(pretrained.PretrainedError, match="git blob SHA-1 .*, the catalog says 1111"):
        pretrained.get("tiny_nohash", progress=False)
    assert len(srv.requests) == 1  # all from the cache


@pytest.mark.parametrize("damage", ["[1, 2]", '{"files": [{"name": 5}]}', "{not json"])
def test_a_damaged_download_json_is_not_a_traceback(local_catalog, damage):
    pretrained.get("tiny", progress=False)
    record = cache_dir() / "pretrained" / "tiny" / "download.json"
    record.write_text(damage)
    assert pretrained.read_record("tiny") is None
    again = pretrained.get("tiny", progress=False)  # the files still match the catalog's hash: usable
    assert (not again.downloaded
            and again.source == cache_dir() / "pretrained" / "tiny" / "source" / "tiny.pth")
    res = _runner().invoke(main, ["pretrained", "verify", "tiny"])
    assert res.exit_code == 1 and f"BAD  tiny: {record}" in res.stdout and "Traceback" not in res.output


def test_verify_reports_each_damaged_or_missing_file_on_one_line(local_catalog):
    pretrained.get("tiny", progress=False)
    pretrained.get("tiny_a", progress=False)
    res = _runner().invoke(main, ["pretrained", "verify"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["ok   tiny (3 files)", "ok   tiny_a (3 files)"]
    source = cache_dir() / "pretrained" / "tiny" / "source" / "tiny.pth"
    source.write_bytes(ZOO_FILE[:100] + bytes([ZOO_FILE[100] ^ 1]) + ZOO_FILE[101:])  # bit rot
    weights = pretrained_model_dir("tiny_a") / "generator.safetensors"
    weights.unlink()
    res = _runner().invoke(main, ["pretrained", "verify"])
    lines = res.stdout.splitlines()
    assert res.exit_code == 1 and "2 of 2 models failed the check" in res.stderr
    assert lines[0] == f"BAD  tiny: {source}: changed since it was downloaded " \
                       f"(SHA-256 {hashlib.sha256(source.read_bytes()).hexdigest()}, recorded " \
                       f"{hashlib.sha256(ZOO_FILE).hexdigest()})"
    assert lines[1] == f"BAD  tiny_a: {weights}: missing"
    res = _runner().invoke(main, ["pretrained", "verify", "tiny_b"])
    assert res.exit_code == 1 and "tiny_b: not downloaded" in res.stderr


def test_list_by_style_prints_the_terms(local_catalog):
    res = _runner().invoke(main, ["pretrained", "list", "--style", "Ghibli"])
    assert res.exit_code == 0, res.output
    names = [line.split()[0] for line in res.stdout.splitlines()[1:] if not line.startswith("   ")]
    assert names == ["animeganv2_hayao_64", "animeganv2_hayao_99", "animeganv3_hayao_36", "tiny_html"]
    terms = [line.strip() for line in res.stdout.splitlines() if "NON-COMMERCIAL" in line]
    assert len(terms) == 3 and all("non-commercial purposes only" in t for t in terms)
    res = _runner().invoke(main, ["pretrained", "list", "--style", "pixar"])
    assert res.exit_code == 1 and "style 'pixar': no catalog model has it (styles:" in res.stderr
    assert "ghibli" in res.stderr and "shinkai" in res.stderr


def test_get_shows_non_commercial_terms_before_downloading(local_catalog):
    res = _runner().invoke(main, ["pretrained", "get", "tiny_nohash", "--quiet", "--offline"])
    assert res.exit_code == 1 and res.stderr.startswith("note: tiny_nohash is for non-commercial use only")


def test_onnx_catalog_options_reach_the_importer_and_bad_ones_stop_before_any_download(local_catalog,
                                                                                       monkeypatch):
    srv = local_catalog
    v3 = catalog_entry("animeganv3_hayao_36").to_json() | {"name": "tiny_onnx",
                                                           "url": srv.url + "/zoo/tiny.pth",
                                                             "file": "tiny.onnx"}
    path = Path(os.environ["CYCLEGAN_PRETRAINED_CATALOG"])
    doc = json.loads(path.read_text())
    doc["models"] += [v3,
                      v3 | {"name": "tiny_onnx_bad",
                            "import_options": {"layout": "hwcn", "value_range": "-1,1",
                                                                            "channels": "rgb",
                                               "multiple": 8}}]
    path.write_text(json.dumps(doc))
    with pytest.raises(pretrained.PretrainedError, match="tiny_onnx_bad: import_options: layout 'hwcn'"):
        pretrained.get("tiny_onnx_bad", progress=False)
    assert srv.requests == []
    seen = []

    def capture(fmt, paths, out, *, options=None, **kw):
        seen.append((fmt, options))
        raise pretrained.PretrainedError("stop here")

    monkeypatch.setattr(pretrained, "import_weights", capture)
    with pytest.raises(pretrained.PretrainedError):
        pretrained.get("tiny_onnx", progress=False)
    ((fmt, options),) = seen
    c = options.convention
    assert fmt == "onnx" and options.convert
    assert (c.layout, c.value_range, c.channels, c.multiple, c.min_side) == ("nhwc", "-1,1", "rgb", 8, 256)


TF_FIXTURES = Path(__file__).parent / "fixtures" / "tf"


@pytest.mark.parametrize(("fmt", "folder", "prefix"), [("animeganv2-tf", "animeganv2", "Hayao-8.ckpt"),
                                                       ("whitebox", "whitebox", "model-4")])
def test_tensorflow_checkpoints_in_the_publishers_layout_get_and_translate(
        local_catalog, tmp_path, monkeypatch, fmt, folder, prefix):
    """Files written by TensorFlow itself (tests/fixtures/make_tf_fixtures.py), served as a git host serves
    them, fetched into one folder, checked against their git blob ids, imported from the prefix, run."""
    from PIL import Image

    srv = local_catalog
    names = [f"{prefix}.index", f"{prefix}.data-00000-of-00001"]
    for n in names:
        srv.files[f"/{folder}/{n}"] = (TF_FIXTURES / folder / n).read_bytes()
    entry = {k: v for k, v in catalog_entry("whitebox_cartoon").to_json().items()} | {
        "name": f"tiny_{folder}", "format": fmt, "import_path": prefix,
        "files": [{"name": n, "url": f"{srv.url}/{folder}/{n}",
                   "git_sha1": _blob(srv.files[f"/{folder}/{n}"]),
                   "size_bytes": len(srv.files[f"/{folder}/{n}"])} for n in names]}
    path = Path(os.environ["CYCLEGAN_PRETRAINED_CATALOG"])
    doc = json.loads(path.read_text())
    doc["models"].append(entry)
    path.write_text(json.dumps(doc))
    res = _runner().invoke(main, ["pretrained", "get", f"tiny_{folder}", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "non-commercial use only: CC BY-NC-SA 4.0" in res.stderr  # the entry's terms, shown
    photo, out = tmp_path / "photo.png", tmp_path / "styled.png"
    Image.new("RGB", (37, 21), (90, 160, 220)).save(photo)
    res = _runner().invoke(main,
                           ["translate", str(photo), "--model", f"pretrained:tiny_{folder}", "--out",
                            str(out),
                                  "--device", "cpu", "--precision", "fp32", "--quiet"])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (37, 21)
    res = _runner().invoke(main, ["pretrained", "verify", f"tiny_{folder}"])
    assert res.exit_code == 0 and res.stdout.startswith(f"ok   tiny_{folder}")


def test_an_onnx_release_with_animeganv3s_convention_gets_and_translates_at_an_odd_size(local_catalog,
                                                                                        tmp_path):
    from PIL import Image

    srv = local_catalog
    graph = (Path(__file__).parent / "fixtures" / "onnx" / "animeganv3_like.onnx").read_bytes()
    srv.files["/release/AnimeGANv3_like.onnx"] = graph
    entry = catalog_entry("animeganv3_hayao_36").to_json() | {
        "name": "tiny_v3", "url": srv.url + "/release/AnimeGANv3_like.onnx", "file": "AnimeGANv3_like.onnx",
        "sha256": hashlib.sha256(graph).hexdigest()}
    path = Path(os.environ["CYCLEGAN_PRETRAINED_CATALOG"])
    doc = json.loads(path.read_text())
    doc["models"].append(entry)
    path.write_text(json.dumps(doc))
    res = _runner().invoke(main, ["pretrained", "get", "tiny_v3", "--quiet"])
    assert res.exit_code == 0, res.output
    photo, out = tmp_path / "photo.png", tmp_path / "styled.png"
    Image.new("RGB", (101, 67), (200, 120, 40)).save(photo)
    res = _runner().invoke(main, ["translate", str(photo), "--model", "pretrained:tiny_v3", "--out", str(out),
                                  "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (101, 67)
    res = _runner().invoke(main, ["pretrained", "verify", "tiny_v3"])
    assert res.exit_code == 0 and res.stdout.startswith("ok   tiny_v3"), res.output


def test_get_stops_at_the_catalogs_size_and_at_its_deadline(local_catalog):
    srv = local_catalog
    srv.files["/zoo/tiny.pth"] = ZOO_FILE + b"\0" * (1 << 20)  # longer than the catalog's size_bytes
    srv.no_length.add("/zoo/tiny.pth")
    with pytest.raises(pretrained.DownloadError, match=f"longer than the expected {len(ZOO_FILE)} bytes"):
        pretrained.get("tiny", progress=False)
    assert not (cache_dir() / "pretrained" / "tiny" / "source").exists() or \
        list((cache_dir() / "pretrained" / "tiny" / "source").iterdir()) == []
    srv.files["/zoo/tiny.pth"] = ZOO_FILE
    srv.no_length.clear()
    srv.drip["/zoo/tiny.pth"] = 0.02
    start = time.monotonic()
    with pytest.raises(pretrained.DownloadError, match="allowed for"):
        pretrained.get("tiny", progress=False, deadline=Deadline(base_s=0.3, min_bytes_per_s=1e6))
    assert time.monotonic() - start < 3


def test_a_download_json_from_the_previous_version_still_verifies(local_catalog):
    pretrained.get("tiny", progress=False)
    record = cache_dir() / "pretrained" / "tiny" / "download.json"
    doc = json.loads(record.read_text())
    del doc["files"]  # what the previous version wrote: one file at the top level, no blob id
    record.write_text(json.dumps(doc))
    res = _runner().invoke(main, ["pretrained", "verify", "tiny"])
    assert res.exit_code == 0 and res.stdout.startswith("ok   tiny"), res.output
    _recatalog(None, "tiny", git_sha1="2" * 40)  # a blob id the old record lacks: the file is re-hashed
    with pytest.raises(pretrained.PretrainedError,
                       match=f"git blob SHA-1 {_blob(ZOO_FILE)}, the catalog says 2222"):
        pretrained.get("tiny", progress=False)
