"""Shared fixtures. Each test module builds its own small volumes in ``tmp_path``."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
