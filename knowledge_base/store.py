"""Knowledge-base storage: atomic, idempotent imports, editing, and feedback/unanswered logs.

Every write runs in one transaction (``Database.session()``): an import either applies all
of a file or nothing. Fields a file does not mention are left as stored (a StackFAQ file
with only ``id``/``question``/``answer`` keeps tags added later); languages a file does not
mention keep their translations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from knowledge_base.content import (
    ENTRY_LEVEL_FIELDS,
    EntryData,
    Issue,
    TranslationData,
    validate_buttons,
    validate_links,
)
from knowledge_base.language import normalise_language_code
from models.base import utcnow
from models.db import Database
from models.knowledge import KbEntry, KbFeedback, KbTranslation, KbUnanswered

_KEY_RE = re.compile(r"^[\w.:/@+-]+$")


class StoreError(Exception):
    """An edit cannot be applied (unknown key, key exists, invalid value)."""


@dataclass
class ImportStats:
    """What an import changed (or would change, for a dry run)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0
    added_keys: list[str] = field(default_factory=list)
    updated_keys: list[str] = field(default_factory=list)
    deactivated_keys: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deactivated)

    def summary(self) -> str:
        text = f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged"
        if self.deactivated:
            text += f", {self.deactivated} deactivated"
        return text


@dataclass
class FeedbackRow:
    """A stored feedback vote."""

    entry_key: str
    question: str
    helpful: bool
    contact_id: int | None
    created_at: datetime


@dataclass
class UnansweredRow:
    """A stored unanswered question."""

    text: str
    language: str | None
    contact_id: int | None
    decision: str
    confidence: float
    created_at: datetime


def _tr_content(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "question": row["question"],
        "alternatives": list(row["alternatives"] or []),
        "answer": row["answer"],
        "buttons": [dict(b) for b in row["buttons"] or []],
        "links": [dict(link) for link in row["links"] or []],
    }


def _entry_data(row: dict[str, Any], trs: list[dict[str, Any]]) -> EntryData:
    translations = {
        t["language"]: TranslationData(
            language=t["language"],
            question=t["question"],
            answer=t["answer"],
            alternatives=list(t["alternatives"] or []),
            buttons=[dict(b) for b in t["buttons"] or []],
            links=[dict(link) for link in t["links"] or []],
        )
        for t in sorted(trs, key=lambda t: (t["language"] != row["language"], t["language"]))
    }
    return EntryData(
        key=row["key"],
        language=row["language"],
        translations=translations,
        tags=list(row["tags"] or []),
        category=row["category"],
        image_url=row["image_url"],
        active=bool(row["active"]),
    )


_ENTRY_COLS = (
    KbEntry.id,
    KbEntry.key,
    KbEntry.language,
    KbEntry.category,
    KbEntry.tags,
    KbEntry.image_url,
    KbEntry.active,
    KbEntry.updated_at,
)
_TR_COLS = (
    KbTranslation.id,
    KbTranslation.entry_id,
    KbTranslation.language,
    KbTranslation.question,
    KbTranslation.alternatives,
    KbTranslation.answer,
    KbTranslation.buttons,
    KbTranslation.links,
)


class KnowledgeStore:
    """Reads and writes knowledge-base entries, feedback and unanswered questions."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ reading
    async def _load(
        self, session: Any, *, keys: Sequence[str] | None = None, active_only: bool = False
    ) -> tuple[dict[str, dict[str, Any]], dict[int, list[dict[str, Any]]]]:
        q = select(*_ENTRY_COLS).order_by(KbEntry.key)
        if active_only:
            q = q.where(KbEntry.active.is_(True))
        if keys is not None:
            q = q.where(KbEntry.key.in_(list(keys)))
        entries = {r["key"]: dict(r) for r in (await session.execute(q)).mappings()}
        trq = select(*_TR_COLS)
        if keys is not None or active_only:
            trq = trq.join(KbEntry, KbEntry.id == KbTranslation.entry_id)
            if active_only:
                trq = trq.where(KbEntry.active.is_(True))
            if keys is not None:
                trq = trq.where(KbEntry.key.in_(list(keys)))
        trs: dict[int, list[dict[str, Any]]] = {}
        for r in (await session.execute(trq)).mappings():
            trs.setdefault(r["entry_id"], []).append(dict(r))
        return entries, trs

    async def all_entries(self, *, active_only: bool = False) -> list[EntryData]:
        """Every entry (sorted by key), with its translations."""
        async with self.db.session() as session:
            entries, trs = await self._load(session, active_only=active_only)
        return [_entry_data(e, trs.get(e["id"], [])) for e in entries.values()]

    async def get(self, key: str) -> EntryData | None:
        """One entry by key."""
        async with self.db.session() as session:
            entries, trs = await self._load(session, keys=[key])
        row = entries.get(key)
        return _entry_data(row, trs.get(row["id"], [])) if row else None

    async def count(self, *, active_only: bool = False) -> int:
        """Number of entries."""
        from sqlalchemy import func

        q = select(func.count(KbEntry.id))
        if active_only:
            q = q.where(KbEntry.active.is_(True))
        async with self.db.session() as session:
            return int((await session.execute(q)).scalar_one())

    async def list_entries(
        self,
        *,
        language: str | None = None,
        tag: str | None = None,
        search: str | None = None,
        active_only: bool = False,
    ) -> list[EntryData]:
        """Entries filtered by translation language, tag (or category) and a case-insensitive
        substring of any question, alternative or answer."""
        lang = normalise_language_code(language) if language else None
        needle = search.casefold().strip() if search else None
        out = []
        for entry in await self.all_entries(active_only=active_only):
            if lang and lang not in entry.translations:
                continue
            if tag and tag not in entry.tags and tag != entry.category:
                continue
            if needle:
                trs = (
                    [entry.translations[lang]] if lang else list(entry.translations.values())
                )
                hay = " ".join(
                    " ".join([t.question, t.answer, *t.alternatives]) for t in trs
                ) + " " + entry.key
                if needle not in hay.casefold():
                    continue
            out.append(entry)
        return out

    # ------------------------------------------------------------------ import
    async def import_entries(
        self,
        entries: Sequence[EntryData],
        *,
        replace: bool = False,
        dry_run: bool = False,
    ) -> ImportStats:
        """Add new entries, update changed ones and count unchanged ones, in one
        transaction. With ``replace``, active entries missing from ``entries`` are
        deactivated. With ``dry_run`` nothing is written."""
        stats = ImportStats()
        now = utcnow()
        async with self.db.session() as session:
            existing, trs = await self._load(session)
            new_entries: list[EntryData] = []
            entry_updates: list[dict[str, Any]] = []
            tr_updates: list[dict[str, Any]] = []
            tr_inserts: list[dict[str, Any]] = []
            for entry in entries:
                row = existing.get(entry.key)
                if row is None:
                    new_entries.append(entry)
                    stats.added += 1
                    stats.added_keys.append(entry.key)
                    continue
                changed = False
                values: dict[str, Any] = {}
                for name in ENTRY_LEVEL_FIELDS:
                    if name not in entry.provided:
                        continue
                    value = getattr(entry, name)
                    if name == "active" and value is None:
                        continue
                    if name == "tags":
                        value = list(value)
                    if row[name] != value:
                        values[name] = value
                stored = {t["language"]: t for t in trs.get(row["id"], [])}
                langs = set(stored) | set(entry.translations)
                if entry.language != row["language"] and (
                    entry.language_explicit or row["language"] not in langs
                ):
                    values["language"] = entry.language
                for lang, tr in entry.translations.items():
                    old = stored.get(lang)
                    content = tr.content()
                    if old is None:
                        tr_inserts.append(
                            {"entry_id": row["id"], "language": lang, "updated_at": now,
                             **content}
                        )
                        changed = True
                        continue
                    before = _tr_content(old)
                    after = dict(before)
                    after["question"] = content["question"]
                    after["answer"] = content["answer"]
                    for name in tr.provided:
                        after[name] = content[name]
                    if after != before:
                        tr_updates.append({"id": old["id"], "updated_at": now, **after})
                        changed = True
                if values:
                    changed = True
                if changed:
                    entry_updates.append({"id": row["id"], "updated_at": now, **values})
                    stats.updated += 1
                    stats.updated_keys.append(entry.key)
                else:
                    stats.unchanged += 1
            if replace:
                keep = {e.key for e in entries}
                for key, row in existing.items():
                    if key not in keep and row["active"]:
                        stats.deactivated += 1
                        stats.deactivated_keys.append(key)
                        entry_updates.append({"id": row["id"], "active": False, "updated_at": now})
            if dry_run:
                return stats
            if new_entries:
                await self._insert_new(session, new_entries, now)
            # ORM bulk UPDATE by primary key needs the same keys in every row: group them.
            for group in _group_by_keys(entry_updates):
                await session.execute(update(KbEntry), group)
            for group in _group_by_keys(tr_updates):
                await session.execute(update(KbTranslation), group)
            if tr_inserts:
                await session.execute(insert(KbTranslation), tr_inserts)
        return stats

    async def _insert_new(self, session: Any, entries: list[EntryData], now: datetime) -> None:
        rows = [
            {
                "key": e.key,
                "language": e.language,
                "category": e.category,
                "tags": list(e.tags),
                "image_url": e.image_url,
                "active": True if e.active is None else e.active,
                "created_at": now,
                "updated_at": now,
            }
            for e in entries
        ]
        ids: dict[str, int] = {}
        for start in range(0, len(rows), 1000):
            result = await session.execute(
                insert(KbEntry).returning(KbEntry.id, KbEntry.key, sort_by_parameter_order=True),
                rows[start : start + 1000],
            )
            ids.update({key: id_ for id_, key in result.all()})
        tr_rows = [
            {"entry_id": ids[e.key], "language": lang, "updated_at": now, **tr.content()}
            for e in entries
            for lang, tr in e.translations.items()
        ]
        for start in range(0, len(tr_rows), 2000):
            await session.execute(insert(KbTranslation), tr_rows[start : start + 2000])

    # ------------------------------------------------------------------ editing
    async def add(self, entry: EntryData) -> None:
        """Add a new entry; :class:`StoreError` when the key exists or a value is bad."""
        problems = check_entry(entry)
        if problems:
            raise StoreError("; ".join(problems))
        if await self.get(entry.key) is not None:
            raise StoreError(f"entry {entry.key!r} already exists (use 'kb edit')")
        await self.import_entries([entry])

    async def edit(
        self,
        key: str,
        *,
        language: str | None = None,
        question: str | None = None,
        answer: str | None = None,
        alternatives: list[str] | None = None,
        buttons: list[dict[str, str]] | None = None,
        links: list[dict[str, str]] | None = None,
        tags: list[str] | None = None,
        category: str | None = None,
        image_url: str | None = None,
        primary: bool = False,
    ) -> EntryData:
        """Change an entry. Translation fields apply to ``language`` (default: the entry's
        primary language); a new language needs both a question and an answer. ``primary``
        makes ``language`` the entry's primary language. Returns the updated entry."""
        entry = await self.get(key)
        if entry is None:
            raise StoreError(f"no entry {key!r}")
        lang = entry.language
        if language is not None:
            norm = normalise_language_code(language)
            if norm is None:
                raise StoreError(f"bad language code {language!r} (use ja, en or zh)")
            lang = norm
        tr = entry.translations.get(lang)
        touches_tr = any(
            v is not None for v in (question, answer, alternatives, buttons, links)
        )
        if tr is None and touches_tr:
            if not question or not answer:
                raise StoreError(
                    f"{key!r} has no {lang} translation yet: give both --question and --answer"
                )
            tr = TranslationData(language=lang, question=question, answer=answer)
        if tr is not None:
            tr = replace(
                tr,
                question=question.strip() if question is not None else tr.question,
                answer=answer.strip() if answer is not None else tr.answer,
                alternatives=[a.strip() for a in alternatives if a.strip()]
                if alternatives is not None
                else tr.alternatives,
                buttons=buttons if buttons is not None else tr.buttons,
                links=links if links is not None else tr.links,
            )
            entry.translations[lang] = tr
        if tags is not None:
            entry.tags = [t.strip() for t in tags if t.strip()]
        if category is not None:
            entry.category = category.strip() or None
        if image_url is not None:
            entry.image_url = image_url.strip() or None
        if primary:
            if lang not in entry.translations:
                raise StoreError(f"{key!r} has no {lang} translation to make primary")
            entry.language = lang
        problems = check_entry(entry)
        if problems:
            raise StoreError("; ".join(problems))
        await self.import_entries([entry])
        return entry

    async def delete(self, key: str) -> bool:
        """Delete an entry and its translations; False when there is no such key."""
        async with self.db.session() as session:
            result = await session.execute(delete(KbEntry).where(KbEntry.key == key))
            return bool(result.rowcount)

    async def set_active(self, key: str, active: bool) -> bool:
        """Activate or deactivate an entry; False when there is no such key."""
        async with self.db.session() as session:
            result = await session.execute(
                update(KbEntry)
                .where(KbEntry.key == key)
                .values(active=active, updated_at=utcnow())
            )
            return bool(result.rowcount)

    async def delete_translation(self, key: str, language: str) -> bool:
        """Remove one translation (not the primary one)."""
        entry = await self.get(key)
        lang = normalise_language_code(language)
        if entry is None or lang is None or lang not in entry.translations:
            return False
        if lang == entry.language:
            raise StoreError(f"{lang} is the primary language of {key!r}; cannot remove it")
        async with self.db.session() as session:
            entry_id = (
                await session.execute(select(KbEntry.id).where(KbEntry.key == key))
            ).scalar_one()
            await session.execute(
                delete(KbTranslation).where(
                    KbTranslation.entry_id == entry_id, KbTranslation.language == lang
                )
            )
            await session.execute(
                update(KbEntry).where(KbEntry.id == entry_id).values(updated_at=utcnow())
            )
        return True

    # ------------------------------------------------------------------ feedback / gaps
    async def add_feedback(
        self, *, entry_key: str, question: str, helpful: bool, contact_id: int | None
    ) -> None:
        """Store a "was this helpful?" vote."""
        async with self.db.session() as session:
            session.add(
                KbFeedback(
                    entry_key=entry_key,
                    question=question[:4000],
                    helpful=helpful,
                    contact_id=contact_id,
                )
            )

    async def add_unanswered(
        self,
        *,
        question: str,
        language: str | None,
        contact_id: int | None,
        decision: str,
        confidence: float,
    ) -> None:
        """Store a question the bot did not answer outright."""
        async with self.db.session() as session:
            session.add(
                KbUnanswered(
                    text=question[:4000],
                    language=language,
                    contact_id=contact_id,
                    decision=decision[:16],
                    confidence=float(confidence),
                )
            )

    async def feedback_since(
        self, since: datetime | None = None, *, helpful: bool | None = None
    ) -> list[FeedbackRow]:
        """Feedback votes (optionally only helpful / unhelpful ones) since ``since``."""
        q = select(KbFeedback).order_by(KbFeedback.created_at)
        if since is not None:
            q = q.where(KbFeedback.created_at >= since)
        if helpful is not None:
            q = q.where(KbFeedback.helpful.is_(helpful))
        async with self.db.session() as session:
            rows = (await session.execute(q)).scalars().all()
        return [
            FeedbackRow(r.entry_key, r.question, r.helpful, r.contact_id, r.created_at)
            for r in rows
        ]

    async def unanswered_since(self, since: datetime | None = None) -> list[UnansweredRow]:
        """Unanswered questions since ``since``."""
        q = select(KbUnanswered).order_by(KbUnanswered.created_at)
        if since is not None:
            q = q.where(KbUnanswered.created_at >= since)
        async with self.db.session() as session:
            rows = (await session.execute(q)).scalars().all()
        return [
            UnansweredRow(r.text, r.language, r.contact_id, r.decision, r.confidence, r.created_at)
            for r in rows
        ]


def _group_by_keys(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return list(groups.values())


def check_entry(entry: EntryData) -> list[str]:
    """Problems with an entry built in code or from CLI arguments (empty list = fine)."""
    problems: list[str] = []
    if not entry.key or len(entry.key) > 128 or not _KEY_RE.match(entry.key):
        problems.append(f"bad id {entry.key!r}: use letters, digits and - _ . : / @ +")
    if normalise_language_code(entry.language) != entry.language:
        problems.append(f"bad language code {entry.language!r} (use ja, en or zh)")
    if not entry.translations:
        problems.append("an entry needs at least one translation")
    elif entry.language not in entry.translations:
        problems.append(f"primary language {entry.language} has no translation")
    for lang, tr in entry.translations.items():
        if normalise_language_code(lang) != lang:
            problems.append(f"bad language code {lang!r} (use ja, en or zh)")
        if not tr.question.strip():
            problems.append(f"empty question ({lang})")
        if not tr.answer.strip():
            problems.append(f"empty answer ({lang})")
        buttons, bad = validate_buttons(tr.buttons)
        problems += [f"malformed buttons ({lang}): {p}" for p in bad]
        tr.buttons = buttons
        links, bad = validate_links(tr.links)
        problems += [f"malformed links ({lang}): {p}" for p in bad]
        tr.links = links
    if entry.image_url and not re.match(r"^https?://\S+$", entry.image_url):
        problems.append(f"bad image url {entry.image_url!r}")
    return problems


__all__ = [
    "FeedbackRow",
    "ImportStats",
    "Issue",
    "KnowledgeStore",
    "StoreError",
    "UnansweredRow",
    "check_entry",
]
