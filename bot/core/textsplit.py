"""Split long texts at sensible boundaries instead of cutting them."""

from __future__ import annotations

import re
from collections.abc import Callable

_SENTENCE_END = re.compile(r"(?<=[.!?。！？…])\s*")


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def split_text(
    text: str, limit: int, measure: Callable[[str], int] = utf16_len
) -> list[str]:
    """Split ``text`` into parts no longer than ``limit``.

    Prefers paragraph breaks, then line breaks, then sentence ends, then spaces; only a text
    without any of these is cut hard (never inside a surrogate pair or before a combining mark).
    """
    if limit < 2:
        raise ValueError("limit must be at least 2")
    if measure(text) <= limit:
        return [text] if text else []
    parts: list[str] = []
    rest = text
    while rest:
        if measure(rest) <= limit:
            parts.append(rest)
            break
        head = _fit_prefix(rest, limit, measure)
        cut = _best_cut(head)
        part, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if part:
            parts.append(part)
    return parts


def _fit_prefix(text: str, limit: int, measure: Callable[[str], int]) -> str:
    lo, hi = 1, min(len(text), limit)
    while lo < hi:  # longest prefix that fits
        mid = (lo + hi + 1) // 2
        if measure(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def _best_cut(head: str) -> int:
    minimum = max(1, len(head) // 3)  # don't produce tiny fragments
    for sep in ("\n\n", "\n"):
        pos = head.rfind(sep)
        if pos >= minimum:
            return pos + len(sep)
    ends = [m.end() for m in _SENTENCE_END.finditer(head) if m.end() >= minimum]
    ends = [e for e in ends if e < len(head)] or ends
    if ends and ends[-1] >= minimum:
        return ends[-1]
    pos = max(head.rfind(" "), head.rfind("\u3000"), head.rfind("、"), head.rfind("，"))
    if pos >= minimum:
        return pos + 1
    cut = len(head)
    # Don't split a grapheme: step back over combining marks, ZWJ sequences, variation selectors.
    while cut > 1 and _joins(head[cut - 1], head[cut] if cut < len(head) else ""):
        cut -= 1
    return cut


def _joins(prev: str, nxt: str) -> bool:
    import unicodedata

    if not nxt:
        return False
    return (
        prev == "\u200d"
        or nxt == "\u200d"
        or unicodedata.combining(nxt) > 0
        or "\ufe00" <= nxt <= "\ufe0f"
        or "\U0001f3fb" <= nxt <= "\U0001f3ff"
    )
