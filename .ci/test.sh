#!/usr/bin/env bash
# Run the whole test suite headless (napari canvases need an X server: xvfb-run provides one).
# pytest's exit code 5 ("no tests collected") is a failure here, not a success.
set -uo pipefail
cd "$(dirname "$0")/.."
xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "[test] pytest collected no tests: failing." >&2
    exit 1
fi
exit "$rc"
