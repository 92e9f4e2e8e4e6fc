"""The headless core must never pull in Qt or napari, and its imports point down the layers
(the contracts in pyproject.toml's ``[tool.importlinter]``)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import src_train

FORBIDDEN = ("napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")


def test_src_train_imports_no_gui_modules() -> None:
    modules = [m.name for m in pkgutil.iter_modules(src_train.__path__, "src_train.")]
    assert len(modules) >= 5, modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"src_train imported GUI modules: {out.stdout.strip()}"


def test_src_train_source_has_no_gui_import_statement() -> None:
    """Not even a lazy import inside a function: GUI commands reach the CLI by entry point."""
    import re
    from pathlib import Path

    pattern = re.compile(rf"^\s*(import|from)\s+({'|'.join(FORBIDDEN)}|napari_lunaseg)\b", re.M)
    offenders = [
        f"{path.name}:{src[: m.start()].count(chr(10)) + 1}"
        for path in Path(src_train.__path__[0]).rglob("*.py")
        for src in [path.read_text(encoding="utf-8")]
        for m in pattern.finditer(src)
    ]
    assert offenders == [], f"GUI imports in src_train: {offenders}"


def test_view_command_arrives_through_the_entry_point() -> None:
    from src_train.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["view", "--seed", "3"])
    assert args.func.__module__ == "napari_lunaseg._cli" and args.seed == 3


def test_import_contracts_are_kept() -> None:
    """``lint-imports`` (import-linter, a dev extra) checks pyproject.toml's contracts: the
    layers of STYLE.md's picture and no Qt/napari/magicgui below napari_lunaseg."""
    repo = Path(__file__).resolve().parents[1]
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.is_file(), f"{lint} is missing: install the dev extras (pip install -e .[dev])"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # its banner is not ASCII
    out = subprocess.run(
        [str(lint), "--no-cache"],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        cwd=repo,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout
