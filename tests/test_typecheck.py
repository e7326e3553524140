"""mypy on the core packages and the services around them (STYLE.md: ruff and mypy, run by
the tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ["bot/core", "bot/handoff", "models", "config", "community", "crm", "console"]


def test_core_packages_type_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *CORE], cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
