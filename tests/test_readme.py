"""The README's command-line block and the checkout's housekeeping (issue 24, item 11)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _cli_block() -> list[str]:
    """The ``lunaseg`` lines of the README's first bash block under "Command line"."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if "lunaseg " in line]


def _created_folders(lines: list[str]) -> set[str]:
    """Top-level folders the commands write: synth/synth2d targets, --out and --run-dir."""
    made = set()
    for line in lines:
        words = line.split()
        if words[1] in ("synth", "synth2d"):
            made.add(words[2])
        for flag in ("--out", "--run-dir"):
            if flag in words:
                made.add(words[words.index(flag) + 1])
    return {Path(name).parts[0] for name in made}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_folders_the_readme_creates_are_ignored_by_git() -> None:
    folders = _created_folders(_cli_block())
    assert {"lunaseg-data", "runs", "out", "out-test", "synth2d", "compare_quick"} <= folders
    inside = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
    )
    if inside.returncode != 0:
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", *(f"{f}/x" for f in folders)],
        capture_output=True,
        text=True,
    )
    ignored = {Path(line).parts[0] for line in result.stdout.split()}
    assert ignored == folders, f"not in .gitignore: {sorted(folders - ignored)}"


def test_the_readme_trains_on_the_masks_it_makes() -> None:
    """Issue 24 item 6: the block made region masks and trained on grow masks silently."""
    lines = _cli_block()
    (mask,) = [line for line in lines if line.split()[1] == "mask"]
    method = mask.split("--method ")[1].split()[0]
    for command in ("cache", "train"):
        (line,) = [line for line in lines if line.split()[1] == command]
        assert f"--mask-method {method}" in line, line


def test_tests_read_shared_data_relative_to_the_checkout() -> None:
    absolute = re.compile(r"""Path\(\s*["']/work/""")
    offenders = [
        path.name
        for path in sorted((REPO / "tests").glob("*.py"))
        if absolute.search(path.read_text(encoding="utf-8"))
    ]
    assert not offenders
