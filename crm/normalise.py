"""Normalising what shops export: text encodings, e-mail addresses, phone numbers, dates,
amounts and yes/no values. Every parser raises ``ValueError`` with a short reason."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config.textfiles import decode_bytes as _decode_text

ENCODINGS = ("utf-8", "utf-8-sig", "shift_jis", "cp932", "gb18030")


def decode_bytes(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """Decode a shop export (see :mod:`config.textfiles`); returns (text, encoding name).

    Raises ``ValueError`` saying where the first bad byte is when no encoding fits.
    """
    return _decode_text(data, encoding)


def clean(value: str | None) -> str:
    """NFKC (full-width digits and letters to ASCII) and trimmed."""
    return unicodedata.normalize("NFKC", value or "").strip()


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalise_email(value: str | None) -> str | None:
    """Lower-cased address, or None when empty; ``ValueError`` when not an address."""
    text = clean(value).lower()
    if not text:
        return None
    if not _EMAIL.match(text):
        raise ValueError(f"not an e-mail address: {value!r}")
    return text


def normalise_phone(value: str | None, default_country_code: str = "81") -> str | None:
    """'+<country><number>' digits: '090-1234-5678' and '+81 90 1234 5678' match."""
    text = clean(value)
    if not text:
        return None
    international = text.startswith("+") or text.startswith("00")
    digits = re.sub(r"\D", "", text)
    if text.startswith("00"):
        digits = digits[2:]
    if len(digits) < 7 or len(digits) > 15:
        raise ValueError(f"not a phone number: {value!r}")
    if not international:
        digits = default_country_code + digits.lstrip("0")
    return "+" + digits


_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d")
_DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
    "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M",
)
_JA_DATE = re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日")


def parse_date(value: str) -> date:
    """A calendar date (YYYY-MM-DD, YYYY/MM/DD, YYYYMMDD, 2024年1月2日); impossible dates
    such as 2023-02-30 raise ``ValueError``."""
    text = clean(value)
    m = _JA_DATE.match(value.strip())
    if m:
        text = f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    if re.match(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$", text):
        raise ValueError(f"impossible date {value!r}")
    raise ValueError(f"not a date {value!r} (use YYYY-MM-DD)")


def parse_birthday(value: str) -> tuple[int | None, int, int]:
    """(year or None, month, day) from YYYY-MM-DD or MM-DD (a year need not be known)."""
    text = clean(value)
    m = re.match(r"^(\d{1,2})[-/](\d{1,2})$", text)
    if m:
        month, day = int(m.group(1)), int(m.group(2))
        try:
            date(2000, month, day)  # a leap year: 02-29 is a real birthday
        except ValueError:
            raise ValueError(f"impossible birthday {value!r}") from None
        return None, month, day
    d = parse_date(value)
    if d > date.today():
        raise ValueError(f"birthday {value!r} is in the future")
    return d.year, d.month, d.day


def parse_datetime(value: str, tz: str = "Asia/Tokyo") -> datetime:
    """An order time; values without a zone are local time in ``tz``; returns UTC."""
    text = clean(value)
    if not text:
        raise ValueError("empty date")
    dt: datetime | None = None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        for fmt in _DATETIME_FORMATS:
            try:
                dt = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if dt is None:
        dt = datetime.combine(parse_date(value), time())
    if dt.tzinfo is None:
        try:
            dt = dt.replace(tzinfo=ZoneInfo(tz))
        except ZoneInfoNotFoundError:
            raise ValueError(f"unknown time zone {tz!r}") from None
    return dt.astimezone(UTC)


def parse_amount(value: str) -> Decimal:
    """A non-negative amount: '1,234', '¥1,234', '1234.50'."""
    text = clean(value).replace(",", "").replace("¥", "").replace("$", "").replace("円", "")
    text = text.replace("￥", "").replace("元", "").strip()
    if not text:
        raise ValueError("missing amount")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not an amount {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not an amount {value!r}")
    if amount < 0:
        raise ValueError(f"negative amount {value!r} (refunds are not imported as orders)")
    return amount.quantize(Decimal("0.01"))


_TRUE = {"1", "y", "yes", "true", "t", "on", "はい", "同意", "是", "opt-in", "optin"}
_FALSE = {"0", "n", "no", "false", "f", "off", "いいえ", "拒否", "否", "opt-out", "optout"}


def parse_bool(value: str) -> bool | None:
    """yes/no (also はい/いいえ, 是/否, 1/0); empty = None (unknown)."""
    text = clean(value).lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not yes/no: {value!r}")


def check_timezone(value: str) -> str:
    """An IANA zone name, e.g. Asia/Tokyo."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value
