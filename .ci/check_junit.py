"""Read pytest's junit XML: count tests, and fail on any skip whose reason is not an allowed one.

A skipped test is a test that did not run. The only allowed reason is missing optional real data
(``../shared/data`` absent on a user's machine); anything else (a missing dependency, a missing
executable, a feature "not there yet") must fail the build instead of hiding as a skip.

  python .ci/check_junit.py .ci-out/junit.xml
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET

ALLOWED_SKIP_REASONS: dict[str, re.Pattern[str]] = {
    "optional real data absent": re.compile(r"\.\./shared/data"),
    # opt-in cloud detectors (docs/DETECTORS.md): ~230 MB / ~75 MB, deliberately not in `make setup`
    "optional cloud-detector package absent": re.compile(r"^optional package (ukis-csmask|s2cloudless) not installed"),
}
"""Name -> pattern the skip message must match. Add a reason here only with the reviewers' agreement."""


def main(path: str) -> int:
    """Print the counts; return 1 when no test ran or a test skipped for a reason not allowed."""
    root = ET.parse(path).getroot()
    cases = list(root.iter("testcase"))
    if not cases:
        print("CI: no tests ran")
        return 1
    failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skips = [(c, c.find("skipped")) for c in cases]
    skips = [(c, s) for c, s in skips if s is not None]
    bad = []
    for case, skip in skips:
        message = (skip.get("message") or "") + " " + (skip.text or "")
        reason = next((name for name, pat in ALLOWED_SKIP_REASONS.items() if pat.search(message)), None)
        label = f"{case.get('classname')}::{case.get('name')}: {message.strip()[:200]}"
        print(f"CI: skipped ({reason or 'NOT ALLOWED'}) {label}")
        if reason is None:
            bad.append(label)
    print(f"CI: {len(cases)} tests, {len(failed)} failed, {len(skips)} skipped ({len(bad)} for a reason not allowed)")
    if failed:
        return 1
    if bad:
        print("CI: a test skipped for a reason other than missing optional data; make it pass or fail instead")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".ci-out/junit.xml"))
