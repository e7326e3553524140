"""Translatable bot texts, one TOML catalogue per language under ``bot/locales/``."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
LANGUAGES = ("ja", "en", "zh")


def normalise_language(code: str | None, default: str | None = None) -> str | None:
    """Map platform language codes ('ja-JP', 'zh-hans', 'zh-TW', 'en-US') to ja/en/zh."""
    if not code:
        return default
    base = code.strip().lower().replace("_", "-").split("-")[0]
    return base if base in LANGUAGES else default


class Translator:
    """Looks texts up by key and language, falling back to English, then to the key."""

    def __init__(self, locales_dir: Path = LOCALES_DIR, default: str = "ja") -> None:
        self.default = default
        self.catalogues = {lang: _load(locales_dir / f"{lang}.toml") for lang in LANGUAGES}
        missing = {
            f"{lang}:{key}"
            for lang in LANGUAGES
            for key in self.catalogues["en"]
            if key not in self.catalogues[lang]
        }
        if missing:
            raise ValueError(f"untranslated bot texts: {sorted(missing)}")

    def __call__(self, key: str, language: str | None = None, **values: object) -> str:
        lang = normalise_language(language, self.default) or self.default
        text = self.catalogues[lang].get(key) or self.catalogues["en"].get(key) or key
        return text.format(**values) if values else text


@lru_cache(maxsize=8)
def _load(path: Path) -> dict[str, str]:
    with path.open("rb") as fh:
        return tomllib.load(fh)
