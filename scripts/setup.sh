#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: system QGIS/GDAL packages, then .venv with pinned deps.
# Re-running is a no-op once both stamps are current.
set -euo pipefail
cd "$(dirname "$0")/.."

# libgdal-dev, g++ and python3-dev: rasterio is compiled against the system GDAL (see below).
APT_PKGS="qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-pip python3-venv xvfb xauth libgdal-dev g++ python3-dev"
missing=""
for p in $APT_PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "[setup] installing Debian packages:$missing"
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# The venv must come from Debian's python (the one with the qgis bindings), never the first python3 on PATH.
PY=/usr/bin/python3
STAMP=.venv/.setup-stamp
want="$(cat constraints.txt requirements-dev.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x .venv/bin/mmcanet ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv from $PY (with system site packages for qgis/osgeo)"
  "$PY" -m venv --system-site-packages .venv
fi
echo "[setup] installing pinned Python packages into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-binary rasterio -c constraints.txt -r requirements-dev.txt
# rasterio must use the system libgdal that QGIS loads (one GDAL per process; the PyPI wheel bundles
# its own GDAL / PROJ, a known crash source inside QGIS): built from source against it (~1.5 min on an
# idle 2-core machine; 17 min on a loaded one).
# A wheel already in the venv (or one built against another GDAL) is replaced.
if ! .venv/bin/python -c 'import sys, rasterio, osgeo.gdal; from pathlib import Path
sys.exit(rasterio.__gdal_version__ != osgeo.gdal.__version__ or (Path(rasterio.__file__).parents[1] / "rasterio.libs").is_dir())' 2>/dev/null; then
  echo "[setup] building rasterio against the system GDAL $(gdal-config --version)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps --no-binary rasterio \
    "rasterio==$(sed -n 's/^rasterio==//p' constraints.txt)"
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
.venv/bin/python - <<'PY'
import numpy, torch, osgeo.gdal, qgis.core, rasterio  # noqa: F401 - import check of the whole stack
assert numpy.__version__ == "1.24.2", numpy.__version__
assert rasterio.__gdal_version__ == osgeo.gdal.__version__, (rasterio.__gdal_version__, osgeo.gdal.__version__)
print(f"[setup] ok: torch {torch.__version__}, numpy {numpy.__version__}, GDAL {osgeo.gdal.__version__}, "
      f"rasterio {rasterio.__version__} on the same GDAL")
PY
echo "$want" > "$STAMP"
