"""The headless core must never pull in Qt or napari."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

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
