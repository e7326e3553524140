"""Knowledge-base gaps: unanswered and down-voted questions clustered into topics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np

from knowledge_base.embedder import Embedder
from knowledge_base.gaps import GapQuestion, cluster_vectors, find_gaps, group_questions
from knowledge_base.store import KnowledgeStore
from models import Database
from models.base import utcnow
from models.knowledge import KbUnanswered

TOPICS = {
    "shampoo": 0, "シャンプー": 0, "洗发水": 0,
    "parking": 1, "駐車場": 1, "停车": 1,
    "makeup lesson": 2,
}


class TopicEmbedder:
    """A fake multilingual embedder: texts about the same topic get nearly the same vector."""

    name = "topics"
    dim = 16

    def embed(self, texts: Sequence[str], *, kind: str = "query") -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            topic = next((t for word, t in TOPICS.items() if word in text.lower()), None)
            seed = sum(map(ord, text)) % 1000
            noise = np.random.default_rng(seed).normal(0, 0.05, self.dim)
            if topic is None:  # an unrelated question: a random direction of its own
                vec = np.random.default_rng(seed + 1).normal(0, 1, self.dim)
            else:
                vec = np.zeros(self.dim)
                vec[topic] = 1.0
            vec = vec + noise
            out[row] = vec / np.linalg.norm(vec)
        return out


def test_cluster_vectors_threshold() -> None:
    vecs = TopicEmbedder().embed(["shampoo?", "シャンプーある?", "parking?", "駐車場は?", "x"])
    labels = cluster_vectors(vecs, similarity=0.8)
    assert labels[0] == labels[1] and labels[2] == labels[3]
    assert len({labels[0], labels[2], labels[4]}) == 3
    assert cluster_vectors(np.zeros((0, 4), dtype=np.float32)) == []
    assert cluster_vectors(vecs[:1]) == [0]


def test_group_questions_counts_and_examples() -> None:
    questions = [
        GapQuestion("Do you sell shampoo?", "en", "unanswered"),
        GapQuestion("do you sell shampoo?", "en", "unanswered"),  # same text, counted twice
        GapQuestion("シャンプーはありますか", "ja", "unanswered"),
        GapQuestion("有洗发水吗", None, "downvoted", entry_key="ingredients-list"),
        GapQuestion("Is there parking?", "en", "unanswered"),
        GapQuestion("駐車場はありますか", "ja", "unanswered"),
        GapQuestion("Something else entirely", "en", "unanswered"),
        GapQuestion("   ", "en", "unanswered"),  # ignored
    ]
    gaps = group_questions(questions, TopicEmbedder(), similarity=0.8)  # type: ignore[arg-type]
    assert [g.count for g in gaps] == [4, 2, 1]
    shampoo = gaps[0]
    assert shampoo.unanswered == 3 and shampoo.downvoted == 1
    assert shampoo.languages == {"en": 2, "ja": 1, "zh": 1}
    assert shampoo.entry_keys == ["ingredients-list"]
    assert len(shampoo.examples) == 3 and len(set(shampoo.examples)) == 3
    assert "parking" in gaps[1].label or "駐車場" in gaps[1].label


async def test_find_gaps_reads_the_store_and_respects_the_period(sqlite_db: Database) -> None:
    store = KnowledgeStore(sqlite_db)
    for text in ("shampoo for dry hair?", "シャンプーの取り扱いは？", "do you have shampoo"):
        await store.add_unanswered(
            question=text, language=None, contact_id=None, decision="handoff", confidence=0.1
        )
    await store.add_feedback(
        entry_key="stores-hours", question="parking near the store?", helpful=False,
        contact_id=None,
    )
    await store.add_feedback(
        entry_key="stores-hours", question="what time do you open?", helpful=True,
        contact_id=None,
    )
    async with sqlite_db.session() as session:  # an old question outside the window
        session.add(
            KbUnanswered(
                text="makeup lesson?", language="en", contact_id=None, decision="handoff",
                confidence=0.0, created_at=utcnow() - timedelta(days=90),
            )
        )
    embedder: Embedder = TopicEmbedder()  # type: ignore[assignment]
    gaps = await find_gaps(store, embedder, days=30, top=10, similarity=0.8)
    assert [(g.count, g.unanswered, g.downvoted) for g in gaps] == [(3, 3, 0), (1, 0, 1)]
    assert gaps[1].entry_keys == ["stores-hours"]
    everything = await find_gaps(store, embedder, days=None, top=10, similarity=0.8)
    assert sum(g.count for g in everything) == 5
    assert len(await find_gaps(store, embedder, days=None, top=1, similarity=0.8)) == 1
