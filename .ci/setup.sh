#!/usr/bin/env bash
# Set up LunaSeg on a fresh Debian/Ubuntu machine: the Debian packages headless Qt/OpenGL needs
# (only when missing), a virtual environment in .venv, PyTorch (pinned, first) and the package
# with its dev extras (editable).
#
# A second run only checks: after a successful install, .venv/lunaseg-setup.stamp records what
# was installed (the SHA-256 of pyproject.toml, the PyTorch pin, Python's version and this
# checkout's path). pip runs again only when one of them differs (or the stamp is deleted).
# pip and apt-get write to a log file; the terminal gets a few progress lines, the warnings that
# matter, and on failure the log's last lines and its path.
#
# A .venv that is a symbolic link belongs to another checkout (worktrees sharing one
# environment): it is checked, never installed into from here.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_SPEC="torch==2.13.0"
STAMP=.venv/lunaseg-setup.stamp
PY=${PYTHON:-python3}
DEBS=(xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
      libxcb-xinerama0 libxcb-shape0 libxcb-randr0 libxcb-render-util0 libxcb-image0
      libdbus-1-3 libfontconfig1)
# pip lines that say nothing about this project (the machine's index configuration, root user).
PIP_NOISE="is ignored: it is neither a file nor a directory|Running pip as the 'root' user|new release of pip"
# Build-backend warnings printed for every editable install, whatever the project.
BACKEND_NOISE="Warning: Editable installation"

LOG=$(mktemp "${TMPDIR:-/tmp}/lunaseg-setup.XXXXXX.log")
keep_log=0
step="starting"
say() { echo "[setup] $*"; }
finish() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -s "$LOG" ]; then
        say "FAILED while $step (exit $rc). Last lines of the log:" >&2
        tail -n 25 "$LOG" | sed 's/^/    /' >&2
        say "full log: $LOG" >&2
    elif [ "$rc" -ne 0 ]; then
        say "FAILED while $step (exit $rc)." >&2
        rm -f "$LOG"
    elif [ "$keep_log" -eq 1 ]; then
        say "full log: $LOG"
    else
        rm -f "$LOG"
    fi
}
trap finish EXIT

# -- Debian packages (only the missing ones) ---------------------------------------------------
missing=()
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${DEBS[@]}" 2>/dev/null || true)
for pkg in "${DEBS[@]}"; do
    grep -q "^$pkg install ok installed$" <<<"$installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    step="installing Debian packages"
    say "installing ${#missing[@]} Debian package(s): ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq >>"$LOG" 2>&1
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" \
        >>"$LOG" 2>&1
fi

# -- what this checkout needs, as the stamp records it -----------------------------------------
wanted_stamp() {
    echo "pyproject_sha256=$(sha256sum pyproject.toml | cut -d' ' -f1)"
    echo "torch=$TORCH_SPEC"
    echo "python=$(.venv/bin/python -c 'import platform; print(platform.python_version())')"
    echo "checkout=$(pwd -P)"
}
stamp_value() { sed -n "s/^$1=//p" "$2" 2>/dev/null || true; }

# Every package pyproject.toml declares (dependencies and the dev extras) must be installed:
# checked from package metadata, without importing anything heavy. -I: the checkout's own
# napari_lunaseg.egg-info must not stand in for the installed package.
report_ready() {
    .venv/bin/python -I - "$@" <<'EOF'
import re
import sys
from importlib.metadata import PackageNotFoundError, version

names = ["torch", "napari", "napari-lunaseg"]
try:
    import tomllib  # Python 3.11+; on 3.10 only the three above are checked

    with open("pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    extras = project.get("optional-dependencies", {})
    wanted = list(project.get("dependencies", []))
    for extra in ("dev", "test"):
        wanted += extras.get(extra, [])
    names += [re.match(r"[A-Za-z0-9._-]+", req)[0] for req in wanted]
except ModuleNotFoundError:
    pass
missing = []
for name in dict.fromkeys(names):
    try:
        version(name)
    except PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"[setup] .venv lacks {', '.join(missing)}.")
shown = ", ".join(f"{n} {version(n)}" for n in ("torch", "napari", "napari-lunaseg"))
print("[setup] ready:", shown, *sys.argv[1:])
EOF
}

# -- a shared environment (symbolic link): check only ----------------------------------------
if [ -L .venv ]; then
    step="checking the shared .venv"
    owner=$(dirname "$(readlink -f .venv)")
    if [ ! -x .venv/bin/python ]; then
        say ".venv links to $owner/.venv, which has no Python; run .ci/setup.sh in $owner," \
            "or replace the link by an own environment (rm .venv; bash .ci/setup.sh)." >&2
        exit 1
    fi
    recorded=$(stamp_value pyproject_sha256 "$STAMP")
    ours=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ -z "$recorded" ]; then
        say ".venv is shared from $owner (a link) and has no setup record; not installing into" \
            "another checkout's environment from here."
    elif [ "$recorded" != "$ours" ]; then
        say "WARNING: .venv is shared from $owner (a link) and was installed for another" \
            "pyproject.toml than this checkout's; not installing into it from here. Run" \
            ".ci/setup.sh in $owner, or use an own environment (rm .venv; bash .ci/setup.sh)." >&2
    fi
    report_ready "(shared from $owner)"
    exit 0
fi

# -- an own environment: install only when the stamp differs -----------------------------------
if [ ! -x .venv/bin/python ]; then
    step="creating .venv"
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        say "no usable Python: '$PY' is missing or older than 3.10. Install Python 3.10 or" \
            "newer, or name one: PYTHON=/path/to/python3 bash .ci/setup.sh" >&2
        exit 1
    fi
    say "creating .venv with $("$PY" --version 2>&1)"
    "$PY" -m venv .venv >>"$LOG" 2>&1
fi
step="checking .venv"
# Unchanged and complete: nothing to do. (A package removed by hand since is reinstalled.)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(wanted_stamp)" ] \
    && report_ready "(unchanged since the last install: nothing to do)"; then
    exit 0
fi

# pip's own output goes to the log; what matters is shown after each step.
pip_install() {
    local what=$1
    shift
    local start
    start=$(wc -l <"$LOG")
    step="installing $what"
    say "$step"
    PIP_ROOT_USER_ACTION=ignore .venv/bin/python -m pip install --no-input --progress-bar off \
        "$@" >>"$LOG" 2>&1
    local notes
    notes=$(tail -n +"$((start + 1))" "$LOG" | grep -E '^(ERROR|WARNING):' \
        | grep -Ev "$PIP_NOISE" | sort -u || true)
    if [ -n "$notes" ]; then
        sed 's/^/[setup]   pip /' <<<"$notes"
        keep_log=1
    fi
    # Python warnings of the build backend (e.g. deprecated pyproject.toml fields): headlines once.
    local backend
    backend=$(tail -n +"$((start + 1))" "$LOG" | grep -oE '[A-Za-z]+Warning: .{0,90}' \
        | grep -Ev "$BACKEND_NOISE" | sort -u || true)
    if [ -n "$backend" ]; then
        sed 's/^/[setup]   build backend: /' <<<"$backend"
        keep_log=1
    fi
}

rm -f "$STAMP"  # an interrupted install must not look complete
pip_install "pip (upgrade)" --upgrade pip
# PyTorch first and pinned: on a CPU box this is the CPU build; an installed one is kept.
has_torch='import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'
if .venv/bin/python -c "$has_torch"; then
    say "keeping the installed PyTorch" \
        "$(.venv/bin/python -c 'from importlib.metadata import version; print(version("torch"))')"
else
    pip_install "$TORCH_SPEC" "$TORCH_SPEC"
fi
pip_install "napari-lunaseg[dev] (editable)" -e ".[dev]"
wanted_stamp >"$STAMP.tmp"
mv "$STAMP.tmp" "$STAMP"
report_ready
