#!/usr/bin/env bash
# Create .venv and install Kizuna with its pinned dependencies. Idempotent: re-runs only when
# pyproject.toml changed. Uses Python 3.11 (python3.11, else python3 if it is 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$candidate"; return 0
    fi
  done
  echo "Kizuna needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

stamp=.venv/.kizuna-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
py=$(pick_python)
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# torch is pinned to the CPU build (an unpinned torch would pull a multi-GB CUDA build).
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
echo "$want" > "$stamp"
echo "Kizuna installed in .venv"
