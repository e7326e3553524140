"""The block-wise index of the script-aware embedder gives the flat index's results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from knowledge_base.embedder import (
    HashingEmbedder,
    Kind,
    ScriptAwareConcat,
    compose_script_aware,
    script_aware_search,
)
from knowledge_base.index import ScriptAwareIndex, VectorIndex, load_index
from knowledge_base.retrieval import Document, HybridRetriever

DU, DE = 24, 16


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _layout_vectors(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    latin = rng.random(n) < 0.6
    u = _unit(rng.normal(size=(n, DU)))
    m = _unit(rng.normal(size=(int(latin.sum()), DE)))
    return compose_script_aware(u, m, latin, english_dim=DE), latin


@pytest.mark.parametrize("weight", [1.0, 0.0, 0.6])
@pytest.mark.parametrize("query_latin", [True, False])
def test_same_top_k_and_scores_as_the_flat_index(weight: float, query_latin: bool):
    stored, _ = _layout_vectors(400)
    ids = np.arange(1000, 1400)
    flat = VectorIndex(2 * DU + DE)
    flat.add(ids, stored)
    blocks = ScriptAwareIndex(DU, DE)
    blocks.add(ids, stored)
    assert len(blocks) == 400
    queries, _ = _layout_vectors(30, seed=1)
    rng = np.random.default_rng(2)
    qlatin = np.full(30, query_latin)
    qu = _unit(rng.normal(size=(30, DU)))
    qm = _unit(rng.normal(size=(30, DE))) if query_latin else None
    q = script_aware_search(compose_script_aware(qu, qm, qlatin, english_dim=DE), DU, DE, weight)
    fs, fi = flat.search(q, 8)
    bs, bi = blocks.search(q, 8)
    assert (fi == bi).all()
    assert np.allclose(fs, bs, atol=1e-5)


def test_add_replace_remove_reconstruct_save_load(tmp_path: Path):
    stored, latin = _layout_vectors(50)
    idx = ScriptAwareIndex(DU, DE)
    idx.add(np.arange(50), stored)
    assert np.allclose(idx.reconstruct([0, 1, 2, 49]), stored[[0, 1, 2, 49]])
    # replacing a Latin row by a non-Latin one moves it between the blocks
    first_latin = int(np.flatnonzero(latin)[0])
    other = stored[int(np.flatnonzero(~latin)[0])]
    idx.add([first_latin], other[None, :])
    assert len(idx) == 50 and np.allclose(idx.reconstruct([first_latin])[0], other)
    assert idx.remove([3, 4, 999]) == 2 and len(idx) == 48
    with pytest.raises(KeyError):
        idx.reconstruct([3])
    idx.save(tmp_path)
    back = load_index(tmp_path)
    assert isinstance(back, ScriptAwareIndex) and len(back) == 48
    assert sorted(back.ids().tolist()) == sorted(idx.ids().tolist())
    q = stored[10] * 2
    assert (back.search(q, 5)[1] == idx.search(q, 5)[1]).all()
    with pytest.raises(ValueError):
        idx.add([1], stored[:2])


class _Counting(HashingEmbedder):
    def __init__(self, dim: int, ngram: tuple[int, int], name: str) -> None:
        super().__init__(dim, ngram=ngram)
        self.name = name
        self.calls = 0

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        self.calls += len(texts)
        return super()._encode(texts, kind)


class _FlatView:
    """The same embedder without ``script_layout``: the retriever then keeps one flat index
    (what earlier versions saved)."""

    def __init__(self, inner: ScriptAwareConcat) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim

    def embed(self, texts: Sequence[str], *, kind: Kind = "query") -> np.ndarray:
        return self.inner.embed(texts, kind=kind)

    def search_vectors(self, vecs: np.ndarray) -> np.ndarray:
        return self.inner.search_vectors(vecs)


DOCS = [
    Document("returns", ("How do I return a product?", "返品の方法を教えてください")),
    Document("shipping", ("How long does delivery take?", "下单后多久能收到货？")),
    Document("points", ("How do member points work?", "ポイントはいつ付きますか")),
    Document("stores", ("Where are your stores?",)),
    Document("payment", ("支付方式有哪些？", "Which payment methods can I use?")),
]
QUERIES = ["return a product", "返品したい", "配送要多久", "points", "payment methods", "店舗"]


def test_retriever_uses_blocks_and_adopts_a_saved_flat_index(tmp_path: Path):
    emb = ScriptAwareConcat(_Counting(96, (1, 3), "multi"), _Counting(64, (2, 4), "english"),
                            name="m+e")
    flat = HybridRetriever(embedder=_FlatView(emb), index_dir=tmp_path)  # type: ignore[arg-type]
    flat.sync(DOCS)
    assert isinstance(flat._vindex, VectorIndex)
    expected = {q: [(h.key, round(h.score, 5)) for h in flat.search(q, k=3)] for q in QUERIES}
    calls = lambda: sum(p.calls for p in emb.parts)  # type: ignore[attr-defined]  # noqa: E731
    before = calls()
    blocks = HybridRetriever(embedder=emb, index_dir=tmp_path)
    assert calls() == before  # adopted, not re-embedded
    assert isinstance(blocks._vindex, ScriptAwareIndex)
    assert len(blocks._vindex) == flat.num_texts
    for q in QUERIES:
        emb.cache.clear()
        assert [(h.key, round(h.score, 5)) for h in blocks.search(q, k=3)] == expected[q]
    before = calls()
    blocks.sync(DOCS)  # unchanged entries: nothing re-embedded, the new layout is saved
    assert calls() == before
    assert isinstance(load_index(tmp_path), ScriptAwareIndex)
    again = HybridRetriever(embedder=emb, index_dir=tmp_path)
    assert isinstance(again._vindex, ScriptAwareIndex) and len(again) == len(DOCS)


def test_switching_embedders_saves_over_the_other_layout(tmp_path: Path):
    stored, _ = _layout_vectors(10)
    blocks = ScriptAwareIndex(DU, DE)
    blocks.add(np.arange(10), stored)
    blocks.save(tmp_path)
    flat = VectorIndex(8)
    flat.add([1, 2], _unit(np.random.default_rng(3).normal(size=(2, 8))))
    flat.save(tmp_path)  # e.g. the knowledge base moved to another embedder
    back = load_index(tmp_path)
    assert isinstance(back, VectorIndex) and back.dim == 8 and len(back) == 2
    blocks.save(tmp_path)  # and back again
    assert isinstance(load_index(tmp_path), ScriptAwareIndex)
