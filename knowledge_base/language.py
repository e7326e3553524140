"""Language codes and script-based language detection for the three supported languages."""

from __future__ import annotations

from config.settings import SUPPORTED_LANGUAGES

_ALIASES = {
    "jp": "ja",
    "jpn": "ja",
    "japanese": "ja",
    "日本語": "ja",
    "cn": "zh",
    "zho": "zh",
    "chi": "zh",
    "chs": "zh",
    "cht": "zh",
    "chinese": "zh",
    "中文": "zh",
    "eng": "en",
    "english": "en",
}


def normalise_language_code(code: str | None) -> str | None:
    """Map a platform or file language code (``"zh-hans"``, ``"ja_JP"``, ``"EN-us"``) to one of
    the supported codes (``"ja"``, ``"en"``, ``"zh"``); ``None`` when empty or unsupported."""
    if not code:
        return None
    raw = code.strip().lower().replace("_", "-")
    if not raw:
        return None
    if raw in _ALIASES:
        return _ALIASES[raw]
    primary = raw.split("-", 1)[0]
    primary = _ALIASES.get(primary, primary)
    return primary if primary in SUPPORTED_LANGUAGES else None


def _is_kana(cp: int) -> bool:
    return (
        0x3040 <= cp <= 0x30FF  # hiragana, katakana
        or 0x31F0 <= cp <= 0x31FF  # katakana phonetic extensions
        or 0xFF66 <= cp <= 0xFF9F  # half-width katakana
    )


def _is_han(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0xF900 <= cp <= 0xFAFF
        or 0x20000 <= cp <= 0x3134F
    )


def _is_latin_letter(ch: str) -> bool:
    cp = ord(ch)
    return ch.isalpha() and (cp < 0x250 or 0xFF21 <= cp <= 0xFF5A or 0x1E00 <= cp <= 0x1EFF)


def script_counts(text: str) -> tuple[int, int, int, int]:
    """Counts of (kana, Han, Latin letters, Latin words) in ``text``."""
    kana = han = latin = words = 0
    in_word = False
    for ch in text:
        cp = ord(ch)
        if _is_kana(cp) and ch != "・":
            kana += 1
            in_word = False
        elif _is_han(cp):
            han += 1
            in_word = False
        elif _is_latin_letter(ch):
            latin += 1
            if not in_word:
                words += 1
            in_word = True
        else:
            in_word = False
    return kana, han, latin, words


def detect_language(text: str) -> str | None:
    """Guess the language of ``text`` from its script: any kana → ``"ja"``; Han characters
    without kana → ``"zh"``; Latin letters → ``"en"``; ``None`` when there is no letter of
    those scripts (emoji, digits, Hangul...). Kanji-only Japanese reads as ``"zh"``: pair this
    with the customer's platform language (see :func:`choose_reply_language`)."""
    kana, han, latin, words = script_counts(text)
    if kana:
        return "ja"
    if han and han >= words:
        return "zh"
    if latin:
        return "en"
    return None


_ZH_MARKERS = frozenset("是吗呢吧么你她们这哪啊嗯")


def has_chinese_only_characters(text: str) -> bool:
    """True when ``text`` has Han characters that Japanese does not use (simplified forms
    outside the JIS/CP932 character set, or Chinese particles such as 吗 and 是)."""
    for ch in text:
        if not _is_han(ord(ch)):
            continue
        if ch in _ZH_MARKERS:
            return True
        try:
            ch.encode("cp932")
        except UnicodeEncodeError:
            return True
    return False


def choose_reply_language(
    text: str, platform_language: str | None, default: str = "ja"
) -> str:
    """The language to answer ``text`` in.

    The customer's platform language wins unless the text is clearly written in another one
    (a Japanese customer whose phone is set to English but who writes in Japanese gets
    Japanese). Kanji-only text from a ``ja`` customer stays Japanese unless it uses
    characters Japanese does not (simplified Chinese forms, 吗, 是...).
    """
    platform = normalise_language_code(platform_language)
    detected = detect_language(text)
    if platform is None:
        return detected or normalise_language_code(default) or "ja"
    if detected is None or detected == platform:
        return platform
    if detected == "zh" and platform == "ja":
        return "zh" if has_chinese_only_characters(text) else "ja"
    if detected == "en":
        # A brand name or "OK" in Latin letters is not enough to switch language.
        _kana, _han, _latin, words = script_counts(text)
        if words < 2:
            return platform
    return detected
