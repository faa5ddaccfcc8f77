"""The pretrained catalog, `pretrained:NAME` resolution, and `pretrained get` end to end against a
local HTTP server standing in for the publishers' sites (nothing is downloaded from the internet)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cyclegan.download import cache_dir
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
