"""Knowledge-base gaps: what customers ask that the knowledge base does not answer well.

Questions the bot could not answer (suggested or handed off) and questions whose answer was
voted unhelpful are embedded and clustered (average-linkage agglomerative clustering on
cosine distance), so that "do you sell shampoo?" and "シャンプーはありますか" count as one
missing topic.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from knowledge_base.embedder import Embedder
from knowledge_base.language import detect_language
from knowledge_base.store import KnowledgeStore
from knowledge_base.textnorm import normalize
from models.base import utcnow

#: Cosine similarity above which two questions are the same topic.
DEFAULT_SIMILARITY = 0.7
MAX_QUESTIONS = 5000


@dataclass
class GapQuestion:
    """One question that counts towards a gap."""

    text: str
    language: str | None
    source: str  # "unanswered" | "downvoted"
    entry_key: str | None = None
    created_at: datetime | None = None


@dataclass
class Gap:
    """A cluster of similar unanswered or down-voted questions."""

    count: int
    examples: list[str]
    languages: dict[str, int]
    unanswered: int
    downvoted: int
    entry_keys: list[str] = field(default_factory=list)
    last_seen: datetime | None = None

    @property
    def label(self) -> str:
        """The most representative question."""
        return self.examples[0] if self.examples else ""


def cluster_vectors(vectors: np.ndarray, *, similarity: float = DEFAULT_SIMILARITY) -> list[int]:
    """Cluster label per row of L2-normalised ``vectors``: rows end up together when their
    average cosine similarity is at least ``similarity``."""
    n = len(vectors)
    if n == 0:
        return []
    if n == 1:
        return [0]
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(
        n_clusters=None,
        metric="cosine",
        linkage="average",
        distance_threshold=max(1e-6, 1.0 - similarity),
    )
    return [int(x) for x in model.fit_predict(np.asarray(vectors, dtype=np.float32))]


def group_questions(
    questions: Sequence[GapQuestion],
    embedder: Embedder,
    *,
    similarity: float = DEFAULT_SIMILARITY,
    examples: int = 3,
) -> list[Gap]:
    """Cluster questions into gaps, biggest first (CPU-bound; run in a thread)."""
    # Identical questions (after normalisation) are embedded once.
    by_text: dict[str, list[GapQuestion]] = {}
    for q in questions:
        norm = normalize(q.text)
        if norm:
            by_text.setdefault(norm, []).append(q)
    if not by_text:
        return []
    keys = list(by_text)
    vectors = embedder.embed([by_text[k][0].text for k in keys], kind="query")
    labels = cluster_vectors(vectors, similarity=similarity)
    members: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    gaps: list[Gap] = []
    for idxs in members.values():
        qs = [q for i in idxs for q in by_text[keys[i]]]
        centroid = vectors[idxs].mean(axis=0)
        weights = np.array([len(by_text[keys[i]]) for i in idxs], dtype=np.float32)
        closeness = vectors[idxs] @ centroid + 0.01 * weights
        order = sorted(range(len(idxs)), key=lambda j: (-float(closeness[j]), keys[idxs[j]]))
        langs = Counter(q.language or detect_language(q.text) or "?" for q in qs)
        entry_keys = sorted({q.entry_key for q in qs if q.entry_key})
        seen = [q.created_at for q in qs if q.created_at is not None]
        gaps.append(
            Gap(
                count=len(qs),
                examples=[by_text[keys[idxs[j]]][0].text for j in order[:examples]],
                languages=dict(langs.most_common()),
                unanswered=sum(1 for q in qs if q.source == "unanswered"),
                downvoted=sum(1 for q in qs if q.source == "downvoted"),
                entry_keys=entry_keys,
                last_seen=max(seen) if seen else None,
            )
        )
    gaps.sort(key=lambda g: (-g.count, -(g.last_seen.timestamp() if g.last_seen else 0.0)))
    return gaps


async def gap_questions(
    store: KnowledgeStore, *, since: datetime | None, limit: int = MAX_QUESTIONS
) -> list[GapQuestion]:
    """Unanswered and down-voted questions since ``since`` (newest ``limit``)."""
    unanswered = await store.unanswered_since(since)
    downvoted = await store.feedback_since(since, helpful=False)
    out = [
        GapQuestion(r.text, r.language, "unanswered", None, r.created_at) for r in unanswered
    ] + [
        GapQuestion(r.question, None, "downvoted", r.entry_key, r.created_at) for r in downvoted
    ]
    out.sort(key=lambda q: q.created_at or utcnow(), reverse=True)
    return out[:limit]


async def find_gaps(
    store: KnowledgeStore,
    embedder: Embedder,
    *,
    days: int | None = 30,
    top: int = 10,
    similarity: float = DEFAULT_SIMILARITY,
    now: datetime | None = None,
) -> list[Gap]:
    """The ``top`` missing topics of the last ``days`` days (all time when ``None``)."""
    since = (now or utcnow()) - timedelta(days=days) if days is not None else None
    questions = await gap_questions(store, since=since)
    gaps = await asyncio.to_thread(group_questions, questions, embedder, similarity=similarity)
    return gaps[:top]


__all__ = [
    "DEFAULT_SIMILARITY",
    "Gap",
    "GapQuestion",
    "cluster_vectors",
    "find_gaps",
    "gap_questions",
    "group_questions",
]
