"""The downloader: progress, resume after a cut connection, checksums, offline mode; against a local server."""

from __future__ import annotations

import hashlib
import socket

import pytest
from local_server import serve

from cyclegan.download import (
    ChecksumError,
    DownloadError,
    OfflineError,
    cache_dir,
    download,
    hash_prefix_from_name,
    offline_mode,
    part_path,
)

DATA = bytes(range(256)) * 40  # 10240 bytes
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
              "CYCLEGAN_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def test_downloads_checks_and_moves_into_place_with_a_progress_bar(tmp_path, capsys):
    dest = tmp_path / "sub" / "model.pth"
    with serve({"/model.pth": DATA}) as srv:
        result = download(srv.url + "/model.pth", dest, sha256=SHA, progress=True)
    assert dest.read_bytes() == DATA
    assert (result.path, result.sha256, result.bytes, result.downloaded) == (dest, SHA, len(DATA), True)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.pth"]  # no .part left
    err = capsys.readouterr().err
    assert "model.pth" in err and "10.0k" in err  # tqdm's bar, scaled to KiB


def test_no_progress_bar_when_asked(tmp_path, capsys):
    with serve({"/f": DATA}) as srv:
        download(srv.url + "/f", tmp_path / "f", progress=False)
    assert capsys.readouterr().err == ""


def test_existing_file_is_checked_not_fetched(tmp_path):
    dest = tmp_path / "f"
    dest.write_bytes(DATA)
    with serve({"/f": b"other"}) as srv:
        result = download(srv.url + "/f", dest, sha256=SHA, progress=False)
        assert srv.requests == []
    assert (result.downloaded, result.sha256) == (False, SHA)
    with pytest.raises(ChecksumError, match="delete it to download"):
        download("http://127.0.0.1:9/f", dest, sha256="0" * 64, progress=False)
    assert dest.read_bytes() == DATA  # a file that was there is never deleted


def test_cut_connection_is_resumed_with_a_range_request(tmp_path):
    dest = tmp_path / "f.bin"
    with serve({"/f.bin": DATA}) as srv:
        srv.cut("/f.bin", after=3000)
        result = download(srv.url + "/f.bin", dest, sha256=SHA, progress=False)
        assert srv.requests == [("/f.bin", None), ("/f.bin", "bytes=3000-")]
    assert dest.read_bytes() == DATA and result.sha256 == SHA


def test_cut_connection_keeps_the_part_and_the_next_call_resumes(tmp_path):
    dest = tmp_path / "f.bin"
    with serve({"/f.bin": DATA}) as srv:
        srv.cut("/f.bin", after=4096)
        with pytest.raises(DownloadError) as info:
            download(srv.url + "/f.bin", dest, sha256=SHA, progress=False, retries=0)
        msg = str(info.value)
        assert "\n" not in msg and "4096 of 10240 bytes" in msg and "again to resume" in msg
        assert not dest.exists() and part_path(dest).read_bytes() == DATA[:4096]
        download(srv.url + "/f.bin", dest, sha256=SHA, progress=False)
        assert srv.requests[-1] == ("/f.bin", "bytes=4096-")
    assert dest.read_bytes() == DATA and not part_path(dest).exists()


def test_server_without_ranges_restarts_from_zero(tmp_path):
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(b"stale bytes of another file")
    with serve({"/f.bin": DATA}, ranges=False) as srv:
        download(srv.url + "/f.bin", dest, sha256=SHA, progress=False)
        assert srv.requests[0][1] == "bytes=27-"  # it asked to resume, got 200, started again
    assert dest.read_bytes() == DATA


def test_part_longer_than_the_file_starts_again(tmp_path):
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(b"x" * (len(DATA) + 5))
    with serve({"/f.bin": DATA}) as srv:
        download(srv.url + "/f.bin", dest, progress=False)
        assert [r for _, r in srv.requests] == [f"bytes={len(DATA) + 5}-", None]  # 416, then whole
    assert dest.read_bytes() == DATA


def test_checksum_mismatch_is_refused_and_nothing_is_cached(tmp_path):
    dest = tmp_path / "cache" / "f.bin"
    with serve({"/f.bin": DATA}) as srv, pytest.raises(ChecksumError) as info:
        download(srv.url + "/f.bin", dest, sha256="ab" * 32, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and SHA in msg and "nothing was saved" in msg and srv.url in msg
    assert list(dest.parent.iterdir()) == []


def test_hash_prefix_in_the_file_name(tmp_path):
    assert hash_prefix_from_name("pt_inception-2015-12-05-6726825d.pth") == "6726825d"
    assert hash_prefix_from_name("horse2zebra.pth") is None
    name = f"weights-{SHA[:8]}.pth"
    with serve({"/" + name: DATA, "/bad-0badc0de.pth": DATA}) as srv:
        download(srv.url + "/" + name, tmp_path / name, expected_prefix=hash_prefix_from_name(name), progress=False)
        with pytest.raises(ChecksumError, match="does not start with 0badc0de"):
            download(srv.url + "/bad-0badc0de.pth", tmp_path / "bad-0badc0de.pth", expected_prefix="0badc0de",
                     progress=False)
    assert (tmp_path / name).read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("var", ["CYCLEGAN_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode_refuses_clearly_without_touching_the_network(tmp_path, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    assert offline_mode()
    dest = tmp_path / "f.bin"
    with serve({"/f.bin": DATA}) as srv:
        with pytest.raises(OfflineError) as info:
            download(srv.url + "/f.bin", dest, progress=False)
        assert srv.requests == []
    msg = str(info.value)
    assert f"{var}=1" in msg and f"download {srv.url}/f.bin by hand and put it at {dest}" in msg
    assert list(tmp_path.iterdir()) == []


def test_offline_argument_overrides_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_OFFLINE", "0")
    assert not offline_mode()
    with pytest.raises(OfflineError, match="offline mode forbids"):
        download("http://127.0.0.1:9/f", tmp_path / "f", offline=True)


def test_http_errors_and_refused_connections_are_one_line(tmp_path):
    with serve({}, status={"/gone.pth": 404}) as srv, pytest.raises(DownloadError) as info:
        download(srv.url + "/gone.pth", tmp_path / "gone.pth", progress=False)
    msg = str(info.value)
    assert "HTTP 404" in msg and "by hand and put it at" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []  # no empty .part
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot connect"):
        download(f"http://127.0.0.1:{port}/f", tmp_path / "f", progress=False)


def test_server_errors_are_retried(tmp_path, monkeypatch):
    monkeypatch.setattr("cyclegan.download.time.sleep", lambda s: None)
    with serve({"/f": DATA}, status={"/f": 503}) as srv:
        with pytest.raises(DownloadError, match="HTTP 503"):
            download(srv.url + "/f", tmp_path / "f", progress=False, retries=2)
        assert len(srv.requests) == 3


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CYCLEGAN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "cyclegan"
