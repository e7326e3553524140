"""The script-aware USE ⊕ MiniLM embedder: layout, exact cross-lingual scores, the retriever
using its search vectors, and the benchmark's cached copy of it (model-free, with hashing
stand-ins), plus the real default's fast single-query path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from knowledge_base.embedder import (
    AUTO_EMBEDDER,
    HashingEmbedder,
    Kind,
    ScriptAwareConcat,
    is_latin_text,
    make_embedder,
    search_vectors,
)
from knowledge_base.retrieval import Document, Fusion, HybridRetriever

EN = ["How do I return a product?", "when will my parcel arrive", "store opening hours"]
CJK = ["返品の方法を教えてください", "下单后多久能收到货？", "営業時間は何時からですか"]


class Counting(HashingEmbedder):
    """A hashing embedder that records which texts it was asked to embed."""

    def __init__(self, dim: int, ngram: tuple[int, int], name: str) -> None:
        super().__init__(dim, ngram=ngram)
        self.name = name
        self.seen: list[str] = []

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        self.seen.extend(texts)
        return super()._encode(texts, kind)


def _parts() -> tuple[Counting, Counting]:
    return Counting(96, (1, 3), "multi"), Counting(64, (2, 4), "english")


def _concat(weight: float = 0.7) -> tuple[ScriptAwareConcat, Counting, Counting]:
    multi, english = _parts()
    return ScriptAwareConcat(multi, english, english_weight=weight, name="m+e"), multi, english


@pytest.mark.parametrize(
    ("text", "latin"),
    [
        ("How do I return a product?", True),
        ("Is this cream OK for 敏感肌 skin types?", True),
        ("返品の方法を教えてください", False),
        ("SK-IIの化粧水はありますか", False),
        ("怎么退货？", False),
        ("환불 방법", False),
        ("12345 !!", False),
        ("", False),
    ],
)
def test_is_latin_text(text: str, latin: bool) -> None:
    assert is_latin_text(text) is latin


def test_layout_is_unit_and_english_part_only_sees_latin_text() -> None:
    emb, multi, english = _concat()
    vecs = emb.embed(EN + CJK, kind="passage")
    assert vecs.shape == (6, 2 * 96 + 64)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    u = _parts()[0].embed(EN + CJK)
    m = _parts()[1].embed(EN)
    half = np.sqrt(0.5)
    assert np.allclose(vecs[:, :96], half * u, atol=1e-6)
    assert np.allclose(vecs[:3, 96:160], half * m, atol=1e-6)  # English: [u, m, 0]/√2
    assert np.all(vecs[:3, 160:] == 0)
    assert np.all(vecs[3:, 96:160] == 0)  # others: [u, 0, u]/√2
    assert np.allclose(vecs[3:, 160:], half * u[3:], atol=1e-6)
    assert set(english.seen) == set(EN)  # never asked to read Japanese or Chinese
    assert set(multi.seen) == set(EN + CJK)


def test_stored_vectors_do_not_depend_on_the_weight() -> None:
    a, _, _ = _concat(0.2)
    b, _, _ = _concat(1.0)
    assert np.array_equal(a.embed(EN + CJK, kind="passage"), b.embed(EN + CJK, kind="passage"))


def test_single_query_matches_batch_and_is_cached() -> None:
    emb, _, english = _concat()
    batch = emb.embed(EN + CJK)
    for i, text in enumerate(EN + CJK):
        assert np.allclose(emb.embed([text])[0], batch[i], atol=1e-6)
    before = len(english.seen)
    emb.embed([EN[0]])
    assert len(english.seen) == before  # served from the concat's query cache


@pytest.mark.parametrize("weight", [0.0, 0.5, 0.8, 1.0])
def test_search_scores_are_exact_for_every_language_pair(weight: float) -> None:
    emb, _, _ = _concat(weight)
    multi, english = _parts()
    texts = EN + CJK
    u = multi.embed(texts)
    m = english.embed(texts)
    cos_u, cos_m = u @ u.T, m @ m.T
    latin = np.array([is_latin_text(t) for t in texts])
    expected = np.where(
        latin[:, None] & latin[None, :], (1 - weight) * cos_u + weight * cos_m, cos_u
    )
    q = search_vectors(emb, emb.embed(texts, kind="query"))
    got = q @ emb.embed(texts, kind="passage").T
    assert np.allclose(got, expected, atol=1e-5)
    assert np.allclose(np.diag(got), 1.0, atol=1e-5)  # a text matches itself at 1.0
    one = search_vectors(emb, emb.embed([CJK[0]])[0])  # 1-D input works too
    assert one.shape == (emb.dim,) and np.allclose(one, q[3], atol=1e-6)


def test_search_vectors_is_identity_for_plain_embedders() -> None:
    emb = HashingEmbedder()
    vecs = emb.embed(EN)
    assert search_vectors(emb, vecs) is vecs


def test_retriever_scores_japanese_query_against_english_entry_with_the_multilingual_cosine():
    emb, _, _ = _concat(0.8)
    multi, _ = _parts()
    r = HybridRetriever(embedder=emb, fusion=Fusion(lexical_weight=0.0))
    r.sync([Document("hours", ("store opening hours",)), Document("returns", (CJK[0],))])
    for query in ("営業時間は何時からですか", "返品の方法を教えてください"):
        hits = {h.key: h for h in r.search(query, k=2)}
        qv = multi.embed([query])[0]
        want_en = float(qv @ multi.embed(["store opening hours"])[0])
        want_ja = float(qv @ multi.embed([CJK[0]])[0])
        assert hits["hours"].dense == pytest.approx(want_en, abs=1e-5)
        assert hits["returns"].dense == pytest.approx(want_ja, abs=1e-5)


def test_weight_is_validated() -> None:
    multi, english = _parts()
    with pytest.raises(ValueError):
        ScriptAwareConcat(multi, english, english_weight=1.01)
    with pytest.raises(ValueError):
        ScriptAwareConcat(multi, english, english_weight=-0.1)


def test_benchmark_cache_reproduces_the_live_vectors(tmp_path: Path) -> None:
    from bench.kb_bench import CachedEmbedder, EmbeddingStore

    live, multi, english = _concat(0.8)
    stores = {
        "use-multilingual": EmbeddingStore("use-multilingual", tmp_path),
        "minilm": EmbeddingStore("minilm", tmp_path),
    }
    stores["use-multilingual"]._embedder = _parts()[0]
    stores["minilm"]._embedder = _parts()[1]
    cached = CachedEmbedder("use+minilm", stores, minilm_weight=0.8)
    assert cached.dim == live.dim
    texts: Sequence[str] = EN + CJK
    for kind in ("query", "passage"):
        assert np.allclose(cached.embed(texts, kind=kind), live.embed(texts, kind=kind), atol=1e-6)
    q = cached.embed(texts)
    assert np.allclose(cached.search_vectors(q), search_vectors(live, q), atol=1e-6)


def test_default_is_the_script_aware_concat_with_a_fast_single_query_path() -> None:
    emb = make_embedder("auto")
    assert AUTO_EMBEDDER == "use+minilm" and emb.name == "use+minilm"
    assert isinstance(emb, ScriptAwareConcat)
    english = emb.parts[1]
    assert getattr(english, "_single", None) is not None, "TorchScript fast path not active"
    texts = ["ok", "How long does delivery take to Osaka?", "is the toner alcohol free " * 15]
    batch = english.embed(texts)
    for i, text in enumerate(texts):
        assert np.allclose(english._run([text], "query")[0], batch[i], atol=1e-4)
    assert english.runtime == "onnx", "ONNX Runtime fast path not active"


def test_onnx_export_is_cached_and_gives_the_torch_vectors(tmp_path: Path) -> None:
    from knowledge_base.embedder import SentenceTransformerEmbedder

    onnx = SentenceTransformerEmbedder(runtime="onnx", cache_dir=tmp_path)
    files = list((tmp_path / "onnx").glob("*.onnx"))
    assert onnx.runtime == "onnx" and len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    torch = SentenceTransformerEmbedder(runtime="torch")
    assert torch.runtime == "torch"
    texts = ["ok", "Can I use the serum on sensitive skin?", "送料はいくらですか", "x " * 400]
    for text in texts:  # single texts take the ONNX path, long ones truncated the same way
        assert np.allclose(onnx._run([text], "query"), torch._run([text], "query"), atol=1e-4)
    again = SentenceTransformerEmbedder(runtime="onnx", cache_dir=tmp_path)
    assert again.runtime == "onnx"
    assert [f.stat().st_mtime_ns for f in (tmp_path / "onnx").glob("*.onnx")] == [stamp]
    with pytest.raises(ValueError, match="unknown runtime"):
        SentenceTransformerEmbedder(runtime="tensorrt")


def test_a_corrupt_onnx_cache_is_exported_again(tmp_path: Path) -> None:
    from knowledge_base.embedder import SentenceTransformerEmbedder

    SentenceTransformerEmbedder(runtime="onnx", cache_dir=tmp_path)
    (cached,) = (tmp_path / "onnx").glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])  # a disk-full or killed copy
    again = SentenceTransformerEmbedder(runtime="onnx", cache_dir=tmp_path)
    assert again.runtime == "onnx" and cached.stat().st_size > 1_000_000
    assert not list((tmp_path / "onnx").glob(".*.tmp"))
