"""Okapi BM25 over character n-grams (CJK) and words (Latin scripts).

Scores can be normalised to 0..1 by dividing by the query's self-score (the BM25 score
the query would get against a document identical to itself), which makes them
comparable across queries and usable in score fusion.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from .textnorm import tokenize

__all__ = ["BM25Index"]


class BM25Index:
    """Incremental BM25 index keyed by integer ids."""

    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._slot_of: dict[int, int] = {}
        self._ids: list[int] = []  # slot -> id (-1 for a free slot)
        self._free: list[int] = []
        self._lens: list[int] = []  # slot -> token count
        self._terms: list[Counter[str] | None] = []  # slot -> term counts
        self._postings: dict[str, dict[int, int]] = {}  # term -> slot -> tf
        self._total_len = 0
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._ids_arr: np.ndarray | None = None
        self._lens_arr: np.ndarray | None = None

    # ------------------------------------------------------------------ maintenance
    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._slot_of

    def add(self, doc_id: int, text: str) -> None:
        """Index ``text`` under ``doc_id`` (replacing a previous text with that id)."""
        self.add_tokens(doc_id, tokenize(text))

    def add_tokens(self, doc_id: int, tokens: Sequence[str]) -> None:
        """Index pre-tokenised text under ``doc_id``."""
        if doc_id in self._slot_of:
            self.remove(doc_id)
        counts = Counter(tokens)
        if self._free:
            slot = self._free.pop()
            self._ids[slot] = doc_id
            self._lens[slot] = len(tokens)
            self._terms[slot] = counts
        else:
            slot = len(self._ids)
            self._ids.append(doc_id)
            self._lens.append(len(tokens))
            self._terms.append(counts)
        self._slot_of[doc_id] = slot
        self._total_len += len(tokens)
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[slot] = tf
        self._invalidate()

    def remove(self, doc_id: int) -> bool:
        """Remove ``doc_id``; returns False when it was not indexed."""
        slot = self._slot_of.pop(doc_id, None)
        if slot is None:
            return False
        counts = self._terms[slot] or Counter()
        for term in counts:
            plist = self._postings.get(term)
            if plist is not None:
                plist.pop(slot, None)
                if not plist:
                    del self._postings[term]
        self._total_len -= self._lens[slot]
        self._ids[slot] = -1
        self._lens[slot] = 0
        self._terms[slot] = None
        self._free.append(slot)
        self._invalidate()
        return True

    def _invalidate(self) -> None:
        self._cache.clear()
        self._ids_arr = None
        self._lens_arr = None

    # ------------------------------------------------------------------ scoring
    @property
    def _avgdl(self) -> float:
        n = len(self._slot_of)
        return (self._total_len / n) if n else 1.0

    def _idf(self, df: int) -> float:
        n = len(self._slot_of)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _term_weights(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        hit = self._cache.get(term)
        if hit is not None:
            return hit
        plist = self._postings.get(term)
        if not plist:
            return None
        slots = np.fromiter(plist.keys(), dtype=np.int64, count=len(plist))
        tfs = np.fromiter(plist.values(), dtype=np.float32, count=len(plist))
        if self._lens_arr is None:
            self._lens_arr = np.asarray(self._lens, dtype=np.float32)
        lens = self._lens_arr[slots]
        k1, b = self.k1, self.b
        norm = k1 * (1.0 - b + b * lens / max(self._avgdl, 1e-9))
        weights = (self._idf(len(plist)) * tfs * (k1 + 1.0) / (tfs + norm)).astype(np.float32)
        self._cache[term] = (slots, weights)
        return slots, weights

    def self_score(self, tokens: Sequence[str]) -> float:
        """BM25 score of the query against a document equal to the query (upper reference
        used for normalisation). Unknown terms count with the maximal idf."""
        counts = Counter(tokens)
        if not counts:
            return 0.0
        k1, b = self.k1, self.b
        norm = k1 * (1.0 - b + b * len(tokens) / max(self._avgdl, 1e-9))
        total = 0.0
        for term, tf in counts.items():
            df = len(self._postings.get(term, ()))
            total += self._idf(df) * tf * (k1 + 1.0) / (tf + norm)
        return total

    def _slot_scores(self, tokens: Sequence[str]) -> np.ndarray:
        scores = np.zeros(len(self._ids), dtype=np.float32)
        for term, qtf in Counter(tokens).items():
            tw = self._term_weights(term)
            if tw is None:
                continue
            slots, weights = tw
            scores[slots] += weights * qtf if qtf > 1 else weights
        return scores

    def _slot_ids(self) -> np.ndarray:
        if self._ids_arr is None:
            self._ids_arr = np.asarray(self._ids, dtype=np.int64)
        return self._ids_arr

    def search(
        self, query: str | Sequence[str], k: int = 10, *, normalized: bool = True
    ) -> list[tuple[int, float]]:
        """Top ``k`` (id, score) pairs with a positive score, best first. With
        ``normalized`` the scores are divided by the query's self-score (0..1)."""
        tokens = tokenize(query) if isinstance(query, str) else list(query)
        if not tokens or not self._slot_of or k <= 0:
            return []
        scores = self._slot_scores(tokens)
        positive = np.flatnonzero(scores > 0)
        if positive.size == 0:
            return []
        if positive.size > k:
            part = np.argpartition(-scores[positive], k - 1)[:k]
            positive = positive[part]
        order = positive[np.argsort(-scores[positive], kind="stable")]
        denom = self.self_score(tokens) if normalized else 1.0
        denom = denom if denom > 0 else 1.0
        ids = self._slot_ids()
        return [(int(ids[s]), min(1.0, float(scores[s]) / denom)) for s in order]

    def query(
        self, tokens: Sequence[str], k: int, ids: Sequence[int] = ()
    ) -> tuple[list[tuple[int, float]], np.ndarray]:
        """One pass for fusion: the normalised top-``k`` (id, score) pairs and the
        normalised scores of the extra ``ids`` (0 for unknown ids)."""
        extra = np.zeros(len(ids), dtype=np.float32)
        tokens = list(tokens)
        if not tokens or not self._slot_of:
            return [], extra
        scores = self._slot_scores(tokens)
        denom = self.self_score(tokens)
        denom = denom if denom > 0 else 1.0
        top: list[tuple[int, float]] = []
        positive = np.flatnonzero(scores > 0)
        if positive.size and k > 0:
            if positive.size > k:
                positive = positive[np.argpartition(-scores[positive], k - 1)[:k]]
            order = positive[np.argsort(-scores[positive], kind="stable")]
            slot_ids = self._slot_ids()
            top = [(int(slot_ids[s]), min(1.0, float(scores[s]) / denom)) for s in order]
        for i, doc_id in enumerate(ids):
            slot = self._slot_of.get(int(doc_id))
            if slot is not None:
                extra[i] = min(1.0, float(scores[slot]) / denom)
        return top, extra

    def scores_for(
        self, query: str | Sequence[str], doc_ids: Iterable[int], *, normalized: bool = True
    ) -> np.ndarray:
        """Scores of ``query`` against the given ids (0 for unknown ids)."""
        tokens = tokenize(query) if isinstance(query, str) else list(query)
        doc_ids = list(doc_ids)
        out = np.zeros(len(doc_ids), dtype=np.float32)
        if not tokens or not self._slot_of:
            return out
        scores = self._slot_scores(tokens)
        denom = self.self_score(tokens) if normalized else 1.0
        denom = denom if denom > 0 else 1.0
        for i, doc_id in enumerate(doc_ids):
            slot = self._slot_of.get(doc_id)
            if slot is not None:
                out[i] = scores[slot] / denom
        if normalized:
            np.minimum(out, 1.0, out=out)
        return out
