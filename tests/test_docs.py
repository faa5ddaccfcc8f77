"""The documentation cannot go stale: the site builds strictly, the documented API has docstrings, and
the code blocks of README.md and docs/ run (or, where marked, at least parse and name real commands).

Every fenced block names its language. ``bash`` and ``python`` blocks run top to bottom, one temporary
folder per page, which starts with the small images ``_example_folder`` draws (``photos/``,
``cartoons/``, ``data/`` in the CycleGAN layout, ``photo.jpg``, ``photo.png``, ``clip.mp4``). A plain
``cyclegan ...`` line runs in this process through Click's test runner (the same argv the console
script parses; one torch import for the whole test instead of one per command); a line with a pipe
or a redirection runs through bash. A block preceded by ``<!-- docs-test: syntax-only: REASON -->``
(on the last non-blank line before the fence; network, a GPU, a data set, hours) is only checked: ``bash -n``
or ``compile``, and every
``cyclegan`` command in it must name a real subcommand, real flags and valid choices.
``<!-- docs-test: skip: REASON -->`` skips a block. docs/contributing.md says the same for writers.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import click
import griffe
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cyclegan.cli import main
from cyclegan.config import build_config, validate
from cyclegan.pretrained import list_models
from cyclegan.synthetic import make_scene, make_unpaired_dataset

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN_LANGS = {"bash", "python"}
MARK = re.compile(r"<!--\s*docs-test:\s*(syntax-only|skip):\s*\S.*-->")
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)[^`]*$")
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", "(", ")"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mode: str  # "run", "syntax-only" or "skip"

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def read_blocks(page: Path) -> list[Block]:
    """The fenced blocks of one Markdown page, with the docs-test mark on the line before each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = m.groups()
        end = i + 1
        while end < len(lines) and lines[end].strip() != ticks:
            end += 1
        assert end < len(lines), f"{page.relative_to(ROOT)}:{i + 1}: code block never closed"
        before = next((line for line in reversed(lines[:i]) if line.strip()), "")  # the mark's line
        mark = MARK.search(before)
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1:end])
        blocks.append(Block(page, i + 1, lang, code + "\n", mark.group(1) if mark else "run"))
        i = end + 1
    return blocks


ALL_BLOCKS = [b for page in PAGES for b in read_blocks(page)]


# ---------------------------------------------------------------------------- shell commands


def logical_lines(code: str) -> list[str]:
    """Shell lines with backslash continuations joined and blank or comment-only lines dropped."""
    joined = code.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def shell_words(line: str) -> list[str]:
    """Words and operators of one shell line (quotes removed, comments dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def cyclegan_commands(code: str) -> list[list[str]]:
    """The argument lists given to ``cyclegan`` (also as ``python -m cyclegan`` or ``torchrun ... -m
    cyclegan``) in a shell block, one per command."""
    found = []
    for line in logical_lines(code):
        segment: list[str] = []
        for word in [*shell_words(line), ";"]:
            if word in SHELL_OPERATORS or set(word) <= set("|&;<>()"):
                if segment:
                    if segment[0] == "cyclegan":
                        found.append(segment[1:])
                    elif "-m" in segment and segment[segment.index("-m") + 1:][:1] == ["cyclegan"]:
                        found.append(segment[segment.index("-m") + 2:])
                segment = []
                if word in {">", ">>", "<", "2>"}:
                    segment = ["<redirect target>"]
            else:
                segment.append(word)
    return found


def _options(command: click.Command) -> dict[str, click.Parameter]:
    return {opt: p for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


def check_cyclegan_args(args: list[str]) -> None:
    """Look ``args`` up in the Click commands: the subcommand path, every flag, every choice value."""
    command: click.Command = main
    path = ["cyclegan"]
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"`{' '.join(path)} {name}`: no such command"
        command = command.commands[name]
        path.append(name)
    options = _options(command)
    i = 0
    while i < len(rest):
        word = rest[i]
        i += 1
        if word == "--":
            break
        if not word.startswith("-") or word == "-" or re.fullmatch(r"-\d[\d.]*", word):
            continue
        name, eq, value = word.partition("=")
        assert name in options, f"`{' '.join(path)}` has no option {name} (options: {sorted(options)})"
        param = options[name]
        if isinstance(param, click.Option) and (param.is_flag or param.count):
            continue
        if not eq:
            assert i < len(rest), f"`{' '.join(path)} {name}` needs a value"
            value = rest[i]
            i += 1
        if isinstance(param.type, click.Choice) and param.nargs == 1:
            assert value in param.type.choices, (f"`{' '.join(path)} {name} {value}`: not one of "
                                                 f"{param.type.choices}")


def check_syntax(block: Block) -> None:
    if block.lang == "python":
        compile(block.code, block.where, "exec")
        return
    proc = subprocess.run(["bash", "-n"], input=block.code, text=True, capture_output=True, check=False)
    assert proc.returncode == 0, f"{block.where}: bash -n: {proc.stderr}"
    for args in cyclegan_commands(block.code):
        check_cyclegan_args(args)


CHECKED = [b for b in ALL_BLOCKS if b.lang in RUN_LANGS and b.mode != "skip"]


def test_every_code_block_names_its_language():
    unnamed = [b.where for b in ALL_BLOCKS if not b.lang]
    assert not unnamed, f"code blocks without a language (```bash, ```python, ```text...): {unnamed}"


def test_the_docs_have_examples_of_both_kinds():
    # A parser that silently found nothing would pass every other test here.
    assert YAML_BLOCKS
    modes = {(b.lang, b.mode) for b in CHECKED}
    assert {("bash", "run"), ("python", "run"), ("bash", "syntax-only"), ("python", "syntax-only")} <= modes


@pytest.mark.parametrize("block", CHECKED, ids=[b.where for b in CHECKED])
def test_code_block_parses_and_names_real_commands_and_flags(block):
    check_syntax(block)


def test_the_command_check_catches_a_renamed_flag_or_command_or_choice():
    check_cyclegan_args(["translate", "photo.jpg", "--checkpoint", "runs/x", "--out=out/", "--precision",
                         "fp32"])
    with pytest.raises(AssertionError, match="no option --chekpoint"):
        check_cyclegan_args(["translate", "photo.jpg", "--chekpoint", "runs/x"])
    with pytest.raises(AssertionError, match="no such command"):
        check_cyclegan_args(["pretrained", "fetch", "style_monet"])
    with pytest.raises(AssertionError, match="not one of"):
        check_cyclegan_args(["train", "--generator", "resnet_9blocks"])
    assert cyclegan_commands("cat a.png | cyclegan translate --checkpoint r - > b.png\n") == [
        ["translate", "--checkpoint", "r", "-"]
    ]
    assert cyclegan_commands("torchrun --nproc-per-node 2 -m cyclegan train --out r  # note\n") == [
        ["train", "--out", "r"]
    ]


YAML_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "yaml" and b.mode != "skip"]


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[b.where for b in YAML_BLOCKS])
def test_yaml_block_is_a_valid_config_file(block, tmp_path):
    # A `yaml` block in the docs is a --config file: a renamed key or a removed value fails here.
    path = tmp_path / "config.yaml"
    path.write_text(block.code, encoding="utf-8")
    validate(build_config(config_file=path))


# ---------------------------------------------------------------------------- executed examples


def _example_folder(folder: Path) -> None:
    """What every page's examples start from: small images of two unpaired domains, drawn here."""
    data = make_unpaired_dataset(folder / "data", n_train=4, n_test=2, size=40, seed=0)
    shutil.copytree(data / "trainA", folder / "photos")
    shutil.copytree(data / "trainB", folder / "cartoons")
    rng = np.random.default_rng(0)
    photo = Image.fromarray(make_scene(rng, 48, "photo")).crop((0, 0, 48, 36))  # not square on purpose
    photo.save(folder / "photo.jpg", quality=92)
    photo.save(folder / "photo.png")
    scene = make_scene(np.random.default_rng(1), 48, "photo")[:32]
    with av.open(str(folder / "clip.mp4"), "w") as container:  # a 6-frame pan
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for i in range(6):
            frame = np.ascontiguousarray(np.roll(scene, 2 * i, axis=1))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def _run_shell_block(block: Block, folder: Path) -> None:
    runner = CliRunner()
    for line in logical_lines(block.code):
        words = shell_words(line)
        if words and words[0] == "cyclegan" and not SHELL_OPERATORS & set(words):
            result = runner.invoke(main, words[1:], catch_exceptions=True)
            detail = result.output[-2000:] if result.exception is None or isinstance(result.exception,
                                                                                     SystemExit) \
                else repr(result.exception)
            assert result.exit_code == 0, (f"{block.where}: `{line.strip()}` exited "
                                           f"{result.exit_code}:\n{detail}")
        else:
            proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", line], cwd=folder,
                                  capture_output=True, check=False)
            assert proc.returncode == 0, (
                f"{block.where}: `{line.strip()}` exited "
                f"{proc.returncode}:\n{proc.stderr.decode(errors='replace')[-2000:]}"
            )


RUN_PAGES = [p for p in PAGES if any(b.mode == "run" and b.lang in RUN_LANGS for b in read_blocks(p))]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    # One cache for every page: ONNX exports made by `--precision auto` and the like are reused.
    return tmp_path_factory.mktemp("docs-cache")


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(ROOT)) for p in RUN_PAGES])
def test_page_examples_run(page, tmp_path, monkeypatch, shared_cache):
    _example_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(shared_cache))
    monkeypatch.setenv("CYCLEGAN_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": "__docs_example__"}
    for block in read_blocks(page):
        if block.mode != "run" or block.lang not in RUN_LANGS:
            continue
        if block.lang == "python":
            exec(compile(block.code, block.where, "exec"), namespace)  # noqa: S102 - the docs' own example
        else:
            _run_shell_block(block, tmp_path)


# ---------------------------------------------------------------------------- the site


# What the API reference documents: each `::: identifier` of docs/reference/api.md.
API_PAGE = ROOT / "docs" / "reference" / "api.md"


def _documented_objects() -> list[str]:
    return re.findall(r"^::: (cyclegan[\w.]*)", API_PAGE.read_text(encoding="utf-8"), flags=re.MULTILINE)


def _missing_docstrings(obj, seen: set[str]) -> list[str]:
    """Public functions, classes and methods under ``obj`` (itself included) without a docstring."""
    if obj.path in seen:
        return []
    seen.add(obj.path)
    missing = []
    if obj.is_alias:
        obj = obj.final_target
    if (obj.is_function or obj.is_class or obj.is_module) and not obj.docstring:
        missing.append(obj.path)
    if obj.is_class or obj.is_module:
        for name, member in obj.members.items():
            if name.startswith("_"):
                continue
            # A module's public names are its __all__; without one, what it defines (not imports).
            if obj.is_module and not (name in obj.exports if obj.exports is not None
                                      else not member.is_alias):
                continue
            if not member.is_attribute:
                missing += _missing_docstrings(member, seen)
    return missing


def test_documented_api_has_docstrings():
    loader = griffe.GriffeLoader(search_paths=[str(ROOT / "src")])
    package = loader.load("cyclegan")
    loader.resolve_aliases(external=False)
    objects = _documented_objects()
    assert len(objects) >= 10, objects
    missing: list[str] = []
    seen: set[str] = set()
    for path in objects:
        missing += _missing_docstrings(package[path.removeprefix("cyclegan.")], seen)
    assert not missing, f"documented in docs/reference/api.md but without a docstring: {missing}"


def test_mkdocs_build_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings
                                                                               or [proc.stderr[-3000:]])
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


def _anchors(markdown: str) -> set[str]:
    """Heading ids as Python-Markdown's toc makes them (GitHub makes the same for these headings)."""
    ids = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE):
        text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
        ids.add(re.sub(r"[-\s]+", "-", text))
    return ids


def test_readme_links_point_at_existing_files_and_headings():
    # README is not part of the site, so the strict build does not check its links.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        assert target.exists(), f"README.md links to {link}, which does not exist"
        if anchor:
            assert anchor in _anchors(target.read_text(
                encoding="utf-8")), f"README.md links to {link}: no such heading"


def test_every_pretrained_model_is_on_the_pretrained_page_with_its_terms():
    # A catalog entry added without its row (or whose terms changed) fails here, not in a user's hands.
    page = re.sub(r"<!--.*?-->", "", (ROOT / "docs" / "pretrained.md").read_text(encoding="utf-8"),
                  flags=re.DOTALL)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([\w.-]+)` \|.*$", page, flags=re.MULTILINE)}
    models = list_models()
    assert models
    for entry in models:
        assert entry.name in rows, f"pretrained model {entry.name!r} has no row in docs/pretrained.md"
        marked = "**non-commercial**" in rows[entry.name]
        assert marked == entry.non_commercial, (f"docs/pretrained.md: the terms of {entry.name!r} are not "
                                                "the catalog's")


def test_pretrained_models_named_in_commands_exist():
    # `pretrained get NAME` and `pretrained:NAME` in any example must name a catalog entry.
    names = {entry.name for entry in list_models()}
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for name in re.findall(r"pretrained(?: get |:)([\w.-]+)", text):
            if name != "NAME":
                assert name in names, (f"{page.relative_to(ROOT)} names pretrained model {name!r}, not in "
                                       "the catalog")
