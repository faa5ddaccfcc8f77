"""The layering of ARCHITECTURE.md, checked: import-linter contracts, no function-level imports but
optional extras, no imports of another module's private names, and every registry's names reachable
from the command line and named in the docs (docs/training-options.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
from importlinter.cli import lint_imports  # the dev extra's import-linter

import cyclegan
from cyclegan.cli import main
from cyclegan.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(cyclegan.__file__).resolve().parent

# Optional extras: imported where they are needed, so the core installs and imports without them.
OPTIONAL = {
    "av",  # video
    "cv2",  # prep / frames / temporal
    "fastapi", "uvicorn", "starlette", "multipart",  # serve
    "huggingface_hub",  # hub
    "imagehash", "scenedetect",  # frames
    "matplotlib",  # eval
    "onnx", "onnxruntime", "onnxscript", "onnx2torch",  # onnx
    "pytorch_fid", "scipy",  # eval
    "tensorboard",  # tensorboard
}
# Project modules that import an optional extra at their top (the web app needs fastapi/uvicorn):
# the server imports them when it starts, so `cyclegan --help` works without the serve extra.
OPTIONAL_PROJECT_MODULES = {"cyclegan.serve.app", "cyclegan.serve.connections"}


def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _module_level_imports(tree: ast.Module) -> set[int]:
    """ids of import nodes at module level, including those inside top-level if/try blocks
    (``if TYPE_CHECKING:``, ``try: import x except ImportError``)."""
    ids = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            ids.add(id(node))
        elif isinstance(node, (ast.If, ast.Try)):
            ids.update(id(sub) for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom)))
    return ids


def _imported_module(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module or ""]


def test_import_linter_contracts_are_kept():
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0  # its report is printed above


def test_no_function_level_imports_except_optional_extras():
    found = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = _module_level_imports(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                for name in _imported_module(node):
                    if name.split(".")[0] in OPTIONAL or name in OPTIONAL_PROJECT_MODULES:
                        continue
                    if name.startswith("torch.utils.tensorboard"):
                        continue
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "function-level imports of required modules:\n" + "\n".join(found)


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node,
                          ast.ImportFrom) and ((node.module or "").startswith("cyclegan") or node.level):
                found += [f"{path.relative_to(PACKAGE)}:{node.lineno}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "imports of private names:\n" + "\n".join(found)


def _registries() -> dict[str, Registry]:
    """Every Registry instance in the package (importing the CLI imported every module)."""
    return {reg.kind: reg for reg in Registry.instances()}


def _cli_choices() -> set[str]:
    choices: set[str] = set()

    def walk(command: click.Command) -> None:
        for param in command.params:
            if isinstance(param.type, click.Choice):
                choices.update(str(c) for c in param.type.choices)
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                walk(sub)

    walk(main)
    return choices


def test_every_registry_name_is_a_cli_choice_and_named_in_the_docs():
    # The options-by-kind page of the documentation site names every part a user can pick.
    # What a reader sees: HTML comments (notes to writers) do not count.
    page = re.sub(r"<!--.*?-->", "", (ROOT / "docs" / "training-options.md").read_text(encoding="utf-8"),
                  flags=re.DOTALL)
    choices = _cli_choices()
    registries = _registries()
    assert {"generator", "discriminator", "GAN loss", "LR policy", "model kind", "import format"} <= set(
        registries
    ), sorted(registries)
    for kind, registry in registries.items():
        for name in registry:
            assert name in choices, f"{kind} {name!r} is not offered by any CLI option"
            assert re.search(rf"`{re.escape(name)}`",
                             page), f"{kind} {name!r} is not named in docs/training-options.md"


def test_version_matches_pyproject():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'version = "{cyclegan.__version__}"' in text


def test_registry_flags_of_train_set_their_config_keys(tmp_path, monkeypatch):
    """--generator/--discriminator/--gan-loss/--lr-policy/--model are shorthands for --set of one key each."""
    from click.testing import CliRunner

    from cyclegan.errors import ConfigError

    seen = {}

    def fake_train(cfg, out, **kwargs):  # stop before any data or training work
        seen["cfg"] = cfg
        raise ConfigError("stopped by the test")

    monkeypatch.setattr("cyclegan.training.train", fake_train)
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--dataroot", str(tmp_path),
                                       "--generator", "unet_256", "--discriminator", "pixel", "--gan-loss",
                                       "hinge", "--lr-policy", "cosine", "--model", "cyclegan"])
    assert "stopped by the test" in result.output, result.output
    cfg = seen["cfg"]
    assert (cfg.model.generator.name, cfg.model.discriminator.name, cfg.loss.gan, cfg.optim.lr_policy,
            cfg.model.kind) == ("unet_256", "pixel", "hinge", "cosine", "cyclegan")
    bad = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "r2"), "--generator", "nope"])
    assert bad.exit_code == 2 and "resnet" in bad.output  # a usage error listing the registered names
