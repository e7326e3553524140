"""Text normalisation and tokenisation shared by the lexical index and the retriever.

Works for Japanese, Chinese and Latin-script text without a word segmenter:
CJK runs become character unigrams and bigrams, Latin/Cyrillic/digit runs become words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

__all__ = [
    "MAX_QUERY_CHARS",
    "clean_text",
    "has_content",
    "katakana_to_hiragana",
    "normalize",
    "tokenize",
]

#: Queries longer than this are truncated before embedding or lexical matching.
MAX_QUERY_CHARS = 512

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\ufeff]")
_SPACE_RE = re.compile(r"\s+")
_KATA_START, _KATA_END = 0x30A1, 0x30F6  # ァ .. ヶ
_KATA_TO_HIRA = {cp: cp - 0x60 for cp in range(_KATA_START, _KATA_END + 1)}


def katakana_to_hiragana(text: str) -> str:
    """Map full-width katakana letters to hiragana (ー and other marks are kept)."""
    return text.translate(_KATA_TO_HIRA)


def clean_text(text: str, *, max_chars: int = MAX_QUERY_CHARS) -> str:
    """Light clean-up that keeps the text readable: drop control characters and
    surrogates, collapse whitespace, truncate to ``max_chars``."""
    if not isinstance(text, str):
        text = str(text)
    if len(text) > max_chars * 2:
        text = text[: max_chars * 2]
    text = text.encode("utf-8", "replace").decode("utf-8")  # drops lone surrogates
    text = _CONTROL_RE.sub(" ", text)
    text = _SPACE_RE.sub(" ", text).strip()
    return text[:max_chars]


def normalize(text: str, *, kana: bool = True) -> str:
    """Matching form of ``text``: NFKC (full-width ASCII → half-width, half-width
    katakana → full-width), case folding, katakana → hiragana (if ``kana``),
    whitespace collapsed."""
    text = unicodedata.normalize("NFKC", clean_text(text))
    text = text.casefold()
    if kana:
        text = katakana_to_hiragana(text)
    return _SPACE_RE.sub(" ", text).strip()


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x3040 <= cp <= 0x30FF  # hiragana, katakana
        or 0x3400 <= cp <= 0x4DBF  # CJK ext A
        or 0x4E00 <= cp <= 0x9FFF  # CJK unified
        or 0xF900 <= cp <= 0xFAFF  # compatibility ideographs
        or 0x20000 <= cp <= 0x2FA1F  # ext B..
        or 0xAC00 <= cp <= 0xD7AF  # hangul syllables
        or 0x1100 <= cp <= 0x11FF  # hangul jamo
        or cp == 0x30FC  # prolonged sound mark
        or cp == 0x3005  # 々
    )


def _is_word_char(ch: str) -> bool:
    if ch == "'" or ch == "_":
        return True
    cat = unicodedata.category(ch)
    return cat[0] in ("L", "N") or cat == "Mn" or cat == "Mc"


def has_content(text: str) -> bool:
    """True when ``text`` contains at least one letter or digit (emoji/punctuation-only
    text has none)."""
    return any(_is_word_char(ch) and ch not in "'_" for ch in text)


def _stem(word: str) -> str:
    """A very light English-oriented suffix stripper (plural / possessive)."""
    if word.endswith("'s"):
        word = word[:-2]
    word = word.strip("'")
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        if word.endswith("ies") and len(word) > 4:
            return word[:-3] + "y"
        return word[:-1]
    return word


def _runs(text: str) -> Iterator[tuple[bool, str]]:
    """Split normalised text into (is_cjk, run) pieces; other characters separate runs."""
    buf: list[str] = []
    buf_cjk = False
    for ch in text:
        if _is_cjk(ch):
            kind: bool | None = True
        elif _is_word_char(ch):
            kind = False
        else:
            kind = None
        if kind is None or (buf and kind != buf_cjk):
            if buf:
                yield buf_cjk, "".join(buf)
                buf = []
        if kind is not None:
            buf.append(ch)
            buf_cjk = kind
    if buf:
        yield buf_cjk, "".join(buf)


def _is_hiragana(ch: str) -> bool:
    return 0x3041 <= ord(ch) <= 0x309F


def _is_han(ch: str) -> bool:
    cp = ord(ch)
    return 0x3400 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x2FA1F


def tokenize(text: str, *, normalized: bool = False) -> list[str]:
    """Lexical tokens of ``text``.

    Latin-script (and other space-delimited) runs yield lightly stemmed words. CJK runs
    (kanji/hanzi, kana, hangul) yield character bigrams, except bigrams of two hiragana
    (mostly particles and verb endings), plus unigrams of kanji/hanzi. A run of only
    hiragana keeps all its bigrams. Katakana is kept apart from hiragana here.
    """
    if not normalized:
        text = normalize(text, kana=False)
    out: list[str] = []
    for is_cjk, run in _runs(text):
        if not is_cjk:
            word = _stem(run)
            if word:
                out.append(word)
            continue
        if len(run) == 1:
            out.append(run)
            continue
        all_hira = all(_is_hiragana(ch) for ch in run)
        out.extend(ch for ch in run if _is_han(ch))
        for i in range(len(run) - 1):
            pair = run[i : i + 2]
            if all_hira or not (_is_hiragana(pair[0]) and _is_hiragana(pair[1])):
                out.append(pair)
    return out
