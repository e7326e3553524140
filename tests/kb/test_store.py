"""Knowledge-base storage on SQLite and PostgreSQL: atomic, idempotent imports and edits."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from knowledge_base.content import EntryData, TranslationData, parse_content, read_content
from knowledge_base.service import SAMPLE_KB
from knowledge_base.store import KnowledgeStore, StoreError
from models import Database
from models.base import utcnow


def _entry(key: str, lang: str = "en", question: str | None = None, **kw: Any) -> EntryData:
    tr = TranslationData(
        language=lang,
        question=question or f"Question about {key}?",
        answer=f"Answer about {key}.",
        alternatives=kw.pop("alternatives", []),
    )
    return EntryData(key=key, language=lang, translations={lang: tr}, **kw)


def _snapshot(entries: list[EntryData]) -> list[tuple[Any, ...]]:
    return [
        (
            e.key,
            e.language,
            e.active,
            tuple(e.tags),
            e.category,
            e.image_url,
            tuple((lang, tuple(sorted(str(tr.content()).split()))) for lang, tr in
                  sorted(e.translations.items())),
        )
        for e in entries
    ]


async def test_import_is_idempotent_and_round_trips(any_db: Database) -> None:
    store = KnowledgeStore(any_db)
    result = read_content(SAMPLE_KB)
    stats = await store.import_entries(result.entries)
    assert (stats.added, stats.updated, stats.unchanged) == (len(result.entries), 0, 0)
    stats = await store.import_entries(result.entries)
    assert stats.summary() == f"0 added, 0 updated, {len(result.entries)} unchanged"
    stored = await store.all_entries()
    assert len(stored) == len(result.entries)
    by_key = {e.key: e for e in stored}
    for entry in result.entries:
        got = by_key[entry.key]
        assert got.language == entry.language and got.active is True
        assert got.tags == entry.tags and got.category == entry.category
        for lang, tr in entry.translations.items():
            assert got.translations[lang].content() == tr.content()


async def test_changes_are_counted_and_applied(any_db: Database) -> None:
    store = KnowledgeStore(any_db)
    await store.import_entries([_entry("a"), _entry("b"), _entry("c")])
    changed = _entry("b")
    changed.translations["en"].answer = "A new answer."
    stats = await store.import_entries([_entry("a"), changed, _entry("d")])
    assert (stats.added, stats.updated, stats.unchanged) == (1, 1, 1)
    assert stats.updated_keys == ["b"] and stats.added_keys == ["d"]
    got = await store.get("b")
    assert got is not None and got.primary.answer == "A new answer."
    assert (await store.get("c")) is not None  # not in the file, not replaced


async def test_replace_deactivates_entries_missing_from_the_file(any_db: Database) -> None:
    store = KnowledgeStore(any_db)
    await store.import_entries([_entry("a"), _entry("b"), _entry("c")])
    stats = await store.import_entries([_entry("a")], replace=True)
    assert stats.deactivated == 2 and sorted(stats.deactivated_keys) == ["b", "c"]
    active = [e.key for e in await store.all_entries(active_only=True)]
    assert active == ["a"]
    stats = await store.import_entries([_entry("a")], replace=True)
    assert stats.summary() == "0 added, 0 updated, 1 unchanged"


async def test_dry_run_writes_nothing(any_db: Database) -> None:
    store = KnowledgeStore(any_db)
    await store.import_entries([_entry("a")])
    changed = _entry("a")
    changed.translations["en"].question = "Different?"
    stats = await store.import_entries([changed, _entry("b")], replace=True, dry_run=True)
    assert (stats.added, stats.updated) == (1, 1)
    assert [e.key for e in await store.all_entries()] == ["a"]
    got = await store.get("a")
    assert got is not None and got.primary.question == "Question about a?"


async def test_a_failing_import_changes_nothing(any_db: Database) -> None:
    """One transaction: when writing fails half-way, every earlier write is rolled back."""

    class Failing(KnowledgeStore):
        async def _insert_new(self, session: Any, entries: Any, now: Any) -> None:
            await super()._insert_new(session, entries, now)
            raise RuntimeError("disk full")

    store = KnowledgeStore(any_db)
    await store.import_entries([_entry("a"), _entry("b")])
    before = _snapshot(await store.all_entries())
    changed = _entry("a")
    changed.translations["en"].answer = "Changed."
    with pytest.raises(RuntimeError, match="disk full"):
        await Failing(any_db).import_entries([changed, _entry("new")], replace=True)
    assert _snapshot(await store.all_entries()) == before


async def test_fields_and_languages_absent_from_a_file_are_kept(any_db: Database) -> None:
    store = KnowledgeStore(any_db)
    full = read_content(SAMPLE_KB).entries[0]
    await store.import_entries([full])
    await store.edit(full.key, tags=["edited"], category="custom")
    # An English-only JSONL line without tags, category or alternatives.
    line = (
        f'{{"id": "{full.key}", "language": "en", "question": "Shipping price?", '
        '"answer": "550 yen."}\n'
    )
    partial = parse_content(line, "jsonl").entries
    stats = await store.import_entries(partial)
    assert stats.updated == 1
    got = await store.get(full.key)
    assert got is not None
    assert got.tags == ["edited"] and got.category == "custom"
    assert got.language == full.language  # primary kept: the file only inferred "en"
    assert set(got.translations) == {"ja", "en", "zh"}
    assert got.translations["en"].question == "Shipping price?"
    assert got.translations["en"].alternatives == full.translations["en"].alternatives
    assert got.translations["ja"].content() == full.translations["ja"].content()


async def test_editing(any_db: Database) -> None:
    store = KnowledgeStore(any_db)
    await store.add(_entry("points", tags=["membership"]))
    with pytest.raises(StoreError, match="already exists"):
        await store.add(_entry("points"))
    with pytest.raises(StoreError, match="bad id"):
        await store.add(_entry("bad key"))
    await store.edit("points", answer="1 point = 1 yen.", alternatives=["How do points work?"])
    got = await store.get("points")
    assert got is not None
    assert got.primary.answer == "1 point = 1 yen." and got.primary.alternatives == [
        "How do points work?"
    ]
    with pytest.raises(StoreError, match="give both --question and --answer"):
        await store.edit("points", language="ja", answer="1ポイント1円です。")
    await store.edit("points", language="ja", question="ポイントとは？", answer="1ポイント1円です。")
    await store.edit("points", language="ja", primary=True)
    got = await store.get("points")
    assert got is not None and got.language == "ja" and set(got.translations) == {"en", "ja"}
    with pytest.raises(StoreError, match="malformed buttons"):
        await store.edit("points", buttons=[{"text": "Go", "url": "javascript:alert(1)"}])
    with pytest.raises(StoreError, match="no entry"):
        await store.edit("nope", answer="x")
    with pytest.raises(StoreError, match="bad language code"):
        await store.edit("points", language="fr", answer="x")
    with pytest.raises(StoreError, match="primary language"):
        await store.delete_translation("points", "ja")
    assert await store.delete_translation("points", "en")
    assert await store.set_active("points", False)
    assert [e.key for e in await store.all_entries(active_only=True)] == []
    assert await store.set_active("points", True)
    assert await store.delete("points")
    assert not await store.delete("points")
    assert not await store.set_active("points", True)
    assert await store.count() == 0


async def test_list_filters(any_db: Database) -> None:
    store = KnowledgeStore(any_db)
    await store.import_entries(read_content(SAMPLE_KB).entries)
    await store.import_entries([_entry("english-only", tags=["misc"])])
    assert len(await store.list_entries(language="zh")) == await store.count() - 1
    coupons = await store.list_entries(tag="coupons")
    assert {e.key for e in coupons} >= {"coupon-how-to-use", "coupon-expired"}
    found = await store.list_entries(search="RETINOL")
    assert "retinol" in {e.key for e in found}
    found = await store.list_entries(search="返品", language="ja")
    assert "returns-policy" in {e.key for e in found}


async def test_feedback_and_unanswered(any_db: Database) -> None:
    store = KnowledgeStore(any_db)
    await store.add_feedback(entry_key="a", question="q1", helpful=True, contact_id=None)
    await store.add_feedback(entry_key="a", question="q2", helpful=False, contact_id=None)
    await store.add_unanswered(
        question="shampoo?", language="en", contact_id=None, decision="handoff", confidence=0.1
    )
    assert [f.question for f in await store.feedback_since(None, helpful=False)] == ["q2"]
    assert len(await store.feedback_since(utcnow() - timedelta(days=1))) == 2
    assert await store.feedback_since(utcnow() + timedelta(days=1)) == []
    rows = await store.unanswered_since(utcnow() - timedelta(hours=1))
    assert [(r.text, r.decision, r.language) for r in rows] == [("shampoo?", "handoff", "en")]
    assert rows[0].created_at.tzinfo is not None


async def test_ten_thousand_entries_import_in_seconds(any_db: Database) -> None:
    lines = "\n".join(
        f'{{"id": "k{i}", "language": "en", "question": "Question {i} about item {i * 7}?", '
        f'"answer": "Answer {i}.", "alternatives": ["alt {i}", "other {i}"]}}'
        for i in range(10_000)
    )
    result = parse_content(lines, "jsonl")
    assert result.ok, result.report(5)
    store = KnowledgeStore(any_db)
    start = time.perf_counter()
    stats = await store.import_entries(result.entries)
    first = time.perf_counter() - start
    assert stats.added == 10_000
    start = time.perf_counter()
    stats = await store.import_entries(result.entries)
    second = time.perf_counter() - start
    assert stats.unchanged == 10_000
    assert first < 20 and second < 10, (first, second)
