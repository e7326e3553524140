"""Hybrid (dense + BM25) retrieval over knowledge-base documents.

Each document has one or more question texts (the question and its alternative
phrasings, optionally the answer). Every text is embedded and indexed on its own;
a search fuses the dense cosine and the normalised BM25 score per text and returns
one hit per document (its best text). The index is incremental: :meth:`sync` only
embeds documents whose fingerprint changed, and persists vectors plus fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .embedder import Embedder, script_layout, search_vectors
from .index import IndexKind, ScriptAwareIndex, VectorIndex, index_exists, load_index, make_index
from .lexical import BM25Index
from .textnorm import clean_text, has_content, normalize, tokenize

__all__ = ["Document", "Fusion", "Hit", "HybridRetriever", "SyncStats"]

log = logging.getLogger(__name__)

_META = "meta.json"
_META_VERSION = 1


@dataclass(frozen=True)
class Document:
    """A knowledge-base entry as seen by retrieval: a stable key and the texts that
    should match it (question first, then alternative phrasings)."""

    key: str
    texts: tuple[str, ...]
    lang: str | None = None
    #: Optional answer text; indexed only when ``Fusion.answer_weight > 0``.
    answer: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError("Document.key must be a non-empty string")
        texts = (self.texts,) if isinstance(self.texts, str) else tuple(self.texts)
        seen: set[str] = set()
        clean: list[str] = []
        for text in texts:
            t = clean_text(text, max_chars=4000)
            if t and t not in seen:
                seen.add(t)
                clean.append(t)
        object.__setattr__(self, "texts", tuple(clean))
        if self.answer is not None:
            object.__setattr__(self, "answer", clean_text(self.answer, max_chars=4000) or None)

    @property
    def fingerprint(self) -> str:
        """Stable hash of the matchable content (texts and answer)."""
        payload = json.dumps([list(self.texts), self.answer], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]

    def fingerprint_for(self, embedder_name: str, *, with_answer: bool = False) -> str:
        """Fingerprint of the content as embedded by ``embedder_name``."""
        payload = json.dumps(
            [embedder_name, list(self.texts), self.answer if with_answer else None],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@dataclass
class Hit:
    """One retrieved document: fused score (0..1, comparable across queries and used
    by the decision policy), its dense and lexical components, and the best text."""

    key: str
    score: float
    dense: float
    lexical: float
    matched_text: str
    lang: str | None = None


@dataclass
class SyncStats:
    """What a :meth:`HybridRetriever.sync` changed."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class Fusion:
    """How dense and lexical scores combine into the fused score of a text.

    ``mode="boost"`` (default): ``score = cosine + lexical_weight * bm25 * (1 - cosine)``.
    Lexical overlap can only raise the dense score, so a cross-lingual match (no shared
    words, BM25 = 0) keeps its plain cosine instead of being diluted.
    ``mode="convex"``: ``(dense_weight * cosine + lexical_weight * bm25) / (sum)``.
    Answer texts (if indexed) count with ``answer_weight`` times their fused score."""

    dense_weight: float = 1.0
    lexical_weight: float = 0.3
    candidates: int = 64
    answer_weight: float = 0.0
    mode: Literal["boost", "convex"] = "boost"

    def combine(self, dense: float, lexical: float) -> float:
        """The fused score of one text."""
        if self.mode == "boost":
            return dense + self.lexical_weight * lexical * (1.0 - dense)
        return (self.dense_weight * dense + self.lexical_weight * lexical) / (
            self.dense_weight + self.lexical_weight
        )

    @classmethod
    def for_embedder(cls, embedder_name: str) -> Fusion:
        """Fusion weights tuned for ``embedder_name`` (``defaults.toml``, validation
        splits only); the class defaults when there is no entry."""
        from .decision import load_defaults

        table = load_defaults().get("fusion", {})
        row = table.get(embedder_name) or table.get("_fallback")
        if not row:
            return cls()
        return cls(
            dense_weight=float(row.get("dense_weight", cls.dense_weight)),
            lexical_weight=float(row.get("lexical_weight", cls.lexical_weight)),
            candidates=int(row.get("candidates", cls.candidates)),
            answer_weight=float(row.get("answer_weight", cls.answer_weight)),
            mode=str(row.get("mode", cls.mode)),  # type: ignore[arg-type]
        )

    def __post_init__(self) -> None:
        if self.dense_weight < 0 or self.lexical_weight < 0:
            raise ValueError("fusion weights must be non-negative")
        if self.dense_weight + self.lexical_weight <= 0:
            raise ValueError("at least one fusion weight must be positive")
        if self.candidates < 1:
            raise ValueError("candidates must be >= 1")
        if self.mode not in ("boost", "convex"):
            raise ValueError(f"unknown fusion mode {self.mode!r}")


@dataclass
class _Entry:
    fingerprint: str
    lang: str | None
    ids: list[int]
    texts: list[str]
    weights: list[float] = field(default_factory=list)


class HybridRetriever:
    """Dense + BM25 retriever over :class:`Document` s with incremental, persistent sync."""

    def __init__(
        self,
        *,
        embedder: Embedder,
        index_dir: Path | str | None = None,
        fusion: Fusion | None = None,
        index_kind: IndexKind = "flat",
    ) -> None:
        self.embedder = embedder
        self.fusion = fusion or Fusion.for_embedder(embedder.name)
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self.index_kind: IndexKind = index_kind
        self._lock = threading.RLock()
        self._docs: dict[str, _Entry] = {}
        self._owner: dict[int, tuple[str, int]] = {}
        self._next_id = 0
        self._vindex = self._new_index(index_kind)
        self._bm25 = BM25Index()
        self._dirty = False
        if self.index_dir is not None:
            self._load()

    def _new_index(self, kind: IndexKind) -> VectorIndex | ScriptAwareIndex:
        return make_index(self.embedder.dim, kind=kind, layout=script_layout(self.embedder))

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, key: object) -> bool:
        return key in self._docs

    def keys(self) -> list[str]:
        """Keys of the indexed documents."""
        with self._lock:
            return list(self._docs)

    @property
    def num_texts(self) -> int:
        """Number of indexed texts (vectors)."""
        return len(self._vindex)

    # ------------------------------------------------------------------ updates
    def _fp(self, doc: Document) -> str:
        with_answer = self.fusion.answer_weight > 0 and doc.answer is not None
        return doc.fingerprint_for(self.embedder.name, with_answer=with_answer)

    def _items(self, doc: Document) -> tuple[list[str], list[float]]:
        texts = list(doc.texts)
        weights = [1.0] * len(texts)
        if self.fusion.answer_weight > 0 and doc.answer:
            texts.append(doc.answer)
            weights.append(self.fusion.answer_weight)
        return texts, weights

    def sync(self, docs: Iterable[Document]) -> SyncStats:
        """Make the index hold exactly ``docs``: embed new and changed documents, drop
        documents that are no longer present, keep unchanged ones as they are."""
        incoming: dict[str, Document] = {}
        for doc in docs:
            incoming[doc.key] = doc
        with self._lock:
            gone = [key for key in self._docs if key not in incoming]
            stats = self._upsert(incoming.values(), persist=False)
            for key in gone:
                self._drop(key)
            stats.removed += len(gone)
            if gone or stats.added or stats.updated or self._dirty:
                self._persist()
            return stats

    def upsert(self, docs: Iterable[Document]) -> SyncStats:
        """Add or update ``docs`` without removing other documents."""
        with self._lock:
            return self._upsert(docs, persist=True)

    def delete(self, keys: Iterable[str]) -> int:
        """Remove documents by key; returns how many were removed."""
        with self._lock:
            n = sum(1 for key in set(keys) if self._drop(key))
            if n:
                self._persist()
            return n

    def _upsert(self, docs: Iterable[Document], *, persist: bool) -> SyncStats:
        stats = SyncStats()
        pending: list[tuple[Document, str, list[str], list[float]]] = []
        empty: list[str] = []
        for doc in docs:
            texts, weights = self._items(doc)
            if not texts:
                empty.append(doc.key)
                continue
            fp = self._fp(doc)
            old = self._docs.get(doc.key)
            if old is not None and old.fingerprint == fp:
                if old.lang != doc.lang:
                    old.lang = doc.lang
                    self._dirty = True
                stats.unchanged += 1
                continue
            pending.append((doc, fp, texts, weights))
        all_texts = [t for _, _, texts, _ in pending for t in texts]
        vectors = (
            self.embedder.embed(all_texts, kind="passage")
            if all_texts
            else np.zeros((0, self.embedder.dim), dtype=np.float32)
        )
        # embedding succeeded: now mutate state
        row = 0
        new_ids: list[int] = []
        for doc, fp, texts, weights in pending:
            if self._drop(doc.key):
                stats.updated += 1
            else:
                stats.added += 1
            ids = list(range(self._next_id, self._next_id + len(texts)))
            self._next_id += len(texts)
            self._docs[doc.key] = _Entry(fp, doc.lang, ids, texts, weights)
            for i, (vid, text) in enumerate(zip(ids, texts, strict=True)):
                self._owner[vid] = (doc.key, i)
                self._bm25.add(vid, text)
            new_ids.extend(ids)
            row += len(texts)
        if new_ids:
            self._vindex.add(new_ids, vectors)
        for key in empty:
            if self._drop(key):
                stats.removed += 1
        if persist and (stats.added or stats.updated or stats.removed or self._dirty):
            self._persist()
        return stats

    def _drop(self, key: str) -> bool:
        entry = self._docs.pop(key, None)
        if entry is None:
            return False
        self._vindex.remove(entry.ids)
        for vid in entry.ids:
            self._owner.pop(vid, None)
            self._bm25.remove(vid)
        return True

    # ------------------------------------------------------------------ search
    def search(self, query: str, k: int = 5) -> list[Hit]:
        """Best ``k`` documents for ``query`` (one hit per key, best first). Queries
        without letters or digits (empty, emoji-only, binary noise) return ``[]``."""
        if not isinstance(query, str) or k <= 0:
            return []
        text = clean_text(query)
        norm = normalize(text)
        if not norm or not has_content(norm):
            return []
        with self._lock:
            if not self._docs:
                return []
            qvec = search_vectors(self.embedder, self.embedder.embed([text], kind="query"))[0]
            n_cand = min(len(self._vindex), max(self.fusion.candidates, 4 * k))
            dscores, dids = self._vindex.search(qvec, n_cand)
            dense: dict[int, float] = {
                int(i): float(s) for s, i in zip(dscores[0], dids[0], strict=True) if i >= 0
            }
            tokens = tokenize(text)
            dense_ids = list(dense)
            lex_top, lex_extra = self._bm25.query(tokens, n_cand, dense_ids)
            lexical = dict(zip(dense_ids, lex_extra.tolist(), strict=True))
            missing = [vid for vid, _ in lex_top if vid not in dense]
            for vid, s in lex_top:
                lexical[vid] = s
            if missing:
                vecs = self._vindex.reconstruct(missing)
                for vid, s in zip(missing, (vecs @ qvec).tolist(), strict=True):
                    dense[vid] = float(s)
            return self._rank(dense, lexical, k)

    def _rank(self, dense: dict[int, float], lexical: dict[int, float], k: int) -> list[Hit]:
        fu = self.fusion
        best: dict[str, Hit] = {}
        for vid, d in dense.items():
            owner = self._owner.get(vid)
            if owner is None:
                continue
            key, ti = owner
            entry = self._docs[key]
            lx = lexical.get(vid, 0.0)
            fused = fu.combine(d, lx)
            w = entry.weights[ti] if entry.weights else 1.0
            fused *= w
            hit = best.get(key)
            if hit is None:
                best[key] = Hit(key, fused, d * w, lx * w, entry.texts[ti], entry.lang)
            else:
                if fused > hit.score:
                    hit.score = fused
                    hit.matched_text = entry.texts[ti]
                hit.dense = max(hit.dense, d * w)
                hit.lexical = max(hit.lexical, lx * w)
        hits = sorted(best.values(), key=lambda h: (-h.score, h.key))[:k]
        for h in hits:
            h.score = float(min(1.0, max(0.0, h.score)))
        return hits

    # ------------------------------------------------------------------ persistence
    def _persist(self) -> None:
        self._dirty = False
        if self.index_dir is None:
            return
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self._vindex.save(self.index_dir)
        meta = {
            "version": _META_VERSION,
            "embedder": self.embedder.name,
            "dim": self.embedder.dim,
            "next_id": self._next_id,
            "docs": {
                key: {
                    "fp": e.fingerprint,
                    "lang": e.lang,
                    "ids": e.ids,
                    "texts": e.texts,
                    "weights": e.weights,
                }
                for key, e in self._docs.items()
            },
        }
        tmp = self.index_dir / (_META + ".tmp")
        tmp.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.index_dir / _META)

    def _adopt(
        self, stored: VectorIndex | ScriptAwareIndex
    ) -> VectorIndex | ScriptAwareIndex:
        """The stored index in the layout this embedder wants: an index saved in the other
        layout (e.g. a flat one by an earlier version) is copied over, not re-embedded."""
        wanted = self._new_index(stored.kind)  # type: ignore[arg-type]
        if type(wanted) is type(stored):
            return stored
        ids = stored.ids()
        wanted.add(ids, stored.reconstruct(ids))
        self._dirty = True
        return wanted

    def _load(self) -> None:
        assert self.index_dir is not None
        meta_path = self.index_dir / _META
        if not meta_path.exists() or not index_exists(self.index_dir):
            return
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("version") != _META_VERSION:
                raise ValueError(f"unsupported index version {meta.get('version')}")
            if meta.get("embedder") != self.embedder.name or meta.get("dim") != self.embedder.dim:
                log.info(
                    "index in %s was built with %s; it will be rebuilt for %s",
                    self.index_dir,
                    meta.get("embedder"),
                    self.embedder.name,
                )
                return
            vindex = self._adopt(load_index(self.index_dir))
            docs = {
                key: _Entry(
                    d["fp"],
                    d.get("lang"),
                    list(d["ids"]),
                    list(d["texts"]),
                    list(d.get("weights") or [1.0] * len(d["ids"])),
                )
                for key, d in meta["docs"].items()
            }
            n_ids = sum(len(e.ids) for e in docs.values())
            if n_ids != len(vindex) or vindex.dim != self.embedder.dim:
                raise ValueError("vector count does not match the metadata")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            log.warning("ignoring unreadable index in %s: %s", self.index_dir, exc)
            return
        self._vindex = vindex
        self.index_kind = vindex.kind  # type: ignore[assignment]
        self._docs = docs
        self._next_id = int(meta["next_id"])
        self._owner = {}
        self._bm25 = BM25Index()
        for key, e in docs.items():
            for i, (vid, text) in enumerate(zip(e.ids, e.texts, strict=True)):
                self._owner[vid] = (key, i)
                self._bm25.add(vid, text)
