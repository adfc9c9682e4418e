"""Mutation testing of the rule modules with mutmut, one module at a time (``make mutation``; not in CI).

For each module a scratch copy of the project is laid out under ``build/mutation/<name>/`` as mutmut
expects (``src/mmcanet``, ``tests/``, a ``pyproject.toml`` holding only this module's ``[tool.mutmut]``
section), so the repository itself is never mutated and each module runs with its own, targeted test
selection (a 2-core machine cannot afford the whole suite per mutant). The score per module is
``killed / (killed + survived)``: mutants no test reaches count as survived; timeouts count as killed.
Results go to ``build/mutation/summary.json``; docs/TESTING.md quotes them with the command.

  nice -n 15 .venv/bin/python scripts/mutation.py                 # every module below
  nice -n 15 .venv/bin/python scripts/mutation.py blending metrics  # some of them
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "mutation"

MODULES: dict[str, dict[str, list[str]]] = {
    # module (relative to core/mmcanet) -> tests that pin its rules
    "blending": {"file": ["inference/blending.py"],
                 # restore_weight / composite_tile / finish_pixels are pinned by the engine's rule tests
                 "tests": ["tests/core/inference/test_blending.py", "tests/core/inference/test_tiling.py",
                           "tests/core/inference/test_scene.py", "tests/core/test_rules_nodata.py"]},
    "alignment": {"file": ["alignment.py"],
                  "tests": ["tests/core/test_alignment_rules.py", "tests/core/test_rules_nodata.py",
                            "tests/core/inference/test_scene.py"]},
    "strips": {"file": ["inference/strips.py"], "tests": ["tests/core/test_rules_nodata.py", "tests/core/inference/test_scene.py",
                                                        "tests/core/test_sar_units.py"]},
    "modelfile": {"file": ["modelfile.py"], "tests": ["tests/core/test_modelfile.py", "tests/core/test_model_card_rules.py",
                                                    "tests/core/test_safety.py"]},
    "split": {"file": ["sen12mscr.py"], "tests": ["tests/core/test_split_table.py", "tests/core/test_datasets.py"],
              "functions": ["sen12mscr_split_of", "index_sen12mscr", "_counterpart"]},
    "metrics": {"file": ["metrics.py"], "tests": ["tests/core/test_metrics.py"]},
}


def _layout(name: str, spec: dict[str, list[str]]) -> Path:
    """Scratch copy of core/mmcanet + tests with a pyproject.toml configuring mutmut for one module."""
    work = BUILD / name
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    shutil.copytree(ROOT / "core" / "mmcanet", work / "src" / "mmcanet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "resources", work / "resources")
    files = ", ".join(f'"src/mmcanet/{f}"' for f in spec["file"])
    tests = ", ".join(f'"{t}"' for t in spec["tests"])
    (work / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = [{files}]\n"
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
        'also_copy = ["resources"]\n'  # the bundled model, which some tests load by its default path
        # the rule modules are core (no QGIS): pytest-qgis's QgsApplication teardown aborts inside mutmut's harness
        # (every mutant then reads "other", 0 % killed), so the plugin stays off
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:pytest_qgis", "-q", "-x"]\n'
        "timeout_multiplier = 5.0\n"
    )
    return work


def _results(work: Path, spec: dict[str, list[str]]) -> dict[str, int]:
    """Count mutant outcomes from mutmut's .meta files (only the listed functions, when given)."""
    counts = {"killed": 0, "survived": 0, "timeout": 0, "other": 0}
    survivors: list[str] = []
    functions = spec.get("functions")
    for meta in (work / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        for key, code in data.get("exit_code_by_key", {}).items():
            if functions and not any(f".x_{f}__mutmut_" in key for f in functions):
                continue
            if code in (1, 3):
                counts["killed"] += 1
            elif code == 0 or code in (5, 33):  # survived, or no test reaches it
                counts["survived"] += 1
                survivors.append(key)
            elif code in (36, 24, -24, 152, 255):
                counts["timeout"] += 1
            else:
                counts["other"] += 1
    tested = counts["killed"] + counts["timeout"] + counts["survived"]
    counts["score_percent"] = round(100 * (counts["killed"] + counts["timeout"]) / tested, 1) if tested else 0.0
    counts["survivors"] = sorted(survivors)  # type: ignore[assignment]
    return counts


def main() -> int:
    """Run mutmut per module; print and save the scores."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", default=list(MODULES), help=f"subset of {', '.join(MODULES)}")
    ap.add_argument("--max-children", type=int, default=1, help="mutants run in parallel (default 1: shared 2-core machine)")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts mutants/src first itself
    env.update(QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1")  # one torch thread: forked children stay safe
    summary_path = BUILD / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in args.modules:
        spec = MODULES[name]
        work = _layout(name, spec)
        cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)]
        if spec.get("functions"):
            cmd += [f"mmcanet.{Path(spec['file'][0]).with_suffix('').as_posix().replace('/', '.')}.x_{f}__mutmut_*"
                    for f in spec["functions"]]
        print(f"[mutation] {name}: {' '.join(cmd[2:])} (in {work})", flush=True)
        # one core: rank_cpus() is then 1, so GDAL compresses without worker threads and torch uses one
        # thread; mutmut forks every mutant from the process that ran the tests, and a child forked
        # after GDAL started its thread pool hangs (every mutant then reads "timeout")
        subprocess.run(cmd, cwd=work, env=env, check=False, preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
        # re-read: another run (e.g. one module per core) may have written its scores meanwhile
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        summary[name] = _results(work, spec)
        s = summary[name]
        print(f"[mutation] {name}: {s['score_percent']}% killed ({s['killed']} killed, {s['timeout']} timeout, "
              f"{s['survived']} survived, {s['other']} other)", flush=True)
        summary_path.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
