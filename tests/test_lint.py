"""The code passes the linter pinned in the test extras, with pyproject.toml's [tool.ruff] rules
(pyflakes, syntax, bugbear, pyupgrade, import order): a lint slip fails the suite, not a review."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing_in_the_collector_its_tests_and_benchmarks() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "collector", "tests", "bench"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
