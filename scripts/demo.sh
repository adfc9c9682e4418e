#!/usr/bin/env bash
# make demo: restore real Sentinel scenes with the bundled model through qgis_process (see scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f resources/mmcanet_default.safetensors ]; then
  echo "demo: the bundled model resources/mmcanet_default.safetensors is missing (make train-bundled rebuilds it)" >&2
  exit 1
fi
export QT_QPA_PLATFORM=offscreen
exec .venv/bin/python scripts/demo.py "$@"
