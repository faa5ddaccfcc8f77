"""cyclegan.torchfile: torch.load of files from anyone (pickled code, zip bombs, junk) and cyclegan.jsonfile:
JSON read back checked by type."""

from __future__ import annotations

import ast
import os
import zipfile
from pathlib import Path

import pytest
import torch

from cyclegan.errors import InceptionUnavailableError
from cyclegan.jsonfile import JsonFileError, check_fields, read_json_object
from cyclegan.metrics import inception as inception_mod
from cyclegan.torchfile import UnsafeFileError, check_zip_inflation, is_torch_save_file, load_weights_only

SRC = Path(__file__).resolve().parents[1] / "src" / "cyclegan"


class _SystemCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_every_torch_load_of_the_project_goes_through_load_weights_only():
    calls = [f"{p.relative_to(SRC)}:{node.lineno}" for p in SRC.rglob("*.py") if p.name != "torchfile.py"
             for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
             if isinstance(node, ast.Attribute) and node.attr == "load"
             and isinstance(node.value, ast.Name) and node.value.id == "torch"]
    assert calls == []


def test_pickled_code_is_named_and_never_runs_nor_echoes_torchs_advice(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": _SystemCall(tmp_path / "pwned")}, path)
    for source in (path, path.read_bytes()):
        with pytest.raises(UnsafeFileError) as info:
            load_weights_only(source)
        assert info.value.holds_code and "(posix.system)" in info.value.reason
        assert "weights_only" not in info.value.reason and "arbitrary code" not in info.value.reason
    assert not (tmp_path / "pwned").exists()


def test_junk_is_unreadable_with_torchs_reason_only(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(UnsafeFileError, match=r"^not a readable PyTorch file \(Unsupported operand 110\)$"):
        load_weights_only(path)


def test_a_zip_member_inflating_past_twice_the_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", bytes(8 << 20))  # 8 MiB of zeros: a few KB deflated
    with pytest.raises(UnsafeFileError, match=r"would inflate to 8,388,608 bytes .*archive/data/0"):
        check_zip_inflation(path)
    real = tmp_path / "real.pth"
    torch.save({"w": torch.randn(1000)}, real)
    check_zip_inflation(real)
    assert torch.equal(load_weights_only(real)["w"], torch.load(real, weights_only=True)["w"])


def test_torch_save_files_are_told_from_torchscript(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "new.pth")
    torch.save({"w": torch.zeros(1)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), str(tmp_path / "ts.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert [is_torch_save_file(tmp_path / n) for n in ("new.pth", "old.pth", "ts.pt", "junk.pt", "none")] == [
        True, True, False, False, False]


def test_inception_weights_holding_code_are_refused_in_our_words(tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({"fc.weight": _SystemCall(tmp_path / "pwned")}, path)
    with pytest.raises(InceptionUnavailableError) as info:
        inception_mod.InceptionFeatureExtractor(path)
    assert "holds pickled code or objects (posix.system)" in str(info.value)
    assert "weights_only" not in str(info.value) and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "expected a JSON object, found a list"),
    ('{"a": 1}', "field 'b' is missing"),
    ('{"a": true, "b": "x"}', "field 'a' must be an integer, found a boolean"),
    ('{"a": 1, "b": 2}', "field 'b' must be a string, found an integer"),
    ('{"a": 1, "b": "x", "c": null}', "field 'c' must be a number, found null"),
    ("{nope", "not valid JSON"),
    ("[" * 100_000, "not valid JSON"),
    (b"\xff\xfe", "not a UTF-8 text file"),
])
def test_read_json_object_names_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "m.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(JsonFileError) as info:
        read_json_object(path, {"a": int, "b": str}, optional={"c": float})
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value) and "\n" not in str(
        info.value)


def test_check_fields_accepts_what_was_written():
    doc = {"a": 1, "b": "x", "c": 2, "d": [1]}
    assert check_fields(doc, "m.json", {"a": int, "b": str}, optional={"c": float, "d": list}) is doc
    with pytest.raises(ValueError, match="m.json: entry 3: expected a JSON object"):
        check_fields(3, "m.json", {}, what="entry 3", error=ValueError)
