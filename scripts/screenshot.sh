#!/usr/bin/env bash
# docs/screenshot.png: real QGIS under Xvfb, MMCANet dock open, a real scene restored (scripts/screenshot.py).
# Needs the Debian packages qgis + xvfb + xauth, the .venv (torch), ../shared/data/sen12mscr-georef and a
# model (the bundled resources/mmcanet_default.safetensors, or MMCANET_MODEL=path).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
SITE="$(ls -d "$ROOT"/.venv/lib/python3*/site-packages | head -1)"
PROFILE="$(mktemp -d)"  # scratch QGIS profile: no first-run state, the user's settings untouched
trap 'rm -rf "$PROFILE"' EXIT

export MMCANET_ROOT="$ROOT"
export QGIS_CUSTOM_CONFIG_PATH="$PROFILE"
export PYTHONPATH="$ROOT:$ROOT/core:$SITE${PYTHONPATH:+:$PYTHONPATH}"
unset QT_QPA_PLATFORM  # a real X display (Xvfb), not the offscreen platform the tests use
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$PROFILE/runtime}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

xvfb-run -a -s "-screen 0 1600x1000x24" \
  /usr/bin/qgis.bin --nologo --noversioncheck --noplugins --code "$ROOT/scripts/screenshot.py"
