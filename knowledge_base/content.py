"""Knowledge-base file formats: read (with a validation report) and write CSV, YAML, JSON and
JSONL.

Two shapes are accepted:

* **flat rows**, one per (id, language): CSV, JSONL (the StackFAQ ``faq.jsonl`` format with
  ``id``, ``question``, ``answer`` is a special case) and lists of flat objects in YAML/JSON.
  Rows sharing an ``id`` are translations of one entry; the first row's language is the
  entry's primary language.
* **nested entries** in YAML/JSON: ``{"entries": [{"id", "language", "tags", "category",
  "image_url", "active", "translations": {"ja": {"question", "alternatives", "answer",
  "buttons", "links"}, ...}}]}``.

CSV header (only ``id``, ``question`` and ``answer`` are required)::

    id,language,question,alternatives,answer,tags,category,buttons,links,image_url,active

In CSV cells, alternatives and tags are separated by ``|``; buttons are
``Label=https://url|Label=callback:DATA`` and links ``Title=https://url`` (or a JSON array).
Reading never touches the database: :func:`read_content` returns entries plus a list of
:class:`Issue` s with line numbers, and the store imports only a file without errors.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from config.textfiles import TextDecodeError
from config.textfiles import decode_bytes as _decode_text
from knowledge_base.language import detect_language, normalise_language_code

Format = Literal["csv", "yaml", "json", "jsonl"]
FORMATS: tuple[Format, ...] = ("csv", "yaml", "json", "jsonl")
Severity = Literal["error", "warning"]

CSV_COLUMNS = (
    "id",
    "language",
    "question",
    "alternatives",
    "answer",
    "tags",
    "category",
    "buttons",
    "links",
    "image_url",
    "active",
)
REQUIRED_COLUMNS = ("id", "question", "answer")
_COLUMN_ALIASES = {
    "key": "id",
    "faq_id": "id",
    "lang": "language",
    "locale": "language",
    "alts": "alternatives",
    "alternative_questions": "alternatives",
    "paraphrases": "alternatives",
    "image": "image_url",
    "enabled": "active",
}
ENTRY_LEVEL_FIELDS = ("tags", "category", "image_url", "active")
OPTIONAL_TRANSLATION_FIELDS = ("alternatives", "buttons", "links")
ENTRY_FIELDS = {"id", "language", "tags", "category", "image_url", "active", "translations"}
TRANSLATION_FIELDS = {"question", "alternatives", "answer", "buttons", "links"}
FLAT_FIELDS = set(CSV_COLUMNS)
_IGNORED_FLAT_FIELDS = {"split", "source_thread"}  # extra StackFAQ/queries fields
LIST_SEPARATOR = "|"
MAX_KEY_LENGTH = 128
MAX_CALLBACK_BYTES = 64  # Telegram's limit for callback_data
_KEY_RE = re.compile(r"^[\w.:/@+-]+$")
_URL_RE = re.compile(r"^(https?|tg)://\S+$", re.IGNORECASE)
_HTTP_RE = re.compile(r"^https?://\S+$", re.IGNORECASE)


class ContentError(Exception):
    """The file cannot be read at all (missing, empty, binary, undecodable, unknown format)."""


@dataclass(frozen=True)
class Issue:
    """One problem found in a file; ``line`` is 1-based, ``None`` for whole-file problems."""

    line: int | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class TranslationData:
    """An entry's content in one language."""

    language: str
    question: str
    answer: str
    alternatives: list[str] = field(default_factory=list)
    buttons: list[dict[str, str]] = field(default_factory=list)
    links: list[dict[str, str]] = field(default_factory=list)
    line: int | None = field(default=None, compare=False)
    #: Optional fields the source gave; absent ones are left as stored on import.
    provided: frozenset[str] = field(default=frozenset(OPTIONAL_TRANSLATION_FIELDS), compare=False)

    def content(self) -> dict[str, Any]:
        """Comparable content (no line number)."""
        return {
            "question": self.question,
            "alternatives": list(self.alternatives),
            "answer": self.answer,
            "buttons": [dict(b) for b in self.buttons],
            "links": [dict(link) for link in self.links],
        }


@dataclass
class EntryData:
    """One knowledge-base entry as read from a file or the database.

    ``active`` is ``None`` when the file does not say (an import then keeps the stored flag;
    new entries are active). ``language_explicit`` is false when the primary language was only
    inferred from row order, so an import keeps the stored primary language.
    """

    key: str
    language: str
    translations: dict[str, TranslationData] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    category: str | None = None
    image_url: str | None = None
    active: bool | None = None
    language_explicit: bool = True
    line: int | None = field(default=None, compare=False)
    #: Entry-level fields the source gave; absent ones are left as stored on import.
    provided: set[str] = field(default_factory=lambda: set(ENTRY_LEVEL_FIELDS), compare=False)

    @property
    def primary(self) -> TranslationData:
        """The translation in the primary language (or the first one)."""
        return self.translations.get(self.language) or next(iter(self.translations.values()))


@dataclass
class ReadResult:
    """Entries read from a file plus the validation report."""

    entries: list[EntryData]
    issues: list[Issue]
    format: Format
    encoding: str | None = None
    rows: int = 0

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def report(self, limit: int | None = 50) -> str:
        """The issues, one per line, sorted by line (at most ``limit`` shown)."""
        ordered = sorted(self.issues, key=lambda i: (i.line or 0, i.severity != "error"))
        shown = ordered if limit is None else ordered[:limit]
        lines = [str(i) for i in shown]
        if limit is not None and len(ordered) > limit:
            lines.append(f"... and {len(ordered) - limit} more")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Bytes → text


def decode_bytes(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """Decode file content; returns (text, encoding name). See :mod:`config.textfiles`.

    Raises :class:`ContentError` when nothing fits.
    """
    try:
        return _decode_text(data, encoding)
    except TextDecodeError as exc:
        raise ContentError(str(exc)) from None


def detect_format(path: Path | None, text: str) -> Format:
    """The format from the file extension, else from the content."""
    if path is not None:
        suffix = path.suffix.lower().lstrip(".")
        if suffix in ("csv", "tsv", "txt"):
            return "csv"
        if suffix in ("yaml", "yml"):
            return "yaml"
        if suffix == "json":
            return "json"
        if suffix in ("jsonl", "ndjson"):
            return "jsonl"
    stripped = text.lstrip()
    if stripped.startswith("{"):
        first = stripped.split("\n", 1)[0].strip()
        try:
            json.loads(first)
            return "jsonl"
        except ValueError:
            return "json"
    if stripped.startswith("["):
        return "json"
    if stripped.startswith(("entries:", "version:", "- ", "---")):
        return "yaml"
    return "csv"


# --------------------------------------------------------------------------------------------
# Cell and value parsing


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).strip()
    raise TypeError(type(value).__name__)


def split_list(cell: str) -> list[str]:
    """Split a ``a|b|c`` cell (empty parts dropped)."""
    return [p.strip() for p in cell.split(LIST_SEPARATOR) if p.strip()]


def _parse_bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    raw = str(value).strip().lower()
    if raw in ("1", "true", "yes", "y", "on", "active"):
        return True
    if raw in ("0", "false", "no", "n", "off", "inactive"):
        return False
    raise ValueError(f"active must be true or false, got {value!r}")


def _pairs_cell(cell: str, what: str) -> list[dict[str, str]]:
    """Parse a ``Label=target|Label=target`` cell or a JSON array of objects."""
    cell = cell.strip()
    if not cell:
        return []
    if cell.startswith("["):
        try:
            data = json.loads(cell)
        except ValueError as exc:
            raise ValueError(f"{what}: not a valid JSON array ({exc.msg})") from None
        if not isinstance(data, list):
            raise ValueError(f"{what}: expected a JSON array")
        return [d if isinstance(d, dict) else {"_bad": repr(d)} for d in data]
    out: list[dict[str, str]] = []
    for part in split_list(cell):
        if _URL_RE.match(part):
            out.append({"text": "", "target": part})
            continue
        label, sep, target = part.partition("=")
        if not sep:
            raise ValueError(f"{what}: {part!r} should look like 'Label=https://...'")
        out.append({"text": label.strip(), "target": target.strip()})
    return out


def _button_from_pair(pair: Mapping[str, Any]) -> dict[str, str]:
    if "target" in pair:
        target = str(pair["target"])
        text = str(pair.get("text", ""))
        if target.lower().startswith("callback:"):
            return {"text": text, "callback": target[len("callback:") :]}
        return {"text": text, "url": target}
    return {str(k): _text(v) for k, v in pair.items()}


def _link_from_pair(pair: Mapping[str, Any]) -> dict[str, str]:
    if "target" in pair:
        out = {"url": str(pair["target"])}
        if pair.get("text"):
            out = {"title": str(pair["text"]), "url": str(pair["target"])}
        return out
    return {str(k): _text(v) for k, v in pair.items()}


def validate_buttons(buttons: Any) -> tuple[list[dict[str, str]], list[str]]:
    """Normalise buttons to ``{"text", "url"}`` / ``{"text", "callback"}``; returns
    (buttons, problems)."""
    problems: list[str] = []
    out: list[dict[str, str]] = []
    if buttons is None:
        return out, problems
    if not isinstance(buttons, list):
        return out, ["buttons must be a list"]
    for n, raw in enumerate(buttons, 1):
        if not isinstance(raw, Mapping):
            problems.append(f"button {n} must be an object with text and url or callback")
            continue
        b = _button_from_pair(raw)
        unknown = set(b) - {"text", "url", "callback"}
        text = b.get("text", "").strip()
        if unknown:
            problems.append(f"button {n}: unknown field(s) {', '.join(sorted(unknown))}")
        elif not text:
            problems.append(f"button {n} has no text")
        elif ("url" in b) == ("callback" in b):
            problems.append(f"button {n} ({text!r}) needs exactly one of url or callback")
        elif "url" in b and not _URL_RE.match(b["url"]):
            problems.append(f"button {n} ({text!r}): bad url {b['url']!r}")
        elif "callback" in b and not b["callback"]:
            problems.append(f"button {n} ({text!r}): empty callback data")
        elif "callback" in b and len(b["callback"].encode()) > MAX_CALLBACK_BYTES:
            problems.append(
                f"button {n} ({text!r}): callback data over {MAX_CALLBACK_BYTES} bytes"
            )
        else:
            out.append({"text": text, **{k: v for k, v in b.items() if k != "text"}})
    return out, problems


def validate_links(links: Any) -> tuple[list[dict[str, str]], list[str]]:
    """Normalise links to ``{"title"?, "url"}``; returns (links, problems)."""
    problems: list[str] = []
    out: list[dict[str, str]] = []
    if links is None:
        return out, problems
    if not isinstance(links, list):
        return out, ["links must be a list"]
    for n, raw in enumerate(links, 1):
        if isinstance(raw, str):
            raw = {"url": raw}
        if not isinstance(raw, Mapping):
            problems.append(f"link {n} must be a URL or an object with title and url")
            continue
        link = _link_from_pair(raw)
        unknown = set(link) - {"title", "url"}
        if unknown:
            problems.append(f"link {n}: unknown field(s) {', '.join(sorted(unknown))}")
        elif not _HTTP_RE.match(link.get("url", "")):
            problems.append(f"link {n}: bad url {link.get('url', '')!r}")
        else:
            clean = {"url": link["url"]}
            if link.get("title"):
                clean = {"title": link["title"], "url": link["url"]}
            out.append(clean)
    return out, problems


def _as_list(value: Any, what: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return split_list(value)
    if isinstance(value, list):
        return [t for t in (_text(v) for v in value if v is not None) if t]
    raise ValueError(f"{what} must be a list or a '|'-separated text")


def _norm_question(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"\s+", " ", text).strip()
    return text.rstrip("?？!！。.、 ")


# --------------------------------------------------------------------------------------------
# Building entries from flat rows / nested objects


class _Builder:
    """Collects rows/objects into entries and records issues."""

    def __init__(self, default_language: str | None) -> None:
        self.default_language = normalise_language_code(default_language)
        self.entries: dict[str, EntryData] = {}
        self.issues: list[Issue] = []
        self.rows = 0
        self._entry_fields_line: dict[str, dict[str, int]] = {}
        self._row_lines: dict[tuple[str, str], int | None] = {}

    def error(self, line: int | None, message: str) -> None:
        self.issues.append(Issue(line, message, "error"))

    def warn(self, line: int | None, message: str) -> None:
        self.issues.append(Issue(line, message, "warning"))

    def _key(self, raw: Any, line: int | None) -> str | None:
        try:
            key = _text(raw)
        except TypeError:
            self.error(line, "id must be text")
            return None
        if not key:
            self.error(line, "missing id")
            return None
        if len(key) > MAX_KEY_LENGTH or not _KEY_RE.match(key):
            self.error(
                line,
                f"bad id {key!r}: use up to {MAX_KEY_LENGTH} letters, digits and - _ . : / @ +",
            )
            return None
        return key

    def _language(self, raw: Any, question: str, line: int | None, key: str) -> str | None:
        if raw not in (None, ""):
            lang = normalise_language_code(str(raw))
            if lang is None:
                self.error(line, f"bad language code {str(raw)!r} for {key!r} (use ja, en or zh)")
            return lang
        if self.default_language:
            return self.default_language
        lang = detect_language(question)
        if lang is None:
            self.error(line, f"cannot tell the language of {key!r}: add a language column")
        return lang

    def _translation(
        self, key: str, lang: str, data: Mapping[str, Any], line: int | None
    ) -> TranslationData | None:
        ok = True
        try:
            question = _text(data.get("question"))
            answer = _text(data.get("answer"))
        except TypeError:
            self.error(line, f"{key!r} ({lang}): question and answer must be text")
            return None
        if not question:
            self.error(line, f"empty question for {key!r} ({lang})")
            ok = False
        if not answer:
            self.error(line, f"empty answer for {key!r} ({lang})")
            ok = False
        try:
            alternatives = _as_list(data.get("alternatives"), "alternatives")
        except ValueError as exc:
            self.error(line, f"{key!r} ({lang}): {exc}")
            alternatives = []
            ok = False
        seen = {_norm_question(question)}
        alts: list[str] = []
        for alt in alternatives:
            norm = _norm_question(alt)
            if norm in seen:
                self.warn(line, f"{key!r} ({lang}): duplicate alternative {alt!r} ignored")
                continue
            seen.add(norm)
            alts.append(alt)
        raw_buttons = data.get("buttons")
        raw_links = data.get("links")
        try:
            if isinstance(raw_buttons, str):
                raw_buttons = _pairs_cell(raw_buttons, "buttons")
            if isinstance(raw_links, str):
                raw_links = _pairs_cell(raw_links, "links")
        except ValueError as exc:
            self.error(line, f"malformed {exc} ({key!r}, {lang})")
            return None
        buttons, problems = validate_buttons(raw_buttons)
        for p in problems:
            self.error(line, f"malformed buttons for {key!r} ({lang}): {p}")
            ok = False
        links, problems = validate_links(raw_links)
        for p in problems:
            self.error(line, f"malformed links for {key!r} ({lang}): {p}")
            ok = False
        if not ok:
            return None
        return TranslationData(
            language=lang,
            question=question,
            answer=answer,
            alternatives=alts,
            buttons=buttons,
            links=links,
            line=line,
            provided=frozenset(f for f in OPTIONAL_TRANSLATION_FIELDS if f in data),
        )

    def _entry_fields(
        self, data: Mapping[str, Any], line: int | None, key: str
    ) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        try:
            if "tags" in data:
                out["tags"] = _as_list(data.get("tags"), "tags")
            if "category" in data:
                out["category"] = _text(data.get("category")) or None
            if "image_url" in data:
                url = _text(data.get("image_url")) or None
                if url is not None and not _HTTP_RE.match(url):
                    raise ValueError(f"bad image_url {url!r}")
                out["image_url"] = url
            if "active" in data:
                out["active"] = _parse_bool(data.get("active"))
        except (ValueError, TypeError) as exc:
            self.error(line, f"{key!r}: {exc}")
            return None
        return out

    def add_flat(self, data: Mapping[str, Any], line: int | None) -> None:
        """One flat row: an entry's content in one language."""
        self.rows += 1
        unknown = set(data) - FLAT_FIELDS - _IGNORED_FLAT_FIELDS
        if unknown:
            self.error(line, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
            return
        key = self._key(data.get("id"), line)
        if key is None:
            return
        question = _text(data.get("question")) if isinstance(data.get("question"), str) else ""
        lang = self._language(data.get("language"), question, line, key)
        fields = self._entry_fields(data, line, key)
        if lang is None or fields is None:
            return
        tr = self._translation(key, lang, data, line)
        entry = self.entries.get(key)
        if entry is None:
            entry = EntryData(
                key=key, language=lang, language_explicit=False, line=line, provided=set()
            )
            self.entries[key] = entry
            self._entry_fields_line[key] = {}
        if (key, lang) in self._row_lines:
            first = self._row_lines[(key, lang)]
            self.error(line, f"duplicate id {key!r} ({lang}): already on line {first}")
            return
        self._row_lines[(key, lang)] = line
        # Entry-level values may repeat on every row but must agree.
        seen = self._entry_fields_line[key]
        entry.provided.update(fields)
        for name, value in fields.items():
            if value in (None, []) and name != "active":
                continue
            if value is None:
                continue
            current = getattr(entry, name)
            if name in seen and current != value:
                self.error(
                    line,
                    f"{key!r}: {name} {value!r} differs from {current!r} on line {seen[name]}",
                )
                continue
            setattr(entry, name, value)
            seen.setdefault(name, line or 0)
        if tr is not None:
            entry.translations[lang] = tr

    def add_nested(self, data: Mapping[str, Any], line: int | None) -> None:
        """One nested entry with a ``translations`` mapping."""
        self.rows += 1
        unknown = set(data) - ENTRY_FIELDS
        if unknown:
            self.error(line, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
            return
        key = self._key(data.get("id"), line)
        if key is None:
            return
        if key in self.entries:
            self.error(line, f"duplicate id {key!r}: already on line {self.entries[key].line}")
            return
        fields = self._entry_fields(data, line, key)
        translations = data.get("translations")
        if not isinstance(translations, Mapping) or not translations:
            self.error(line, f"{key!r}: translations must map language codes to content")
            return
        if fields is None:
            return
        entry = EntryData(key=key, language="", line=line, provided=set(fields), **fields)
        for raw_lang, content in translations.items():
            tline = getattr(content, "line", line)
            lang = normalise_language_code(str(raw_lang))
            if lang is None:
                self.error(tline, f"bad language code {str(raw_lang)!r} for {key!r} "
                                  "(use ja, en or zh)")
                continue
            if not isinstance(content, Mapping):
                self.error(tline, f"{key!r} ({lang}): expected question/answer fields")
                continue
            unknown = set(content) - TRANSLATION_FIELDS
            if unknown:
                self.error(
                    tline,
                    f"{key!r} ({lang}): unknown field(s): {', '.join(sorted(map(str, unknown)))}",
                )
                continue
            if lang in entry.translations:
                self.error(tline, f"{key!r}: two translations for {lang}")
                continue
            tr = self._translation(key, lang, content, tline)
            if tr is not None:
                entry.translations[lang] = tr
        primary = data.get("language")
        if primary not in (None, ""):
            lang = normalise_language_code(str(primary))
            if lang is None:
                self.error(line, f"bad language code {str(primary)!r} for {key!r} "
                                 "(use ja, en or zh)")
                return
            if lang not in entry.translations and entry.translations:
                self.error(line, f"{key!r}: primary language {lang} has no translation")
                return
            entry.language = lang
        elif entry.translations:
            entry.language = next(iter(entry.translations))
            entry.language_explicit = False
        if entry.translations:
            self.entries[key] = entry
        else:
            # Keep the key so later duplicates are still reported.
            self.entries[key] = entry

    def add_object(self, data: Any, line: int | None) -> None:
        if not isinstance(data, Mapping):
            self.error(line, "expected an object with id, question and answer")
            return
        if "translations" in data:
            self.add_nested(data, line)
        else:
            self.add_flat(data, line)

    def finish(self) -> list[EntryData]:
        entries = [e for e in self.entries.values() if e.translations]
        by_question: dict[tuple[str, str], tuple[str, int | None]] = {}
        for entry in entries:
            for lang, tr in entry.translations.items():
                norm = (lang, _norm_question(tr.question))
                other = by_question.get(norm)
                if other is not None and other[0] != entry.key:
                    where = f"line {other[1]}" if other[1] else "another entry"
                    self.error(
                        tr.line,
                        f"duplicate question {tr.question!r} ({lang}): "
                        f"{entry.key!r} and {other[0]!r} ({where})",
                    )
                else:
                    by_question[norm] = (entry.key, tr.line)
        for entry in entries:
            for lang, tr in entry.translations.items():
                for alt in tr.alternatives:
                    other = by_question.get((lang, _norm_question(alt)))
                    if other is not None and other[0] != entry.key:
                        self.warn(
                            tr.line,
                            f"{entry.key!r} ({lang}): alternative {alt!r} is the question of "
                            f"{other[0]!r}",
                        )
        return entries


# --------------------------------------------------------------------------------------------
# Format readers


def _read_csv(text: str, builder: _Builder, path: Path | None) -> None:
    lines = text.splitlines()
    header_line = next((ln for ln in lines if ln.strip()), "")
    delimiter = "\t" if (path and path.suffix.lower() == ".tsv") or (
        "\t" in header_line and "," not in header_line
    ) else ","
    if delimiter == "," and ";" in header_line and "," not in header_line:
        delimiter = ";"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    columns: list[str] | None = None
    start = 1
    try:
        for record in reader:
            line = start
            start = reader.line_num + 1
            if not record or all(not c.strip() for c in record):
                continue
            if columns is None:
                columns = [_COLUMN_ALIASES.get(c.strip().lower(), c.strip().lower())
                           for c in record]
                unknown = [c for c in columns if c not in FLAT_FIELDS and c]
                if unknown:
                    builder.error(
                        line,
                        f"unknown column(s): {', '.join(unknown)} "
                        f"(known: {', '.join(CSV_COLUMNS)})",
                    )
                missing = [c for c in REQUIRED_COLUMNS if c not in columns]
                if missing:
                    builder.error(line, f"missing required column(s): {', '.join(missing)}")
                dup = sorted({c for c in columns if columns.count(c) > 1 and c})
                if dup:
                    builder.error(line, f"duplicate column(s): {', '.join(dup)}")
                if unknown or missing or dup:
                    return
                continue
            if len(record) != len(columns):
                hint = " (a comma inside an unquoted cell?)" if len(record) > len(columns) else ""
                builder.error(
                    line, f"expected {len(columns)} fields, found {len(record)}{hint}"
                )
                builder.rows += 1
                continue
            row = {c: v for c, v in zip(columns, record, strict=True) if c}
            builder.add_flat(row, line)
    except csv.Error as exc:
        msg = str(exc)
        if "unexpected end of data" in msg or "EOF" in msg:
            builder.error(
                start, "broken quotes: a '\"' opened in the record starting here is never "
                "closed"
            )
        else:
            builder.error(reader.line_num or start, f"broken quotes: {msg}")
        return
    if columns is None:
        builder.error(None, "the file has no header row")


class _LineDict(dict[str, Any]):
    line: int | None = None


def _yaml_loader() -> type[yaml.SafeLoader]:
    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        duplicate_keys: list[tuple[int, str]]

        def construct_line_mapping(self, node: yaml.MappingNode) -> Iterator[_LineDict]:
            data = _LineDict()
            data.line = node.start_mark.line + 1
            yield data
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    self.duplicate_keys.append((key_node.start_mark.line + 1, str(key)))
                try:
                    seen.add(key)
                except TypeError:
                    pass
            data.update(self.construct_mapping(node, deep=True))

    Loader.add_constructor(
        "tag:yaml.org,2002:map",
        Loader.construct_line_mapping,  # type: ignore[arg-type]
    )
    return Loader  # type: ignore[no-any-return]


_YAML_LOADER = _yaml_loader()


def _read_top(data: Any, builder: _Builder, top_line: int | None, lines: list[int | None]
              ) -> None:
    items: Any
    if isinstance(data, Mapping):
        unknown = set(data) - {"version", "entries", "name", "brand", "description", "language"}
        if unknown:
            builder.error(top_line, f"unknown top-level field(s): {', '.join(sorted(unknown))}")
            return
        if data.get("language"):
            lang = normalise_language_code(str(data["language"]))
            if lang is None:
                builder.error(top_line, f"bad language code {data['language']!r}")
                return
            builder.default_language = lang
        items = data.get("entries")
        if not isinstance(items, list):
            builder.error(top_line, "expected 'entries:' with a list of entries")
            return
    elif isinstance(data, list):
        items = data
    elif data is None:
        builder.error(None, "the file has no entries")
        return
    else:
        builder.error(top_line, "expected a list of entries or an object with 'entries'")
        return
    for n, item in enumerate(items):
        line = getattr(item, "line", None) or (lines[n] if n < len(lines) else None)
        builder.add_object(item, line)


def _read_yaml(text: str, builder: _Builder) -> None:
    loader = _YAML_LOADER(text)
    loader.duplicate_keys = []
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        builder.error(line, f"not valid YAML: {exc.problem or exc}")
        return
    except yaml.YAMLError as exc:
        builder.error(None, f"not valid YAML: {exc}")
        return
    finally:
        loader.dispose()
    for line, key in loader.duplicate_keys:
        builder.error(line, f"duplicate key {key!r}")
    _read_top(data, builder, getattr(data, "line", 1), [])


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _json_array_starts(text: str, i: int, decoder: json.JSONDecoder) -> list[int]:
    """Start offsets of the elements of the JSON array at ``text[i] == '['``."""
    starts: list[int] = []
    i = _skip_ws(text, i + 1)
    while i < len(text) and text[i] != "]":
        starts.append(i)
        _, i = decoder.raw_decode(text, i)
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
    return starts


def _json_element_lines(text: str) -> list[int | None]:
    """Line numbers of the entries of a JSON list or of an object's ``entries`` list."""
    decoder = json.JSONDecoder()
    i = _skip_ws(text, 0)
    starts: list[int] = []
    try:
        if text[i] == "[":
            starts = _json_array_starts(text, i, decoder)
        elif text[i] == "{":
            i = _skip_ws(text, i + 1)
            while i < len(text) and text[i] != "}":
                name, i = decoder.raw_decode(text, i)
                i = _skip_ws(text, i)
                i = _skip_ws(text, i + 1)  # ':'
                if name == "entries" and text[i] == "[":
                    starts = _json_array_starts(text, i, decoder)
                    break
                _, i = decoder.raw_decode(text, i)
                i = _skip_ws(text, i)
                if i < len(text) and text[i] == ",":
                    i = _skip_ws(text, i + 1)
    except (ValueError, IndexError):
        return []
    newlines = [m.start() for m in re.finditer("\n", text)]
    return [bisect.bisect_left(newlines, s) + 1 for s in starts]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _read_json(text: str, builder: _Builder) -> None:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        builder.error(exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")
        return
    except ValueError as exc:
        builder.error(None, f"not valid JSON: {exc}")
        return
    _read_top(data, builder, 1, _json_element_lines(text))


def _read_jsonl(text: str, builder: _Builder) -> None:
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            builder.error(n, f"not valid JSON: {exc.msg} (column {exc.colno})")
            builder.rows += 1
            continue
        except ValueError as exc:
            builder.error(n, f"not valid JSON: {exc}")
            builder.rows += 1
            continue
        builder.add_object(data, n)


def parse_content(
    text: str,
    fmt: Format,
    *,
    default_language: str | None = None,
    path: Path | None = None,
) -> ReadResult:
    """Parse already-decoded text; never raises for bad content (see the issues)."""
    if fmt not in FORMATS:
        raise ContentError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    builder = _Builder(default_language)
    if not text.strip():
        builder.error(None, "the file is empty")
        return ReadResult([], builder.issues, fmt)
    if fmt == "csv":
        _read_csv(text, builder, path)
    elif fmt == "yaml":
        _read_yaml(text, builder)
    elif fmt == "json":
        _read_json(text, builder)
    else:
        _read_jsonl(text, builder)
    entries = builder.finish()
    if not entries and not builder.issues:
        builder.error(None, "the file has no entries")
    return ReadResult(entries, builder.issues, fmt, rows=builder.rows)


def read_content(
    path: str | Path,
    *,
    fmt: Format | None = None,
    default_language: str | None = None,
    encoding: str | None = None,
) -> ReadResult:
    """Read and validate a knowledge-base file. Raises :class:`ContentError` when the file
    cannot be read as text at all; content problems are in ``ReadResult.issues``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ContentError(f"file not found: {p}") from None
    except IsADirectoryError:
        raise ContentError(f"{p} is a directory, not a file") from None
    except OSError as exc:
        raise ContentError(f"cannot read {p}: {exc.strerror}") from None
    if not data.strip():
        raise ContentError(f"{p} is empty")
    text, used = decode_bytes(data, encoding)
    if not text.strip():
        raise ContentError(f"{p} is empty")
    result = parse_content(
        text, fmt or detect_format(p, text), default_language=default_language, path=p
    )
    result.encoding = used
    return result


# --------------------------------------------------------------------------------------------
# Writers


def _pairs_to_cell(items: Sequence[Mapping[str, str]], kind: Literal["buttons", "links"]) -> str:
    if not items:
        return ""
    parts: list[str] = []
    for item in items:
        if kind == "buttons":
            label = item.get("text", "")
            target = item["url"] if "url" in item else "callback:" + item.get("callback", "")
        else:
            label = item.get("title", "")
            target = item["url"]
        if "=" in label or LIST_SEPARATOR in label or LIST_SEPARATOR in target or (
            kind == "buttons" and not label
        ):
            return json.dumps([dict(i) for i in items], ensure_ascii=False)
        parts.append(f"{label}={target}" if label else target)
    return LIST_SEPARATOR.join(parts)


def _ordered_translations(entry: EntryData) -> list[TranslationData]:
    langs = sorted(entry.translations, key=lambda lang: (lang != entry.language, lang))
    return [entry.translations[lang] for lang in langs]


def entry_to_nested(entry: EntryData) -> dict[str, Any]:
    """The nested YAML/JSON object of an entry."""
    out: dict[str, Any] = {"id": entry.key, "language": entry.language}
    if entry.category:
        out["category"] = entry.category
    if entry.tags:
        out["tags"] = list(entry.tags)
    if entry.image_url:
        out["image_url"] = entry.image_url
    out["active"] = True if entry.active is None else entry.active
    translations: dict[str, Any] = {}
    for tr in _ordered_translations(entry):
        item: dict[str, Any] = {"question": tr.question}
        if tr.alternatives:
            item["alternatives"] = list(tr.alternatives)
        item["answer"] = tr.answer
        if tr.buttons:
            item["buttons"] = [dict(b) for b in tr.buttons]
        if tr.links:
            item["links"] = [dict(link) for link in tr.links]
        translations[tr.language] = item
    out["translations"] = translations
    return out


def _flat_rows(entries: Iterable[EntryData]) -> Iterator[dict[str, Any]]:
    for entry in entries:
        for n, tr in enumerate(_ordered_translations(entry)):
            yield {
                "entry": entry,
                "tr": tr,
                "first": n == 0,
            }


class _BlockDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    pass


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_presenter)


def dump_content(entries: Sequence[EntryData], fmt: Format) -> str:
    """Serialise entries; the output reads back to the same entries."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in _flat_rows(entries):
            e: EntryData = row["entry"]
            tr: TranslationData = row["tr"]
            writer.writerow(
                [
                    e.key,
                    tr.language,
                    tr.question,
                    LIST_SEPARATOR.join(tr.alternatives),
                    tr.answer,
                    LIST_SEPARATOR.join(e.tags),
                    e.category or "",
                    _pairs_to_cell(tr.buttons, "buttons"),
                    _pairs_to_cell(tr.links, "links"),
                    e.image_url or "",
                    "true" if e.active in (None, True) else "false",
                ]
            )
        return buf.getvalue()
    if fmt == "jsonl":
        lines = []
        for row in _flat_rows(entries):
            e, tr = row["entry"], row["tr"]
            obj: dict[str, Any] = {
                "id": e.key,
                "language": tr.language,
                "question": tr.question,
                "answer": tr.answer,
            }
            if tr.alternatives:
                obj["alternatives"] = list(tr.alternatives)
            if tr.buttons:
                obj["buttons"] = [dict(b) for b in tr.buttons]
            if tr.links:
                obj["links"] = [dict(link) for link in tr.links]
            if e.tags:
                obj["tags"] = list(e.tags)
            if e.category:
                obj["category"] = e.category
            if e.image_url:
                obj["image_url"] = e.image_url
            obj["active"] = e.active in (None, True)
            lines.append(json.dumps(obj, ensure_ascii=False))
        return "\n".join(lines) + ("\n" if lines else "")
    doc = {"version": 1, "entries": [entry_to_nested(e) for e in entries]}
    if fmt == "json":
        return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    if fmt == "yaml":
        return yaml.dump(
            doc, Dumper=_BlockDumper, allow_unicode=True, sort_keys=False, width=100
        )
    raise ContentError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
