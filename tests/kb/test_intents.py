"""Rasa NLU YAML I/O, the intent classifier with OOS detection, and intent metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knowledge_base.embedder import make_embedder
from knowledge_base.evaluation import evaluate_intent_predictions, evaluate_intents
from knowledge_base.intents import (
    IntentClassifier,
    IntentPrediction,
    dump_rasa_nlu,
    load_rasa_nlu,
    strip_entities,
)

NLU = """\
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hey
    - こんにちは
    - 你好
- intent: order_status
  examples: |
    - where is my order [12345](order_id)?
    - 注文した[リップ](product)はいつ届きますか
    - 我的订单{"entity": "x"}到哪了
    - track my [parcel]{"entity": "item", "value": "package"}
- synonym: package
  examples: |
    - parcel
- regex: order_id
  examples: |
    - \\d{5}
"""


def test_load_rasa_nlu_strips_entities_and_ignores_other_items():
    data = load_rasa_nlu(NLU)
    assert list(data) == ["greet", "order_status"]
    assert data["greet"] == ["hey", "こんにちは", "你好"]
    assert data["order_status"][0] == "where is my order 12345?"
    assert data["order_status"][1] == "注文したリップはいつ届きますか"
    assert data["order_status"][3] == "track my parcel"


def test_rasa_round_trip(tmp_path: Path):
    data = {
        "greet": ["hi", "こんにちは", "你好"],
        "ask price": ["how much is it?", "値段は: いくら?", "- dash first"],
    }
    text = dump_rasa_nlu(data)
    assert text.startswith('version: "3.1"\nnlu:\n')
    assert load_rasa_nlu(text) == data
    path = tmp_path / "nlu.yml"
    path.write_text(text, encoding="utf-8")
    assert load_rasa_nlu(path) == data
    assert load_rasa_nlu(str(path)) == data
    assert load_rasa_nlu(tmp_path) == data  # a directory of .yml files


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n  - bad: [\n', "line"),
        ('version: "3.1"\nnlu:\n  - intent: a\n    examples: "x\n', "line"),
        ('version: "3.1"\nnlu: 5\n', "line 2"),
        ('version: "3.1"\nnlu:\n- intent: a\n', "line 3"),
        (
            'version: "3.1"\nnlu:\n- intent: a\n  examples: |\n    - ok\n    not a list item\n',
            "line 6",
        ),
    ],
)
def test_malformed_yaml_raises_value_error_with_position(text, where):
    with pytest.raises(ValueError) as err:
        load_rasa_nlu(text)
    assert where in str(err.value)


def test_missing_file_and_strip_entities():
    with pytest.raises(FileNotFoundError):
        load_rasa_nlu("no/such/file.yml")
    assert strip_entities('book [Tokyo](city) on [Monday]{"entity": "day"}') == (
        "book Tokyo on Monday"
    )


# ---------------------------------------------------------------------- classifier
TRAIN = {
    "order_status": [
        "where is my order",
        "has my package shipped",
        "track my parcel",
        "when will my order arrive",
        "注文した商品はいつ届きますか",
        "我的快递到哪了",
    ],
    "refund": [
        "i want a refund",
        "how do i get my money back",
        "refund my purchase",
        "can i return this for a refund",
        "返金してほしい",
        "我要退款",
    ],
    "skin_type": [
        "is this good for oily skin",
        "which cream suits dry skin",
        "is it ok for sensitive skin",
        "what should i use for combination skin",
        "乾燥肌におすすめは",
        "油性皮肤用哪个",
    ],
    "store_hours": [
        "what time do you open",
        "when does the shop close",
        "are you open on sunday",
        "opening hours",
        "営業時間を教えて",
        "几点开门",
    ],
}
VAL = [
    ("where's my parcel now", "order_status"),
    ("money back please", "refund"),
    ("good moisturiser for dry skin?", "skin_type"),
    ("is the store open on monday", "store_hours"),
    ("who won the football game", None),
    ("tell me a joke", None),
    ("what's the weather in paris", None),
]


@pytest.fixture(scope="module")
def classifier():
    clf = IntentClassifier(embedder=make_embedder("auto"))
    clf.fit(TRAIN)
    clf.tune_threshold(VAL)
    return clf


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("my order hasn't arrived yet", "order_status"),
        ("荷物はいつ届く？", "order_status"),
        ("please refund me", "refund"),
        ("我想要退款", "refund"),
        ("cream for sensitive skin", "skin_type"),
        ("what are your opening hours today", "store_hours"),
    ],
)
def test_classifier_in_scope(classifier, text, intent):
    pred = classifier.predict(text)
    assert isinstance(pred, IntentPrediction)
    assert pred.intent == intent, pred.ranking
    assert pred.ranking[0][0] == intent and 0.0 < pred.confidence <= 1.0


@pytest.mark.parametrize(
    "text",
    ["what is the capital of australia", "play some jazz music", "明日の天気は？", "", "🙂🙂"],
)
def test_classifier_rejects_out_of_scope(classifier, text):
    assert classifier.predict(text).intent is None


def test_classifier_save_load_and_evaluate(classifier, tmp_path: Path):
    classifier.save(tmp_path / "clf")
    back = IntentClassifier.load(tmp_path / "clf", embedder=classifier.embedder)
    texts = ["track my parcel please", "who is the president"]
    a = classifier.predict_batch(texts)
    b = back.predict_batch(texts)
    assert [p.intent for p in a] == [p.intent for p in b]
    assert a[0].confidence == pytest.approx(b[0].confidence, abs=1e-5)
    m = evaluate_intents(
        back, [("track my parcel please", "order_status"), ("who is the president", None)]
    )
    assert m["in_scope_accuracy"] == 1.0 and m["oos_recall"] == 1.0


def test_explicit_oos_class():
    clf = IntentClassifier(embedder=make_embedder("hashing"), knn_weight=0.0)
    clf.fit(
        {
            "a": ["reset password", "forgot my password"],
            "b": ["cancel order", "stop order"],
            "oos": ["tell me a joke", "sing a song"],
        }
    )
    assert clf.intents == ["a", "b"]
    assert clf.predict("tell me a joke please").intent is None
    assert clf.predict("i forgot my password").intent == "a"


def test_evaluate_intent_predictions_known_values():
    gold = ["a", "a", "b", None, None]
    pred = ["a", "b", "b", None, "a"]
    m = evaluate_intent_predictions(pred, gold)
    assert m["in_scope_accuracy"] == pytest.approx(2 / 3)
    assert m["oos_recall"] == pytest.approx(0.5)
    assert m["oos_precision"] == pytest.approx(1.0)
    assert m["oos_f1"] == pytest.approx(2 / 3)
    # per-class F1: a: tp1 fp1 fn1 -> 0.5 ; b: tp1 fp1 fn0 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_knn_k_is_used_saved_and_defaults_to_five_for_old_saves(tmp_path: Path):
    import json

    examples = {
        "a": ["reset password", "forgot my password", "password help", "new password"],
        "b": ["cancel order", "stop order", "cancel my purchase", "order cancel"],
    }
    emb = make_embedder("hashing")
    one = IntentClassifier(embedder=emb).fit(examples)
    three = IntentClassifier(embedder=emb, knn_k=3).fit(examples)
    assert one.knn_k == 1
    texts = ["i forgot my password", "what is the weather"]
    assert not np.allclose(one._forward(texts, None)[1], three._forward(texts, None)[1])
    path = three.save(tmp_path / "clf")
    assert IntentClassifier.load(path, embedder=emb).knn_k == 3
    config = json.loads((path / "config.json").read_text())
    del config["knn_k"]  # saved before knn_k existed
    (path / "config.json").write_text(json.dumps(config))
    assert IntentClassifier.load(path, embedder=emb).knn_k == 5
    with pytest.raises(ValueError):
        IntentClassifier(embedder=emb, knn_k=0)
