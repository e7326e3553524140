"""Retrieval: default embedder on en/ja/zh paraphrases, incremental sync, BM25, bad input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from knowledge_base.embedder import (
    AUTO_EMBEDDER,
    HashingEmbedder,
    Kind,
    QueryCache,
    make_embedder,
)
from knowledge_base.index import VectorIndex
from knowledge_base.lexical import BM25Index
from knowledge_base.retrieval import Document, Fusion, HybridRetriever
from knowledge_base.textnorm import normalize, tokenize

KB = [
    Document(
        "returns",
        (
            "How do I return a product?",
            "返品の方法を教えてください",
            "怎么退货？",
        ),
    ),
    Document(
        "shipping_time",
        (
            "How long does delivery take?",
            "注文してから届くまで何日かかりますか",
            "下单后多久能收到货？",
        ),
    ),
    Document(
        "alcohol_free",
        (
            "Does the toner contain alcohol?",
            "化粧水にアルコールは入っていますか",
            "化妆水含有酒精吗？",
        ),
    ),
    Document(
        "points",
        (
            "How do I use my reward points?",
            "ポイントはどうやって使えますか",
            "积分怎么使用？",
        ),
    ),
    Document(
        "sensitive_skin",
        (
            "Is this cream suitable for sensitive skin?",
            "敏感肌でも使えますか",
            "敏感肌可以用吗？",
        ),
    ),
    Document("store_hours", ("What are your store opening hours?",), lang="en"),
    Document("gift_wrap", ("Can you gift wrap my order?",), lang="en"),
]


@pytest.fixture(scope="module")
def embedder():
    return make_embedder("auto")


@pytest.fixture(scope="module")
def retriever(embedder):
    r = HybridRetriever(embedder=embedder)
    r.sync(KB)
    return r


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("i want to send back an item i bought", "returns"),
        ("商品を返品したいのですが", "returns"),
        ("我想退货", "returns"),
        ("when will my parcel arrive?", "shipping_time"),
        ("配送には何日くらいかかりますか？", "shipping_time"),
        ("多久可以到货", "shipping_time"),
        ("is the lotion alcohol free", "alcohol_free"),
        ("アルコールフリーですか", "alcohol_free"),
        ("肌が弱いのですが使っても大丈夫ですか", "sensitive_skin"),
        ("怎么用积分", "points"),
    ],
)
def test_paraphrases_en_ja_zh(retriever, query, key):
    hits = retriever.search(query, k=3)
    assert hits and hits[0].key == key, [(h.key, round(h.score, 3)) for h in hits]


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("お店の営業時間は何時から何時までですか", "store_hours"),
        ("ギフト包装はできますか", "gift_wrap"),
        ("商店几点开门？", "store_hours"),
    ],
)
def test_cross_lingual_query_finds_english_entry(retriever, query, key):
    hits = retriever.search(query, k=3)
    assert hits and hits[0].key == key, [(h.key, round(h.score, 3)) for h in hits]


def test_hits_are_unique_sorted_and_bounded(retriever):
    hits = retriever.search("返品", k=10)
    keys = [h.key for h in hits]
    assert len(keys) == len(set(keys)) == len(KB)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert hits[0].matched_text in KB[0].texts


def test_in_scope_scores_higher_than_off_topic(retriever):
    good = retriever.search("返品したいです", k=1)[0].score
    off = retriever.search("今日の東京の天気は？", k=1)[0].score
    assert good > off + 0.1


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "👍🎉😀",
        "？！。",
        "x" * 100_000,
        "返品" * 50_000,
        "\x00\x01\x02\xff\ufffe" * 2000,
        bytes(range(256)).decode("latin-1") * 40,
        "\ud800 broken surrogate",
    ],
    ids=["empty", "spaces", "emoji", "punct", "100kb", "100kb-ja", "binary", "latin1", "surr"],
)
def test_bad_input_does_not_crash(retriever, query):
    hits = retriever.search(query, k=3)
    assert isinstance(hits, list)
    assert len(hits) <= 3
    for h in hits:
        assert 0.0 <= h.score <= 1.0


def test_empty_retriever_returns_nothing(embedder):
    r = HybridRetriever(embedder=embedder)
    assert len(r) == 0
    assert r.search("anything") == []


def test_make_embedder_rejects_unknown_and_missing_paths(tmp_path):
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("no-such-model")
    with pytest.raises(ValueError, match="does not exist"):
        make_embedder("minilm", model=str(tmp_path / "missing"))
    assert AUTO_EMBEDDER != "minilm"


def test_embedder_contract_and_query_cache(embedder):
    v = embedder.embed(["hello", "こんにちは"], kind="passage")
    assert v.dtype == np.float32 and v.shape == (2, embedder.dim)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    before = embedder.calls
    a = embedder.embed(["送料はいくらですか"])
    b = embedder.embed(["送料はいくらですか"])
    assert embedder.calls == before + 1
    assert np.array_equal(a, b)


def test_query_cache_is_lru():
    c = QueryCache(2)
    c.put(("query", "a"), np.zeros(1))
    c.put(("query", "b"), np.zeros(1))
    assert c.get(("query", "a")) is not None
    c.put(("query", "c"), np.zeros(1))
    assert c.get(("query", "b")) is None and len(c) == 2


# ---------------------------------------------------------------------- incremental sync
class CountingEmbedder(HashingEmbedder):
    """Hashing embedder that records every text it encodes."""

    def __init__(self) -> None:
        super().__init__(dim=256)
        self.name = "counting-hash"
        self.encoded: list[str] = []

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        if kind == "passage":
            self.encoded.extend(texts)
        return super()._encode(texts, kind)


def _docs(texts: Sequence[tuple[str, str]]) -> list[Document]:
    return [Document(k, (t,)) for k, t in texts]


def test_sync_reembeds_only_changed_documents_and_persists(tmp_path: Path):
    emb = CountingEmbedder()
    index_dir = tmp_path / "idx"
    r = HybridRetriever(embedder=emb, index_dir=index_dir)
    base = [("a", "reset my password"), ("b", "change delivery address"), ("c", "cancel order")]
    stats = r.sync(_docs(base))
    assert (stats.added, stats.updated, stats.removed, stats.unchanged) == (3, 0, 0, 0)
    assert len(emb.encoded) == 3

    emb.encoded.clear()
    stats = r.sync(_docs(base))
    assert (stats.added, stats.updated, stats.removed, stats.unchanged) == (0, 0, 0, 3)
    assert emb.encoded == []

    changed = [("a", "reset my password"), ("b", "update shipping address"), ("d", "gift card")]
    stats = r.sync(_docs(changed))
    assert (stats.added, stats.updated, stats.removed, stats.unchanged) == (1, 1, 1, 1)
    assert sorted(emb.encoded) == ["gift card", "update shipping address"]
    assert len(r) == 3 and "c" not in r
    assert r.search("update shipping address", k=1)[0].key == "b"

    # a new process: loads vectors and fingerprints, embeds nothing for unchanged docs
    emb2 = CountingEmbedder()
    r2 = HybridRetriever(embedder=emb2, index_dir=index_dir)
    assert len(r2) == 3 and r2.num_texts == 3
    stats = r2.sync(_docs(changed))
    assert stats.unchanged == 3 and emb2.encoded == []
    assert r2.search("gift card", k=1)[0].key == "d"
    assert r2.search("cancel order", k=3)[0].key != "c"


def test_index_is_rebuilt_for_another_embedder(tmp_path: Path):
    r = HybridRetriever(embedder=CountingEmbedder(), index_dir=tmp_path)
    r.sync(_docs([("a", "hello")]))
    other = HashingEmbedder(dim=128)
    r2 = HybridRetriever(embedder=other, index_dir=tmp_path)
    assert len(r2) == 0
    assert r2.sync(_docs([("a", "hello")])).added == 1


def test_upsert_delete_and_multi_text_documents():
    emb = CountingEmbedder()
    r = HybridRetriever(embedder=emb, fusion=Fusion(dense_weight=0.5, lexical_weight=0.5))
    r.upsert([Document("x", ("track my parcel", "where is my package"))])
    r.upsert([Document("y", ("refund status",))])
    assert len(r) == 2 and r.num_texts == 3
    hit = r.search("where is my package now", k=1)[0]
    assert hit.key == "x" and hit.matched_text == "where is my package"
    assert r.delete(["x", "nope"]) == 1
    assert r.keys() == ["y"] and r.num_texts == 1


def test_document_fingerprint_is_stable_and_content_based():
    a = Document("k", ("Hello", "こんにちは"))
    b = Document("k", ["Hello", "こんにちは", "Hello", " "])  # type: ignore[arg-type]
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != Document("k", ("Hello!",)).fingerprint
    assert a.fingerprint_for("e5") != a.fingerprint_for("use")
    with pytest.raises(ValueError):
        Document("", ("x",))


# ---------------------------------------------------------------------- BM25 / textnorm
def test_normalisation():
    assert normalize("ＡＢＣ　１２３") == "abc 123"
    assert normalize("ﾎﾟｲﾝﾄ") == normalize("ポイント") == "ぽいんと"
    assert tokenize("iPhones") == ["iphone"]
    assert "返品" in tokenize("返品したい") and "退货" in tokenize("我想退货")


def test_bm25_on_unsegmented_japanese_and_chinese():
    bm = BM25Index()
    texts = {
        1: "化粧水にアルコールは入っていますか",
        2: "注文のキャンセル方法を教えてください",
        3: "送料はいくらですか",
        4: "如何取消订单",
        5: "运费是多少",
        6: "How do I cancel my order",
    }
    for i, t in texts.items():
        bm.add(i, t)
    assert bm.search("キャンセルしたい", k=1)[0][0] == 2
    assert bm.search("送料について", k=1)[0][0] == 3
    assert bm.search("取消订单", k=1)[0][0] == 4
    assert bm.search("运费", k=1)[0][0] == 5
    assert bm.search("CANCEL ORDER", k=1)[0][0] == 6
    assert bm.search("ｱﾙｺｰﾙ", k=1)[0][0] == 1  # half-width katakana
    top_id, top_score = bm.search("送料はいくらですか", k=1)[0]
    assert top_id == 3 and top_score == pytest.approx(1.0, abs=1e-6)
    assert bm.search("👍", k=3) == [] and bm.search("", k=3) == []
    assert bm.remove(3) and not bm.remove(3)
    assert all(i != 3 for i, _ in bm.search("送料", k=5))


def test_vector_index_add_remove_save_load(tmp_path: Path):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(5, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for kind in ("flat", "fp16", "sq8"):
        idx = VectorIndex(8, kind=kind)  # type: ignore[arg-type]
        idx.add([10, 11, 12, 13, 14], vecs)
        scores, ids = idx.search(vecs[2], 1)
        assert ids[0, 0] == 12 and scores[0, 0] == pytest.approx(1.0, abs=0.02)
        assert idx.remove([12]) == 1 and len(idx) == 4
        idx.save(tmp_path / kind)
        back = VectorIndex.load(tmp_path / kind)
        assert len(back) == 4 and back.kind == kind
        assert back.search(vecs[2], 1)[1][0, 0] != 12
        assert np.allclose(back.reconstruct([13]), vecs[3], atol=0.02)
