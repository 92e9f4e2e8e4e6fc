#!/usr/bin/env bash
# Set up LunaSeg on a fresh Debian/Ubuntu machine: the Debian packages headless Qt/OpenGL needs
# (only when missing), a virtual environment in .venv, PyTorch and the package with test extras.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
      libxcb-xinerama0 libxcb-shape0 libxcb-randr0 libxcb-render-util0 libxcb-image0
      libdbus-1-3 libfontconfig1)
missing=()
for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "[setup] installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# PyTorch first and pinned: on a CPU box this is the CPU build; on a GPU box the CUDA one.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "[setup] ready: $(.venv/bin/python -c 'import torch, napari; print("torch", torch.__version__, "napari", napari.__version__)')"
