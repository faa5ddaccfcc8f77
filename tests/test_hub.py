"""Sharing on the Hugging Face Hub: `cyclegan push` with a fake upload API, and `hf:OWNER/REPO` loading
from a pre-filled local Hub cache in offline mode. Nothing reaches the network."""

from __future__ import annotations

import json
import sys
from typing import ClassVar

import pytest
import torch
from click.testing import CliRunner

from cyclegan.cli import main
from cyclegan.hub import PushError, push
from cyclegan.modelfile import load_any_generator
from cyclegan.sources import ModelSourceError, parse_hf_spec, resolve_source

huggingface_hub = pytest.importorskip("huggingface_hub")  # the `hub` extra, part of `dev`

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click 8.1; 8.2+ always separates the streams
    except TypeError:
        return CliRunner()


class FakeHfApi:
    """Records what push asks of the Hub; keeps a copy of the uploaded folder's files."""

    calls: ClassVar[list] = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, *, private=False, exist_ok=False, repo_type=None):
        FakeHfApi.calls.append(("create_repo", repo_id, private, exist_ok, self.token))

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None):
        from pathlib import Path

        root = Path(folder_path)
        files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        FakeHfApi.calls.append(("upload_folder", repo_id, files, commit_message))

        class Info:
            commit_url = f"https://hub.example/{repo_id}/commit/{COMMIT}"

        return Info()


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("CYCLEGAN_OFFLINE", "0")
    return FakeHfApi


def test_push_two_directions_with_card_and_metrics(random_run, fake_hub):
    run = random_run(0)
    (run / "eval.json").write_text(json.dumps({
        "time": "2025-01-02T03:04:05", "step": 0,
        "data": {"test_a": "d/testA", "test_b": "d/testB", "image_size": 32},
        "features": {"name": "inception-v3-fid"}, "inception_error": None,
        "a2b": {"fid": 123.456, "kid_mean": 0.0421, "cycle_l1": 0.25}, "b2a": {"fid": 98.7, "ssim": 0.5},
    }))
    result = push(run, "me/tiny-cyclegan", private=True, token="hf_secret", license="mit")
    assert result.directions == ("a2b", "b2a") and COMMIT in result.url
    (_, repo, private, exist_ok, token), (_, _, files, message) = fake_hub.calls
    assert (repo, private, exist_ok, token) == ("me/tiny-cyclegan", True, True, "hf_secret")
    assert sorted(files) == ["README.md", "a2b/config.json", "a2b/generator.safetensors", "a2b/meta.json",
                             "b2a/config.json", "b2a/generator.safetensors", "b2a/meta.json"]
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: cyclegan\nlicense: mit\n")
    assert "cyclegan translate photo.jpg --checkpoint hf:me/tiny-cyclegan --direction b2a" in card
    assert "| model | cyclegan |" in card and "| generator | resnet: ngf 8, n_blocks 2" in card
    assert "preset: `tiny`" in card and "lambda_cyc 10" in card
    assert "| a2b | 123.5 | 0.0421 | - | - | 0.25 | - | - |" in card and "| b2a | 98.7 |" in card
    assert "inception-v3-fid" in card and "a2b and b2a" in message


def test_push_card_without_eval_and_dry_run_folder_loads_back(random_run, tmp_path, fake_hub):
    out = tmp_path / "pkg"
    result = push(random_run(1), "me/x", direction="b2a", out=out, dry_run=True)
    assert result.url is None and fake_hub.calls == []  # nothing uploaded
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generator.safetensors",
                                                     "meta.json"]
    card = (out / "README.md").read_text()
    assert "No eval.json was found" in card and "license: other" in card and "gave no licence" in card
    assert load_any_generator(out, direction="b2a").info.direction == "b2a"
    with pytest.raises(PushError, match="already exists"):
        push(random_run(1), "me/x", out=out, dry_run=True)
    with pytest.raises(PushError, match="^direction 'ba': choose from a2b, b2a"):  # a parameter, not a flag
        push(random_run(1), "me/x", direction="ba", out=tmp_path / "other", dry_run=True)


def test_push_refuses_offline_and_reports_hub_errors(random_run, monkeypatch, fake_hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PushError, match="HF_HUB_OFFLINE=1 forbids uploading"):
        push(random_run(0), "me/x")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def refuse(self, *args, **kwargs):
        raise RuntimeError("401 Client Error: Unauthorized\nmore lines")

    monkeypatch.setattr(FakeHfApi, "create_repo", refuse)
    with pytest.raises(PushError) as info:
        push(random_run(0), "me/x")
    assert str(info.value) == "upload to me/x failed: RuntimeError: 401 Client Error: Unauthorized"
    with pytest.raises(ModelSourceError, match="expected hf:OWNER/REPO"):
        push(random_run(0), "not a repo")


def test_cli_push(random_run, fake_hub):
    res = _runner().invoke(main, ["push", str(random_run(0)), "me/cli", "--direction", "a2b"])
    assert res.exit_code == 0, res.output
    assert "pushed a2b to me/cli" in res.stdout and "hf:me/cli" in res.stdout
    files = fake_hub.calls[1][2]
    assert "generator.safetensors" in files and "README.md" in files  # one direction: at the top


# ------------------------------------------------------------------------------- hf: from the cache


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, random_run, fake_hub):
    """A Hub cache holding me/tiny (two directions) at COMMIT, as `hf download` leaves it; offline."""
    run = random_run(2)
    pkg = tmp_path / "pkg"
    push(run, "me/tiny", out=pkg, dry_run=True)
    repo = tmp_path / "hf" / "models--me--tiny"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.parent.mkdir(parents=True)
    pkg.rename(snapshot)  # the real cache links snapshot files to blobs/; plain files read the same
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return run, snapshot


def test_hf_source_loads_from_the_offline_cache_in_both_directions(hub_cache):
    run, snapshot = hub_cache
    assert resolve_source("hf:me/tiny") == snapshot / "a2b"
    assert resolve_source(f"hf:me/tiny@{COMMIT}", direction="b2a") == snapshot / "b2a"
    x = torch.rand(1, 3, 16, 16) * 2 - 1  # [1, 3, H, W]
    for direction in ("a2b", "b2a"):
        shared = load_any_generator(resolve_source("hf:me/tiny", direction=direction), direction=direction)
        original = load_any_generator(run, direction=direction)
        with torch.no_grad():
            assert torch.equal(shared.model(x), original.model(x))


def test_hf_source_missing_from_the_offline_cache_is_one_line(hub_cache):
    with pytest.raises(ModelSourceError) as info:
        resolve_source("hf:me/other")
    msg = str(info.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE=1 forbids downloading it" in msg
    assert "hf download me/other" in msg


def test_hf_specs_and_missing_library(monkeypatch):
    assert parse_hf_spec("hf:me/repo") == ("me/repo", None)
    assert parse_hf_spec("hf:me/repo@v1.0") == ("me/repo", "v1.0")
    for bad in ("hf:me", "hf:me/repo/extra", "hf:../x/y", "hf:me/re po"):
        with pytest.raises(ModelSourceError):
            parse_hf_spec(bad)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if the extra were not installed
    with pytest.raises(ModelSourceError, match=r"pip install 'cyclegan\[hub\]'"):
        resolve_source("hf:me/repo")


def test_cli_translate_with_an_hf_model(hub_cache, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (16, 16), (10, 200, 90)).save(photo)
    out = tmp_path / "back.png"
    res = _runner().invoke(main, ["translate", str(photo), "--checkpoint", "hf:me/tiny", "--direction", "b2a",
                                  "--out", str(out), "--device", "cpu", "--precision", "fp32", "--quiet"])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (16, 16)
