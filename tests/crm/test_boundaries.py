"""The crm package imports only ``models``, ``config``, the standard library and its own
third-party dependencies (never ``bot``, ``community`` or ``knowledge_base``)."""

from __future__ import annotations

import ast
from pathlib import Path

import crm

FORBIDDEN = ("bot", "community", "knowledge_base", "console")


def test_crm_imports_only_models_and_config() -> None:
    root = Path(crm.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert bad == []
