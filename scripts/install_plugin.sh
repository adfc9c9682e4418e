#!/usr/bin/env bash
# Install the plugin into the current user's QGIS profile exactly as its ZIP would be installed, fill the
# plugin's private dependency folder (torch, safetensors, tqdm) with QGIS's own Python, and enable it.
# Afterwards plain `/usr/bin/qgis_process.bin run mmcanet:remove_clouds -- SAR=... OPTICAL=... OUTPUT=...`
# works with no environment variables (QT_QPA_PLATFORM=offscreen on a machine without a display).
#
# Respects QGIS_CUSTOM_CONFIG_PATH (profile root) like QGIS does. Environment knobs:
#   QGIS_PYTHON=/usr/bin/python3   QGIS's interpreter (Debian/Ubuntu: /usr/bin/python3)
#   QGIS_PROCESS=/usr/bin/qgis_process.bin
#   MMCANET_TORCH=pypi|cpu|cuda    which torch wheels (default pypi: pip's configured index, pinned by
#                                  constraints.txt like `make setup`; cpu/cuda: PyTorch's own indexes)
#   MMCANET_REINSTALL_DEPS=1       reinstall the dependencies even when they already import
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${QGIS_PYTHON:-/usr/bin/python3}"
QGIS_PROCESS="${QGIS_PROCESS:-/usr/bin/qgis_process.bin}"
PROFILE="$("$PY" mmcanet_qgis/dependencies.py profile)"
PLUGINS="$PROFILE/python/plugins"

echo "[install-plugin] QGIS profile: $PROFILE"
"$PY" scripts/package_plugin.py --out dist --unpacked "$PLUGINS"

DEPS="$("$PY" "$PLUGINS/mmcanet_qgis/dependencies.py" path)"
if [ "${MMCANET_REINSTALL_DEPS:-0}" != "1" ] && \
   PYTHONPATH="$DEPS" "$PY" -c "import torch, safetensors, tqdm" >/dev/null 2>&1; then
  echo "[install-plugin] dependencies already importable by $PY (with $DEPS)"
else
  echo "[install-plugin] installing torch, safetensors, tqdm into $DEPS"
  "$PY" "$PLUGINS/mmcanet_qgis/dependencies.py" install --torch "${MMCANET_TORCH:-pypi}" --constraint constraints.txt
fi

# qgis_process 3.22 exits 1 with "already enabled" on reruns; any other failure is real.
out="$(QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}" "$QGIS_PROCESS" plugins enable mmcanet_qgis 2>&1)" || {
  echo "$out" | grep -qi "already enabled" || { echo "$out" >&2; exit 1; }
}
QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}" "$QGIS_PROCESS" list 2>/dev/null | grep -q "mmcanet:remove_clouds" || {
  echo "[install-plugin] error: qgis_process does not list mmcanet:remove_clouds after installing" >&2
  exit 1
}
echo "[install-plugin] done: mmcanet_qgis enabled in $PROFILE; try: $QGIS_PROCESS help mmcanet:remove_clouds"
