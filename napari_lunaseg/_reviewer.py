"""The reviewer's name, remembered between sessions in a small JSON file (the review panel
fills it in; every verdict records who gave it)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from qtpy.QtCore import QStandardPaths

from src_train.atomic import write_text_atomic
from src_train.errors import LunaSegError

log = logging.getLogger(__name__)

#: Where the reviewer's name is remembered (a folder); default: the user's config folder.
CONFIG_DIR_ENV = "LUNASEG_CONFIG_DIR"
CONFIG_FILE = "review.json"


def config_path() -> Path:
    """The small JSON file that remembers the reviewer's name."""
    folder = os.environ.get(CONFIG_DIR_ENV)
    if not folder:
        base = QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.GenericConfigLocation
        )
        folder = str(Path(base) / "lunaseg")
    return Path(folder) / CONFIG_FILE


def remembered_reviewer() -> str:
    """The reviewer's name saved last time ("" when none)."""
    try:
        return str(json.loads(config_path().read_text()).get("reviewer", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def remember_reviewer(name: str) -> None:
    """Save the reviewer's name for the next session (a failure is only logged)."""
    try:
        write_text_atomic(config_path(), json.dumps({"reviewer": name}), overwrite=True)
    except LunaSegError as exc:
        log.warning("cannot remember the reviewer's name: %s", exc)
