"""The downloader: progress, resume after a cut connection, checksums, offline mode; against a local
server."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import pytest
from local_server import serve

from cyclegan.download import (
    ChecksumError,
    Deadline,
    DownloadError,
    OfflineError,
    cache_dir,
    download,
    file_git_sha1,
    hash_prefix_from_name,
    offline_mode,
    part_path,
    validators_path,
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
        download(srv.url + "/f.bin", dest, sha256=SHA, progress=False)
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
        download(srv.url + "/" + name, tmp_path / name, expected_prefix=hash_prefix_from_name(name),
                 progress=False)
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


# ------------------------------------------------------------------ downloads you can trust


def test_resume_sends_if_range_and_restarts_when_the_file_changed(tmp_path):
    dest = tmp_path / "f.bin"
    new = bytes(reversed(DATA))
    with serve({"/f.bin": DATA}) as srv:
        srv.cut("/f.bin", after=4000)
        with pytest.raises(DownloadError, match="again to resume"):
            download(srv.url + "/f.bin", dest, progress=False, retries=0)  # no hash known
        etag = srv.etag("/f.bin")
        assert json.loads(validators_path(dest).read_text())["etag"] == etag
        srv.files["/f.bin"] = new  # the publisher replaced the file in between
        result = download(srv.url + "/f.bin", dest, progress=False)
        assert srv.requests[-1] == ("/f.bin", "bytes=4000-") and srv.if_range[-1] == etag
    # The server answered 200 with the whole new file: not 4000 old bytes + the new file's tail.
    assert dest.read_bytes() == new and result.sha256 == hashlib.sha256(new).hexdigest()
    assert not part_path(dest).exists() and not validators_path(dest).exists()


def test_resume_of_an_unchanged_file_uses_the_last_modified_date_when_the_etag_is_weak(tmp_path):
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(DATA[:100])
    validators_path(dest).write_text(json.dumps({"url": "x", "etag": 'W/"weak"'}))  # another URL's: ignored
    with serve({"/f.bin": DATA}) as srv:
        validators_path(dest).write_text(json.dumps(
            {"url": srv.url + "/f.bin", "etag": 'W/"weak"',
             "last_modified": "Mon, 07 Dec 2026 00:00:00 GMT"}))
        download(srv.url + "/f.bin", dest, progress=False)
        assert srv.requests == [("/f.bin", "bytes=100-")]
        assert srv.if_range == ["Mon, 07 Dec 2026 00:00:00 GMT"]
    assert dest.read_bytes() == DATA


@pytest.mark.parametrize("sidecar", ["[1, 2]", '{"url": 5, "etag": 7}', "not json"])
def test_a_part_with_no_usable_validator_and_no_hash_starts_again(tmp_path, sidecar):
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(b"stale bytes of another file")
    validators_path(dest).write_text(sidecar)
    with serve({"/f.bin": DATA}) as srv:
        download(srv.url + "/f.bin", dest, progress=False)
        assert srv.requests == [("/f.bin", None)]  # nothing to prove the .part is this file's
    assert dest.read_bytes() == DATA


def test_a_body_without_length_needs_a_hash(tmp_path):
    dest = tmp_path / "f.bin"
    with serve({"/f.bin": DATA}, no_length={"/f.bin"}) as srv:
        with pytest.raises(DownloadError) as info:
            download(srv.url + "/f.bin", dest, progress=False)
        msg = str(info.value)
        assert "no length and no hash is known" in msg and "\n" not in msg
        assert list(tmp_path.iterdir()) == []
        download(srv.url + "/f.bin", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == DATA


def test_a_body_longer_than_the_expected_size_stops_at_the_size(tmp_path):
    dest = tmp_path / "f.bin"
    with serve({"/f.bin": DATA, "/g.bin": DATA}, endless={"/endless"}, no_length={"/f.bin"}) as srv:
        start = time.monotonic()
        with pytest.raises(DownloadError) as info:
            download(srv.url + "/endless", dest, size=4096, sha256=SHA, progress=False)
        assert time.monotonic() - start < 5
        assert "longer than the expected 4096 bytes" in str(info.value) and list(tmp_path.iterdir()) == []
        with pytest.raises(DownloadError, match="longer than the expected 65536 bytes"):
            download(srv.url + "/endless", dest, sha256=SHA, progress=False, max_bytes=65536)  # no size known
        with pytest.raises(DownloadError, match="longer than the expected 4096"):
            download(srv.url + "/f.bin", dest, size=4096, sha256=SHA, progress=False)  # 10240 sent, no length
        with pytest.raises(DownloadError, match="announces 10240 bytes, the expected size is 4096"):
            download(srv.url + "/g.bin", tmp_path / "g.bin", size=4096, progress=False)
        assert len(srv.requests) == 4
    assert list(tmp_path.iterdir()) == []


def test_a_dripping_server_cannot_hold_the_download_past_its_deadline(tmp_path):
    dest = tmp_path / "f.bin"
    with serve({"/f.bin": DATA[:200]}, drip={"/f.bin": 0.05}) as srv:
        start = time.monotonic()
        with pytest.raises(DownloadError) as info:
            download(srv.url + "/f.bin", dest, size=200, progress=False, timeout=5.0,
                     deadline=Deadline(base_s=0.5, min_bytes_per_s=1000.0))  # 0.7 s for 200 bytes
        took = time.monotonic() - start
    msg = str(info.value)
    assert 0.6 < took < 3.0, took  # each byte came well within the 5 s per-read timeout
    assert "more than the 0.7 s allowed for 200 bytes" in msg and "again to resume" in msg
    assert not dest.exists()


def test_deadline_scales_with_the_size():
    d = Deadline(base_s=10.0, min_bytes_per_s=1000.0)
    assert d.seconds(0) == 10.0 and d.seconds(5000) == 15.0


@pytest.mark.parametrize(("ctype", "body"), [
    ("text/html; charset=utf-8", b"\x89PNG not really"),
    ("application/octet-stream", b"\n  <!DOCTYPE html><html><body>Sign in</body></html>"),
])
def test_an_html_page_is_refused_and_never_cached(tmp_path, ctype, body):
    dest = tmp_path / "model.pth"
    with serve({"/model.pth": body}, content_type={"/model.pth": ctype}) as srv:
        for _ in range(2):  # the second call fails the same clear way: nothing was kept
            with pytest.raises(DownloadError) as info:
                download(srv.url + "/model.pth", dest, progress=False)
            msg = str(info.value)
            assert "sent an HTML page" in msg and "nothing was saved" in msg and "\n" not in msg
            assert list(tmp_path.iterdir()) == []
        assert len(srv.requests) == 2


def test_git_blob_sha1_is_checked(tmp_path):
    blob = hashlib.sha1(b"blob %d\0" % len(DATA) + DATA).hexdigest()
    (tmp_path / "x").write_bytes(DATA)
    assert file_git_sha1(tmp_path / "x") == blob
    with serve({"/f.bin": DATA}) as srv:
        result = download(srv.url + "/f.bin", tmp_path / "f.bin", git_sha1=blob, progress=False)
        assert result.git_sha1 == blob and result.sha256 == SHA
        with pytest.raises(ChecksumError) as info:
            download(srv.url + "/f.bin", tmp_path / "g.bin", git_sha1="1" * 40, progress=False)
    assert f"git blob SHA-1 {blob} is not the publisher's {'1' * 40}" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "x"]


def test_git_blob_sha1_of_a_known_empty_file(tmp_path):
    # `git hash-object /dev/null`: the id every git host gives an empty file.
    (tmp_path / "empty").write_bytes(b"")
    assert file_git_sha1(tmp_path / "empty") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
