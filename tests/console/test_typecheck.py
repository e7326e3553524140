"""mypy on the console package too (it is a web adapter, but its guards deserve types)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_console_type_checks() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "console"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
