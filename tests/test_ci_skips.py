"""`.ci/check_junit.py`: CI fails on a skip for any reason but missing optional real data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[1] / ".ci" / "check_junit.py"


def _junit(tmp_path: Path, *cases: str) -> Path:
    body = "".join(cases)
    path = tmp_path / "junit.xml"
    path.write_text(f'<testsuites><testsuite name="pytest" tests="{len(cases)}">{body}</testsuite></testsuites>')
    return path


def _rc(path: Path) -> tuple[int, str]:
    out = subprocess.run([sys.executable, str(CHECK), str(path)], capture_output=True, text=True, check=False)
    return out.returncode, out.stdout


PASSED = '<testcase classname="t" name="ok"/>'
DATA_SKIP = ('<testcase classname="t" name="real"><skipped type="pytest.skip" '
             'message="needs real data at /x/shared/data/y (../shared/data is absent)"/></testcase>')


@pytest.mark.parametrize("message", ["core function mmcanet.training.train is not there yet",
                                     "could not import 'skimage.metrics': No module named 'skimage'",
                                     "qgis_process.bin not found"])
def test_a_skip_for_another_reason_fails_ci(tmp_path: Path, message: str) -> None:
    bad = f'<testcase classname="t" name="hidden"><skipped type="pytest.skip" message="{message}"/></testcase>'
    rc, out = _rc(_junit(tmp_path, PASSED, DATA_SKIP, bad))
    assert rc == 1 and "NOT ALLOWED" in out and "t::hidden" in out


def test_missing_shared_data_is_the_allowed_skip(tmp_path: Path) -> None:
    rc, out = _rc(_junit(tmp_path, PASSED, DATA_SKIP))
    assert rc == 0, out
    assert "2 tests, 0 failed, 1 skipped (0 for a reason not allowed)" in out


def test_no_tests_or_a_failure_fails_ci(tmp_path: Path) -> None:
    assert _rc(_junit(tmp_path))[0] == 1
    failed = '<testcase classname="t" name="bad"><failure message="assert 0"/></testcase>'
    assert _rc(_junit(tmp_path, PASSED, failed))[0] == 1
