"""Reading text files that users upload (knowledge bases, shop exports): encoding detection.

Shared by every importer so they accept the same files: UTF-16 with a BOM, UTF-8 with or
without BOM, then Shift_JIS (CP932) and GB18030, each decoded strictly.
"""

from __future__ import annotations


class TextDecodeError(ValueError):
    """The bytes are not text in any supported encoding (the message says why and where)."""


_CONTROL_OK = {"\t", "\n", "\r", "\f", "\x1a"}


def _looks_binary(data: bytes) -> bool:
    head = data[:8192]
    if b"\x00" in head:
        return True
    bad = sum(1 for b in head if b < 32 and chr(b) not in _CONTROL_OK)
    return bad > max(2, len(head) // 100)


def _cjk_plausible(text: str) -> float:
    """Share of the non-ASCII characters of ``text`` that are common CJK text characters."""
    non_ascii = [c for c in text if ord(c) > 0x7F]
    if not non_ascii:
        return 1.0
    good = 0
    for c in non_ascii:
        cp = ord(c)
        if (
            0x3000 <= cp <= 0x30FF  # CJK punctuation, kana
            or 0x4E00 <= cp <= 0x9FFF  # common ideographs
            or 0xFF01 <= cp <= 0xFF5E  # full-width forms
            or cp in (0x2018, 0x2019, 0x201C, 0x201D, 0x2026, 0x00D7, 0x2605, 0x2606)
        ):
            good += 1
    return good / len(non_ascii)


def _ja_score(text: str) -> float:
    kana = sum(1 for c in text if 0x3040 <= ord(c) <= 0x30FF)
    half = sum(1 for c in text if 0xFF61 <= ord(c) <= 0xFF9F)
    return kana - 3 * half


def decode_bytes(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """Decode file content; returns (text, encoding name).

    Without ``encoding``: UTF-16 with a BOM, UTF-8 (with or without BOM), then Shift_JIS
    (CP932) and GB18030, each decoded strictly; when both legacy encodings decode, the one
    whose text looks like real Japanese/Chinese wins. Raises :class:`TextDecodeError` when
    nothing fits.
    """
    if encoding:
        try:
            return data.decode(encoding), encoding
        except LookupError:
            raise TextDecodeError(f"unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise TextDecodeError(
                f"not valid {encoding}: bad byte 0x{data[exc.start]:02x} on line {line}"
            ) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise TextDecodeError("starts with a UTF-16 byte-order mark but is not UTF-16") from None
    if _looks_binary(data):
        if data.startswith(b"PK\x03\x04"):
            raise TextDecodeError(
                "this is a ZIP/Excel file, not CSV, YAML or JSON: save it as CSV (UTF-8) first"
            )
        raise TextDecodeError(
            "this looks like a binary file, not text in any supported encoding "
            "(CSV, YAML or JSON expected)"
        )
    try:
        if data.startswith(b"\xef\xbb\xbf"):
            return data.decode("utf-8-sig"), "utf-8-sig"
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = exc
    candidates: list[tuple[str, str]] = []
    for enc in ("cp932", "gb18030"):
        try:
            candidates.append((enc, data.decode(enc)))
        except UnicodeDecodeError:
            continue
    candidates = [(enc, text) for enc, text in candidates if _cjk_plausible(text) >= 0.9]
    if len(candidates) == 2:
        sj_text = candidates[0][1]
        gb_text = candidates[1][1]
        if _ja_score(sj_text) > max(0.0, _ja_score(gb_text)):
            candidates = candidates[:1]
        else:
            candidates = candidates[1:]
    if candidates:
        enc, text = candidates[0]
        return text, {"cp932": "shift_jis (cp932)", "gb18030": "gb18030"}[enc]
    line = data[: utf8_error.start].count(b"\n") + 1
    raise TextDecodeError(
        "cannot tell the text encoding: the file is not UTF-8, Shift_JIS (CP932) or GB18030 "
        f"(first non-UTF-8 byte 0x{data[utf8_error.start]:02x} on line {line}); "
        "save it as UTF-8 or pass --encoding"
    )


