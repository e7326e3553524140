"""Safe HTML for server-rendered console pages: escaped by default, raw only as ``Markup``.

Templates live in ``console/templates`` and use ``{{name}}`` placeholders; a value is escaped
unless it is :class:`Markup` (HTML built here, already safe). Build fragments with :func:`fmt`::

    fmt("<li><a href='{}'>{}</a></li>", url, customer_name)   # both escaped

No template logic: loops and conditions are Python (:func:`join`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class Markup(str):
    """A string that is already safe HTML (inserted as is)."""

    __slots__ = ()


def escape(value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def fmt(template: str, *args: Any, **kwargs: Any) -> Markup:
    """``str.format`` with every argument escaped (``Markup`` arguments kept)."""
    return Markup(template.format(*(escape(a) for a in args),
                                  **{k: escape(v) for k, v in kwargs.items()}))


def join(parts: Iterable[Any], sep: str = "") -> Markup:
    return Markup(sep.join(escape(p) for p in parts))


@cache
def _template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def render(template: str, /, **values: Any) -> Markup:
    """Fill ``templates/<name>``; an unknown placeholder is an error (caught by tests)."""

    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template {template}: no value for {{{{{key}}}}}")
        return escape(values[key])

    return Markup(_PLACEHOLDER.sub(sub, _template(template)))
