"""`cyclegan prep frames` on synthetic films made here with PyAV: shots of drawn scenes with hard cuts,
a fade to black, a repeated shot, letterbox bars and a burned-in caption band."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cyclegan.cli import main
from cyclegan.errors import PrepError
from cyclegan.prep.frames import (
    CSV_COLUMNS,
    BarTracker,
    FramePicker,
    FramesSettings,
    HashSet,
    ShotSampler,
    extract_frames,
    parse_per_shot,
    timecode,
)

av = pytest.importorskip("av")
pytest.importorskip("scenedetect")
pytest.importorskip("imagehash")

W, H, BAR = 192, 144, 18  # letterboxed: the picture is 192 x 108 between two 18-pixel black bars
FPS = 10
CAPTION_ROWS = 10  # white "subtitle" blocks in the picture's bottom 10 rows (9%)
# (scene, seconds): A comes back after D (a repeated shot); C fades to black; E is long and moves.
TIMELINE = [("A", 2.0), ("B", 2.0), ("C", 1.5), ("fade", 1.5), ("black", 0.5), ("D", 2.0), ("A", 2.0),
            ("E", 5.0)]


def _scene(seed: int) -> np.ndarray:
    """A busy drawing (many edges) in colours between 30 and 200: never black, white or flat."""
    rng = np.random.default_rng(seed)
    h = H - 2 * BAR
    img = np.empty((h, W + 40, 3), np.uint8)  # wider than the frame: E pans across it
    img[:] = rng.integers(60, 180, 3)
    for _ in range(40):
        x0, y0 = rng.integers(0, W + 20), rng.integers(0, h - 8)
        img[y0 : y0 + rng.integers(6, 30), x0 : x0 + rng.integers(6, 40)] = rng.integers(30, 200, 3)
    return img


def _frame(picture: np.ndarray, k: int) -> np.ndarray:
    pic = picture.copy()
    for i in range(8):  # the caption: white blocks that change a little from frame to frame
        x = 40 + i * 14 + (k % 3)
        pic[-CAPTION_ROWS:-3, x : x + 9] = 255
    full = np.zeros((H, W, 3), np.uint8)
    full[BAR : H - BAR] = pic
    return full


def _film() -> tuple[list[np.ndarray], list[tuple[str, float, float]]]:
    scenes = {name: _scene(i) for i, name in enumerate("ABCDE")}
    frames: list[np.ndarray] = []
    spans = []
    for name, seconds in TIMELINE:
        n, start = round(seconds * FPS), len(frames)
        for k in range(n):
            if name == "fade":
                frames.append((_frame(scenes["C"][:, :W], k) * (1 - (k + 1) / n)).astype(np.uint8))
            elif name == "black":
                frames.append(np.zeros((H, W, 3), np.uint8))
            elif name == "E":
                frames.append(_frame(scenes["E"][:, 2 * k // 3 : 2 * k // 3 + W], k))  # a slow pan
            else:
                frames.append(_frame(scenes[name][:, :W], k))
        spans.append((name, start / FPS, len(frames) / FPS))
    return frames, spans


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        if stream.codec_context.name == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        else:
            stream.bit_rate = 4_000_000
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


SETTINGS = FramesSettings(size=64, crop_bottom=0.12)


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    frames, spans = _film()
    folder = tmp_path_factory.mktemp("films")
    return write_video(folder / "film.mp4", frames), spans


@pytest.fixture(scope="module")
def first_run(film, tmp_path_factory):
    out = tmp_path_factory.mktemp("frames") / "style"
    lines: list[str] = []
    result = extract_frames([film[0]], out, settings=SETTINGS, echo=lines.append)
    return out, result, lines


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "frames.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _seconds(tc: str) -> float:
    h, m, s = tc.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_frames_one_or_two_per_shot_from_stable_middles(film, first_run):
    _, spans = film
    out, result, lines = first_run
    rows = _rows(out)
    per_span = [0] * len(spans)
    for row in rows:
        t = _seconds(row["timecode"])
        (i,) = [i for i, (_, a, b) in enumerate(spans) if a <= t < b]
        per_span[i] += 1
        _, a, b = spans[i]
        assert a + 0.2 * (b - a) - 0.11 <= t <= b - 0.2 * (b - a) + 0.11, f"{row['file']} is not mid-shot"
    counts = dict(zip([f"{n}{i}" for i, (n, _, _) in enumerate(spans)], per_span))
    # Short shots give one frame, the 5-second shot two; the fade and the black give none, and the
    # repeated A (index 6) is dropped as a duplicate of the first.
    assert counts == {"A0": 1, "B1": 1, "C2": 1, "fade3": 0, "black4": 0, "D5": 1, "A6": 0, "E7": 2}
    (video,) = result.videos
    assert video.status == "done" and video.kept == 6
    assert video.dropped["duplicate"] >= 1
    assert lines == [video.line()] and "kept 6 frames" in lines[0]


def test_frames_are_cropped_resized_and_described(first_run):
    out, result, _ = first_run
    rows = _rows(out)
    assert list(rows[0]) == list(CSV_COLUMNS)
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == sorted(r["file"] for r in rows) and len(files) == result.total == 6
    for row in rows:
        assert row["file"] == f"film_{row['timecode'].replace(':', '-').replace('.', '-')}.png"
        assert row["source"].endswith("film.mp4") and len(row["phash"]) == 16 and row["why"]
        img = np.asarray(Image.open(out / row["file"]).convert("L"), dtype=np.float32)
        h, w = img.shape
        assert h == 64  # --size: the shorter side
        # Bars (18 px of 144) and the bottom 12% of the picture are gone: 192 x ~93 -> about 132 x 64.
        assert 125 <= w <= 140
        assert img[0].mean() > 40 and img[-1].mean() > 40  # no black bar rows left
        assert img.max() < 235  # the white caption band is cropped away
    sheet = out.with_name(out.name + "_contact.png")
    assert result.preview == sheet and Image.open(sheet).size[0] > 160
    assert not list(out.glob("*contact*")) and not list(out.glob(".*tmp*"))


def test_second_run_skips_what_exists_and_a_broken_video_is_one_line(film, first_run, tmp_path):
    out, _, _ = first_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    copy = write_video(tmp_path / "recap.mp4", _film()[0][:40])  # shots A and B again, as a recap would
    r = CliRunner().invoke(main, ["prep", "frames", str(film[0]), str(broken), str(copy), "--out", str(out),
                                  "--size", "64", "--crop-bottom", "0.12", "--quiet"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert any("film.mp4: skipped (done by an earlier run)" in line for line in lines)
    assert sum("broken.mp4: cannot read" in line for line in lines) == 1
    assert "Traceback" not in r.output
    # Every frame of the recap is a duplicate of one already kept: nothing new is written.
    assert any("recap.mp4: 2 shots, kept 0 frames; dropped: 2 duplicate" in line for line in lines), r.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".png"} == {
        k: v for k, v in before.items() if k.endswith(".png")}
    manifest = json.loads((out / "frames.json").read_text())
    assert len(manifest["videos"]) == 2 and not any("broken" in k for k in manifest["videos"])


def test_other_settings_on_the_same_folder_are_refused(film, first_run):
    out, _, _ = first_run
    with pytest.raises(PrepError, match="was made with size 64"):
        extract_frames([film[0]], out, settings=FramesSettings(size=96, crop_bottom=0.12))


def test_max_frames_caps_the_set(film, tmp_path):
    result = extract_frames([film[0]], tmp_path / "capped", settings=SETTINGS, max_frames=2)
    assert result.total == 2 and len(list((tmp_path / "capped").glob("*.png"))) == 2
    assert result.videos[0].status == "capped"


def test_bar_tracker_takes_the_most_common_bars():
    def frame(top, bottom, left, right, *, subtitle=False, dark=False):
        g = np.zeros((100, 160), np.uint8)
        g[top : 100 - bottom, left : 160 - right] = 10 if dark else 120
        if subtitle:  # bright text inside the bottom bar
            g[92:96, 60:100] = 255
        return g

    bars = BarTracker()
    for _ in range(5):
        bars.add(frame(12, 12, 20, 20))  # letterbox and pillarbox
    bars.add(frame(12, 12, 20, 20, subtitle=True))
    bars.add(frame(12, 12, 20, 20, subtitle=True))
    bars.add(frame(30, 12, 20, 20))  # a dark sky at the top looks like a wider bar
    bars.add(frame(12, 12, 20, 20, dark=True))  # a frame dark all over says nothing
    # One detection pixel more at each barred side; scaled to a 2x frame.
    assert bars.crop_box((100, 160), (200, 320)) == (42, 26, 278, 174)
    assert BarTracker().crop_box((100, 160), (100, 160)) == (0, 0, 160, 100)


def test_settings_and_names():
    assert parse_per_shot("2") == (2, 2) and parse_per_shot("1-3") == (1, 3)
    with pytest.raises(PrepError, match="--per-shot"):
        parse_per_shot("x")
    with pytest.raises(PrepError, match="--per-shot"):
        FramesSettings(per_shot=(2, 1)).check()
    with pytest.raises(PrepError, match="--crop-bottom"):
        FramesSettings(crop_bottom=0.6).check()
    assert timecode(3725.5) == "01:02:05.500"


def test_no_videos_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["prep", "frames", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and r.output.startswith("error: no videos given")
    assert not (tmp_path / "o").exists()


def test_fading_frames_are_flagged_and_never_kept(tmp_path):
    settings = FramesSettings(size=32)
    picture = _frame(_scene(3)[:, :W], 0)
    # 1 s steady, then 2 s fading from full brightness to 30%: never black, so only the fade test can refuse
    # it
    frames = [picture] * 10 + [(picture * (1 - 0.7 * (k + 1) / 20)).astype(np.uint8) for k in range(20)]
    sampler = ShotSampler(fps=10, settings=settings)
    for i, f in enumerate(frames):
        sampler.add(i, i / 10, f, f)
    start, end, candidates = sampler.close(3.0, 30)
    assert (start, end) == (0.0, 3.0) and len(candidates) > 8
    assert not any(c.fade for c in candidates if 0.3 <= c.seconds < 1.0)
    assert all(c.fade for c in candidates if c.seconds >= 1.3)
    picker = FramePicker(out_dir=tmp_path, stem="f", source="f.mp4", settings=settings, hashes=HashSet(),
                         existing=set())
    picker.finish_shot(1.0, 3.0, [c for c in candidates if c.seconds >= 1.0], sampler.bars, sampler.det_shape,
                       budget=10)
    assert picker.kept == [] and picker.dropped == {"fade": 1} and not list(tmp_path.iterdir())
    picker.finish_shot(0.0, 1.0, [c for c in candidates if c.seconds < 1.0], sampler.bars, sampler.det_shape,
                       budget=10)
    assert len(picker.kept) == 1 and picker.kept[0].why.startswith("steadiest")


def test_when_every_video_fails_it_is_an_error_and_the_folder_stays_usable(film, tmp_path):
    broken = tmp_path / "broken.mkv"
    broken.write_bytes(b"\x1a\x45\xdf\xa3 not really matroska")
    out = tmp_path / "frames"
    r = CliRunner().invoke(main, ["prep", "frames", str(broken), "--out", str(out), "--quiet", "--size", "64",
                                  "--crop-bottom", "0.12"])
    assert r.exit_code != 0 and "broken.mkv: cannot read" in r.output
    assert r.output.strip().splitlines()[-1] == "error: none of the 1 video(s) could be read"
    assert not list(out.glob("*.png"))
    result = extract_frames([film[0]], out, settings=SETTINGS)  # the same folder takes the next run
    assert result.total == 6


def _ts_segment(path: Path, width: int, height: int, seconds: float, seed: int) -> bytes:
    """An MPEG-TS segment of busy frames at one size; segments joined byte by byte still play."""
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 200, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(round(seconds * FPS)):
            frame = np.roll(base, k, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


def test_a_video_whose_frame_size_changes_fails_alone_and_the_batch_goes_on(film, tmp_path):
    joined = tmp_path / "joined.ts"
    joined.write_bytes(_ts_segment(tmp_path / "a.ts", 64, 48, 2.0, 1) + _ts_segment(tmp_path / "b.ts", 128,
                                                                                    96, 2.0, 2))
    out = tmp_path / "frames"
    r = CliRunner().invoke(main, ["prep", "frames", str(joined), str(film[0]), "--out", str(out), "--quiet",
                                  "--size", "64", "--crop-bottom", "0.12"])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    failed = [line for line in r.output.splitlines() if "joined.ts" in line]
    assert len(failed) == 1 and "frame size changes from 64x48 to 128x96" in failed[0], r.output
    assert not list(out.glob("joined_*"))  # what it wrote before the change is taken back
    manifest = json.loads((out / "frames.json").read_text())
    assert list(manifest["videos"]) == [str(film[0].resolve())]  # the other video was done


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("frames.json", "[1, 2]", "expected a JSON object, found a list"),
    ("frames.json", '{"settings": {}, "videos": []}', "field 'videos' must be an object"),
    ("frames.json", '{"settings": {}, "videos": {"x.mp4": 3}}', "video x.mp4: expected a JSON object"),
    ("frames.csv", "file,source,timecode,shot,shot_start,shot_end,phash,edges,why\na.png,x,0,1,0,1,zz,1,y\n",
     "line 2 is not a row"),
    ("frames.csv", "file,source,timecode,shot,shot_start,shot_end,phash,edges,why\na.png,x\n",
     "line 2 is not a row"),
])
def test_a_damaged_frames_manifest_or_csv_is_one_line(film, tmp_path, name, content, reason):
    out = tmp_path / "frames"
    extract_frames([film[0]], out, settings=SETTINGS, max_frames=1)
    (out / name).write_text(content)
    r = CliRunner().invoke(main,
                           ["prep", "frames", str(film[0]), "--out", str(out), "--quiet", "--size", "64",
                                  "--crop-bottom", "0.12"])
    assert r.exit_code == 1 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert name in r.output and reason in r.output
