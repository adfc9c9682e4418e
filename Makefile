# Two commands for a new user: `make demo` and `make test` (both run `make setup` first).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM ?= offscreen

.PHONY: mutation setup test test-core test-qgis demo lint typecheck check install-plugin package screenshot bench train-bundled compare compare-long clean

setup:  ## install Debian QGIS/GDAL packages and the pinned .venv (idempotent, no-op when done)
	@./scripts/setup.sh

test: setup  ## the whole suite (core + QGIS via pytest-qgis), headless
	$(PY) -m pytest -q

test-core: setup
	$(PY) -m pytest -q tests/core

test-qgis: setup
	$(PY) -m pytest -q tests/qgis

demo: setup  ## restore a real cloudy scene with the bundled model through qgis_process; writes demo-output/
	./scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check core mmcanet_qgis tests bench scripts

typecheck: setup
	$(VENV)/bin/mypy

check: lint typecheck

install-plugin: setup  ## install the plugin + its dependencies into the current user's QGIS profile
	./scripts/install_plugin.sh

package: setup  ## build dist/mmcanet_qgis.zip for QGIS "Install from ZIP"
	$(PY) scripts/package_plugin.py --out dist

screenshot: setup  ## docs/screenshot*.png: the dock, before/after and an area run in a real QGIS window under Xvfb
	./scripts/screenshot.sh

bench: setup  ## model speed/compute table (bench/bench_models.py), engine and I/O benchmarks
	$(PY) bench/bench_models.py
	$(PY) bench/bench_engine.py
	$(PY) bench/bench_io.py
	$(PY) bench/bench_layout.py
	$(PY) bench/bench_simulate.py

train-bundled: setup  ## retrain the bundled model as shipped (2-core CPU: about 1 h 45 min, two stages), copy it into resources/
	$(VENV)/bin/mmcanet train --config configs/bundled.toml
	$(VENV)/bin/mmcanet train --config configs/bundled_stage2.toml
	$(PY) scripts/finalize_model.py runs/bundled-stage2/mmcanet_default.safetensors configs/bundled_stage2.toml

compare: setup  ## docs/COMPARISON.md: every variant trained on the same data and budget, scored on held-out images
	$(PY) bench/compare_models.py --config configs/compare.toml --markdown docs/COMPARISON.md

compare-long: setup  ## the 600-step table of docs/COMPARISON.md (six variants, ~45 min on 2 cores); prints it, writes runs/compare-600.md
	$(PY) bench/compare_models.py --config configs/compare_long.toml --out runs/compare-600 --markdown runs/compare-600.md \
		--only mmcanet:single,mmcanet:multistage,mmcanet:outside_in,mmcanet:thin_to_thick,mmcanet:iterative,mmcanet_optical:single

mutation: setup  ## mutation testing of the rule modules (mutmut, one module at a time; slow, not in CI): docs/TESTING.md
	nice -n 15 $(PY) scripts/mutation.py

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache demo-output
