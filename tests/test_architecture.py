"""Import rules from STYLE.md: heavy dependencies in one place each, and the layer order."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["bot", "knowledge_base", "community", "models", "config", "crm", "console"]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def sources() -> list[Path]:
    return [p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py")]


def test_heavy_dependencies_are_imported_in_one_place():
    owners = {
        "aiogram": ("bot/telegram/",),
        "sentence_transformers": ("knowledge_base/embedder.py",),
        "faiss": ("knowledge_base/index.py",),
        "apscheduler": ("community/scheduler.py",),
    }
    for path in sources():
        rel = path.relative_to(ROOT).as_posix()
        for module in imports_of(path):
            top = module.split(".")[0]
            if top in owners:
                assert rel.startswith(owners[top]), f"{rel} imports {top}"


def test_layers_point_inwards():
    forbidden = {
        "config": {"models", "knowledge_base", "community", "bot", "crm"},
        "models": {"knowledge_base", "community", "bot", "crm"},
        "knowledge_base": {"bot", "community"},
        "crm": {"bot", "community"},
        "community": {"bot.app"},
        # the console is an adapter like the chat platforms: it uses the desk (bot.handoff),
        # the core, models and config, never the composition root or another adapter
        "console": {"bot.app", "bot.cli", "bot.telegram", "bot.webchat"},
    }
    for path in sources():
        rel = path.relative_to(ROOT).as_posix()
        layer = rel.split("/")[0]
        for module in imports_of(path):
            for bad in forbidden.get(layer, ()):
                assert not (module == bad or module.startswith(bad + ".")), \
                    f"{rel} imports {module}"
            if module == "console" or module.startswith("console."):
                assert layer == "console" or rel == "bot/app.py", \
                    f"{rel} imports the console (only the composition root installs it)"
            if module == "bot.app" or module.startswith("bot.app."):
                assert rel.startswith("bot/cli/"), f"{rel} imports the composition root"


def test_core_never_sees_sdk_types():
    for path in (ROOT / "bot" / "core").rglob("*.py"):
        for module in imports_of(path):
            assert not module.startswith(("aiogram", "aiohttp.web")), f"{path} imports {module}"
