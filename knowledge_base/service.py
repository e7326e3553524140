"""The knowledge-base service: answers customers' questions from the stored entries in
Japanese, Chinese or English, suggests close entries, or says honestly that a person
should take over.

Callers look at :attr:`Answer.intent` first (greetings, thanks, "let me talk to a person",
complaints...: the conversation layer handles those) and then at :attr:`Answer.kind`.
CPU-bound work (embedding, search, training) runs in worker threads; the event loop is
never blocked and concurrent callers are safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import case, func, select

from config.settings import KnowledgeBaseSettings
from knowledge_base.content import EntryData, read_content
from knowledge_base.decision import (
    Decision,
    DecisionKind,
    DecisionPolicy,
    LogisticCalibrator,
    Thresholds,
    default_calibrator,
    default_thresholds,
)
from knowledge_base.embedder import Embedder, make_embedder
from knowledge_base.evaluation import load_queries_jsonl
from knowledge_base.intents import IntentClassifier, IntentPrediction, load_rasa_nlu
from knowledge_base.language import (
    choose_reply_language,
    normalise_language_code,
    script_counts,
)
from knowledge_base.retrieval import Document, Hit, HybridRetriever, SyncStats
from knowledge_base.store import KnowledgeStore
from models.db import Database
from models.knowledge import KbEntry, KbTranslation

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).parent
SAMPLE_KB = PACKAGE_DIR / "sample" / "cosmetics.yaml"
SAMPLE_VALIDATION = PACKAGE_DIR / "sample" / "validation.jsonl"
SAMPLE_TEST = PACKAGE_DIR / "sample" / "test.jsonl"
NLU_FILE = PACKAGE_DIR / "nlu" / "intents.yml"

#: Questions longer than this are cut before embedding (the retriever cuts further).
MAX_QUESTION_CHARS = 1000
#: Intents the conversation layer answers itself; pure small talk skips retrieval.
SMALL_TALK_INTENTS = frozenset({"greet", "thanks", "goodbye", "affirm", "deny", "bot_challenge"})
#: Intents that route the conversation (retrieval still runs).
ROUTING_INTENTS = frozenset({"request_human", "complaint", "coupon_inquiry", "order_status"})
#: Intent confidence needed to report an intent / to treat a short text as small talk.
INTENT_THRESHOLD = 0.5
SMALL_TALK_THRESHOLD = 0.6
_CLASSIFIER_VERSION = "1"
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass
class AnswerEntry:
    """An entry's content in the language it is shown in."""

    key: str
    language: str
    question: str
    answer: str
    buttons: list[dict[str, str]] = field(default_factory=list)
    links: list[dict[str, str]] = field(default_factory=list)
    image_url: str | None = None


@dataclass
class Answer:
    """What the knowledge base says about a question.

    ``kind`` is ANSWER (``entry`` is set), SUGGEST (``suggestions`` holds 2-3 entries to
    offer) or HANDOFF (a person should answer; ``reason`` says why when it is not just low
    confidence: ``"empty"``, ``"no_text"``, ``"binary"``, ``"small_talk"``, ``"not_ready"``,
    ``"error"``). ``language`` is the reply language; ``hits`` are the ranked retrieval
    hits (keys and scores); ``intent`` is the small-talk/routing intent when the classifier
    is confident (``None`` otherwise).
    """

    kind: DecisionKind
    confidence: float
    entry: AnswerEntry | None
    suggestions: list[AnswerEntry]
    language: str
    hits: list[Hit] = field(default_factory=list)
    intent: IntentPrediction | None = None
    reason: str | None = None
    truncated: bool = False


def entry_document(entry: EntryData) -> Document:
    """The retrieval document of an entry: questions and alternatives of every language
    (so a question in one language can match an entry written in another)."""
    texts: list[str] = []
    for tr in sorted(
        entry.translations.values(), key=lambda t: (t.language != entry.language, t.language)
    ):
        texts.append(tr.question)
        texts.extend(tr.alternatives)
    return Document(
        key=entry.key, texts=tuple(texts), lang=entry.language, answer=entry.primary.answer
    )


def answer_entry(entry: EntryData, language: str) -> AnswerEntry:
    """The entry shown in ``language``; without that translation: English, then the
    primary language."""
    tr = (
        entry.translations.get(language)
        or entry.translations.get("en")
        or entry.translations.get(entry.language)
        or next(iter(entry.translations.values()))
    )
    return AnswerEntry(
        key=entry.key,
        language=tr.language,
        question=tr.question,
        answer=tr.answer,
        buttons=[dict(b) for b in tr.buttons],
        links=[dict(link) for link in tr.links],
        image_url=entry.image_url,
    )


def clean_question(text: Any) -> tuple[str, str | None, bool]:
    """(cleaned text, hand-off reason or None, truncated?) for raw customer input."""
    if not isinstance(text, str):
        if isinstance(text, bytes):
            return "", "binary", False
        text = "" if text is None else str(text)
    truncated = len(text) > MAX_QUESTION_CHARS
    text = text[: MAX_QUESTION_CHARS * 2]
    controls = len(_CONTROL_RE.findall(text)) + text.count("\ufffd")
    if text and controls > max(3, len(text) // 10):
        return "", "binary", truncated
    text = _CONTROL_RE.sub(" ", text)
    text = unicodedata.normalize("NFC", " ".join(text.split()))[:MAX_QUESTION_CHARS]
    if not text:
        return "", "empty", truncated
    if not any(unicodedata.category(c)[0] in ("L", "N") for c in text):
        return text, "no_text", truncated
    return text, None, truncated


#: Attempts to instruct the bot ("ignore all previous instructions", "reveal your system
#: prompt"...). There is no language model to fool, but a clause of such a message can sit
#: close to a real entry ("...give everyone a discount code"), and answering it would
#: look like the bot playing along: these are handed off instead.
_INSTRUCTIONS_RE = re.compile(
    r"\b(?:ignore|disregard|forget)\b.{0,30}\b(?:previous|prior|above|earlier|your)\b"
    r".{0,20}\b(?:instructions?|prompts?|rules)\b"
    r"|\bsystem prompt\b|\byou are now\b"
    r"|(?:以前|前|上記|これまで)の(?:指示|命令|プロンプト)を(?:無視|忘れ)|システムプロンプト"
    r"|(?:忽略|无视|忘记)(?:之前|以上|先前|所有)的?(?:指令|指示|提示)|系统提示",
    re.IGNORECASE,
)


def looks_like_instructions(text: str) -> bool:
    """Whether ``text`` tries to give the bot instructions (prompt-injection phrasing)."""
    return bool(_INSTRUCTIONS_RE.search(text))


def _is_short(text: str) -> bool:
    kana, han, _latin, words = script_counts(text)
    return words <= 6 and kana + han <= 16


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "embedder"


def _file_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


class KnowledgeService:
    """Answers questions from the knowledge base (see the module docstring)."""

    def __init__(
        self,
        *,
        db: Database,
        settings: KnowledgeBaseSettings,
        embedder: Embedder | None = None,
        default_language: str = "ja",
        nlu_path: Path | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.store = KnowledgeStore(db)
        self.default_language = default_language
        self.data_dir = Path(settings.data_dir)
        self.nlu_path = nlu_path or NLU_FILE
        self._embedder = embedder
        self._retriever: HybridRetriever | None = None
        self._classifier: IntentClassifier | None = None
        self._policy: DecisionPolicy | None = None
        self._entries: dict[str, EntryData] = {}
        self._signature: tuple[Any, ...] | None = None
        self._lock = asyncio.Lock()
        self._ready = False
        self.thresholds_source = "defaults"
        #: What the latest index sync changed.
        self.last_sync = SyncStats()

    # ------------------------------------------------------------------ set-up
    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def policy(self) -> DecisionPolicy:
        """The answer/suggest/hand-off policy in use (after :meth:`ensure_ready`)."""
        if self._policy is None:
            raise RuntimeError("call ensure_ready() first")
        return self._policy

    @property
    def retriever(self) -> HybridRetriever:
        """The retriever over the active entries (after :meth:`ensure_ready`)."""
        if self._retriever is None:
            raise RuntimeError("call ensure_ready() first")
        return self._retriever

    async def embedder(self) -> Embedder:
        """The embedder, built on first use (loading a model takes seconds)."""
        if self._embedder is None:
            self._embedder = await asyncio.to_thread(
                make_embedder, self.settings.embedder, self.settings.model
            )
        return self._embedder

    @property
    def index_dir(self) -> Path:
        name = self._embedder.name if self._embedder is not None else "embedder"
        return self.data_dir / "index" / _safe_name(name)

    async def ensure_ready(self) -> None:
        """Import the bundled sample into an empty knowledge base (``sample = "bundled"``,
        or a file path), load or train the intent classifier, and bring the search index
        up to date with the active entries (incremental; the index is persisted under
        ``data_dir``). Cheap when already ready: it re-syncs only when entries changed."""
        async with self._lock:
            if not self._ready:
                await self._maybe_import_sample()
                embedder = await self.embedder()
                self._retriever = await asyncio.to_thread(
                    HybridRetriever, embedder=embedder, index_dir=self.index_dir
                )
                await self._sync()
                self._classifier = await asyncio.to_thread(self._load_or_train_classifier)
                self._policy = await asyncio.to_thread(self._make_policy)
                self._ready = True
                return
            if await self._kb_signature() != self._signature:
                await self._sync()

    async def reload(self) -> SyncStats:
        """Re-read the active entries and update the index (after entries changed)."""
        if not self._ready:
            await self.ensure_ready()
        async with self._lock:
            return await self._sync()

    async def _kb_signature(self) -> tuple[Any, ...]:
        async with self.db.session() as session:
            row = (
                await session.execute(
                    select(
                        func.count(KbEntry.id),
                        func.max(KbEntry.updated_at),
                        func.sum(case((KbEntry.active.is_(True), 1), else_=0)),
                    )
                )
            ).one()
            tr = (
                await session.execute(
                    select(func.count(KbTranslation.id), func.max(KbTranslation.updated_at))
                )
            ).one()
        return (*tuple(row), *tuple(tr))

    async def _sync(self) -> SyncStats:
        signature = await self._kb_signature()
        entries = await self.store.all_entries(active_only=True)
        docs = [entry_document(e) for e in entries]
        assert self._retriever is not None
        stats = await asyncio.to_thread(self._retriever.sync, docs)
        self._entries = {e.key: e for e in entries}
        self._signature = signature
        self.last_sync = stats
        if stats.added or stats.updated or stats.removed:
            log.info(
                "knowledge base index: %d added, %d updated, %d removed, %d unchanged",
                stats.added,
                stats.updated,
                stats.removed,
                stats.unchanged,
            )
        return stats

    def _sample_path(self) -> Path | None:
        sample = (self.settings.sample or "").strip()
        if not sample or sample.lower() in ("none", "off", "false", "no"):
            return None
        if sample.lower() == "bundled":
            return SAMPLE_KB
        return Path(sample)

    async def _maybe_import_sample(self) -> None:
        path = self._sample_path()
        if path is None or await self.store.count() > 0:
            return
        result = await asyncio.to_thread(read_content, path)
        if not result.ok:
            raise ValueError(f"sample knowledge base {path} is invalid:\n{result.report()}")
        stats = await self.store.import_entries(result.entries)
        log.info("imported sample knowledge base %s: %s", path, stats.summary())

    # ------------------------------------------------------------------ intents
    def _classifier_dir(self, embedder: Embedder) -> tuple[Path, str]:
        text = self.nlu_path.read_text(encoding="utf-8")
        digest = _file_hash(text, embedder.name, _CLASSIFIER_VERSION)
        return self.data_dir / "intents" / f"{_safe_name(embedder.name)}-{digest}", text

    def _load_or_train_classifier(self) -> IntentClassifier | None:
        if not self.nlu_path.exists():
            log.warning("no NLU training data at %s: intents disabled", self.nlu_path)
            return None
        assert self._embedder is not None
        path, _ = self._classifier_dir(self._embedder)
        if (path / "config.json").exists():
            try:
                return IntentClassifier.load(path, embedder=self._embedder)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("retraining intent classifier (%s)", exc)
        return self.train_classifier()

    def train_classifier(self) -> IntentClassifier:
        """Train the intent classifier on the NLU data and cache it under ``data_dir``."""
        assert self._embedder is not None, "embedder not built"
        path, _ = self._classifier_dir(self._embedder)
        examples = load_rasa_nlu(self.nlu_path)
        clf = IntentClassifier(embedder=self._embedder, oos_threshold=INTENT_THRESHOLD)
        clf.fit(examples)
        try:
            clf.save(path)
        except OSError as exc:  # a read-only data dir should not stop the bot
            log.warning("cannot cache the intent classifier in %s: %s", path, exc)
        return clf

    async def classify_intent(self, text: str) -> IntentPrediction:
        """The small-talk/routing intent of ``text`` (``intent=None`` when unsure)."""
        if not self._ready:
            await self.ensure_ready()
        clean, reason, _ = clean_question(text)
        if reason is not None or self._classifier is None:
            return IntentPrediction(None, 0.0, [])
        return await asyncio.to_thread(self._classifier.predict, clean)

    # ------------------------------------------------------------------ thresholds
    @property
    def thresholds_file(self) -> Path:
        return self.data_dir / "thresholds.json"

    def _make_policy(self) -> DecisionPolicy:
        assert self._embedder is not None
        name = self._embedder.name
        base = default_thresholds(name)
        calibrator: Any = default_calibrator(name)
        self.thresholds_source = "defaults"
        saved = self._saved_thresholds().get(name)
        if saved is None and self._sample_path() == SAMPLE_KB and SAMPLE_VALIDATION.exists():
            saved = self._tune_on_sample()
        if saved is not None:
            base = Thresholds.from_dict(saved)
            if "calibrator" in saved:
                calibrator = LogisticCalibrator(**saved["calibrator"])
            self.thresholds_source = str(saved.get("source", self.thresholds_file))
        answer = self.settings.answer_threshold
        suggest = self.settings.suggest_threshold
        if answer is not None or suggest is not None:
            base = base.with_scores(answer, suggest)
            self.thresholds_source = "settings"
        return DecisionPolicy(base, calibrator)

    def _saved_thresholds(self) -> dict[str, Any]:
        try:
            data = json.loads(self.thresholds_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_policy(self, policy: DecisionPolicy, *, source: str) -> None:
        """Remember tuned thresholds for the current embedder (used on next start)."""
        assert self._embedder is not None
        data = self._saved_thresholds()
        row: dict[str, Any] = {**policy.thresholds.as_dict(), "source": source}
        cal = policy.calibrator
        if isinstance(cal, LogisticCalibrator):
            row["calibrator"] = {
                "a_score": cal.a_score,
                "a_margin": cal.a_margin,
                "bias": cal.bias,
            }
        data[self._embedder.name] = row
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.thresholds_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self.thresholds_file)

    def _tune_on_sample(self) -> dict[str, Any] | None:
        """Thresholds tuned on the bundled sample's validation questions (only while the
        knowledge base is the bundled sample: every validation label must exist)."""
        assert self._retriever is not None
        val = load_queries_jsonl(SAMPLE_VALIDATION, "val")
        if not val or any(label is not None and label not in self._entries for _, label in val):
            return None
        policy = DecisionPolicy.tune(self._retriever, val)
        source = "bundled sample validation.jsonl"
        try:
            self.save_policy(policy, source=source)
        except OSError as exc:
            log.warning("cannot save tuned thresholds: %s", exc)
        out: dict[str, Any] = {**policy.thresholds.as_dict(), "source": source}
        if isinstance(policy.calibrator, LogisticCalibrator):
            c = policy.calibrator
            out["calibrator"] = {"a_score": c.a_score, "a_margin": c.a_margin, "bias": c.bias}
        return out

    # ------------------------------------------------------------------ answering
    def entry(self, key: str) -> EntryData | None:
        """An active entry from the current snapshot."""
        return self._entries.get(key)

    async def get_entry(self, key: str, *, language: str | None = None) -> AnswerEntry | None:
        """An active entry shown in ``language`` (e.g. a suggestion the customer tapped);
        ``None`` for an unknown or inactive key."""
        lang = normalise_language_code(language) or self.default_language
        entry = self._entries.get(key) if self._ready else None
        if entry is None:
            entry = await self.store.get(key)
            if entry is None or not entry.active:
                return None
        return answer_entry(entry, lang)

    async def answer(self, question: str, *, language: str | None = None) -> Answer:
        """Answer a customer's question. ``language`` is the customer's platform language
        code (``ja``, ``en``, ``zh``, ``zh-hans``...); the reply language follows it unless
        the text is clearly in another language. Never raises for bad input."""
        text, reason, truncated = clean_question(question)
        reply_lang = choose_reply_language(text, language, self.default_language)
        if reason is None and looks_like_instructions(text):
            reason = "instructions"
        if reason is not None:
            return Answer(
                DecisionKind.HANDOFF, 0.0, None, [], reply_lang, reason=reason,
                truncated=truncated,
            )
        if not self._ready:
            try:
                await self.ensure_ready()
            except Exception:  # a broken knowledge base must not break the conversation
                log.exception("knowledge base not ready")
                return Answer(
                    DecisionKind.HANDOFF, 0.0, None, [], reply_lang, reason="not_ready",
                    truncated=truncated,
                )
        intent: IntentPrediction | None = None
        try:
            if self._classifier is not None:
                pred = await asyncio.to_thread(self._classifier.predict, text)
                if pred.intent is not None and pred.confidence >= INTENT_THRESHOLD:
                    intent = pred
        except Exception:
            log.exception("intent classification failed")
        if (
            intent is not None
            and intent.intent in SMALL_TALK_INTENTS
            and intent.confidence >= SMALL_TALK_THRESHOLD
            and _is_short(text)
        ):
            return Answer(
                DecisionKind.HANDOFF, 0.0, None, [], reply_lang, intent=intent,
                reason="small_talk", truncated=truncated,
            )
        try:
            hits, decision = await asyncio.to_thread(self._search, text)
        except Exception:
            log.exception("knowledge base search failed")
            return Answer(
                DecisionKind.HANDOFF, 0.0, None, [], reply_lang, intent=intent, reason="error",
                truncated=truncated,
            )
        return self._build(decision, hits, reply_lang, intent, truncated)

    def _search(self, text: str) -> tuple[list[Hit], Decision]:
        assert self._retriever is not None and self._policy is not None
        hits = [h for h in self._retriever.search(text, k=5) if h.key in self._entries]
        return hits, self._policy.decide(hits)

    def _build(
        self,
        decision: Decision,
        hits: list[Hit],
        lang: str,
        intent: IntentPrediction | None,
        truncated: bool,
    ) -> Answer:
        entry = None
        suggestions: list[AnswerEntry] = []
        if decision.kind == DecisionKind.ANSWER and hits:
            entry = answer_entry(self._entries[hits[0].key], lang)
        elif decision.kind == DecisionKind.SUGGEST:
            suggestions = [
                answer_entry(self._entries[h.key], lang)
                for h in decision.suggestions
                if h.key in self._entries
            ]
        return Answer(
            decision.kind,
            float(decision.confidence),
            entry,
            suggestions,
            lang,
            hits=hits,
            intent=intent,
            truncated=truncated,
        )

    # ------------------------------------------------------------------ feedback
    async def record_feedback(
        self, *, entry_key: str, question: str, helpful: bool, contact_id: int | None
    ) -> None:
        """Store a customer's "was this helpful?" vote on an answer."""
        await self.store.add_feedback(
            entry_key=entry_key, question=question, helpful=helpful, contact_id=contact_id
        )

    async def record_unanswered(
        self,
        *,
        question: str,
        language: str,
        contact_id: int | None,
        confidence: float,
        kind: str,
    ) -> None:
        """Store a question the bot did not answer outright (for ``kb gaps``)."""
        text, _, _ = clean_question(question)
        if not text:
            return
        await self.store.add_unanswered(
            question=text,
            language=language,
            contact_id=contact_id,
            decision=str(kind),
            confidence=confidence,
        )


__all__ = [
    "Answer",
    "AnswerEntry",
    "KnowledgeService",
    "answer_entry",
    "clean_question",
    "entry_document",
]
