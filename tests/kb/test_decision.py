"""Decision policy (answer / suggest / hand-off), tuning, defaults and FAQ metrics."""

from __future__ import annotations

import pytest

from knowledge_base.decision import (
    Decision,
    DecisionKind,
    DecisionPolicy,
    LogisticCalibrator,
    Thresholds,
    default_calibrator,
    default_thresholds,
)
from knowledge_base.embedder import AUTO_EMBEDDER, HashingEmbedder
from knowledge_base.evaluation import evaluate_faq, evaluate_faq_hits
from knowledge_base.retrieval import Document, Hit, HybridRetriever


def hits(*scores: float) -> list[Hit]:
    return [Hit(f"k{i}", s, s, 0.0, f"text {i}") for i, s in enumerate(scores)]


POLICY = DecisionPolicy(Thresholds(answer=0.8, suggest=0.6))


def test_answer_above_answer_threshold():
    d = POLICY.decide(hits(0.85, 0.5, 0.4))
    assert isinstance(d, Decision)
    assert d.kind == DecisionKind.ANSWER and d.kind == "answer"
    assert d.top is not None and d.top.key == "k0" and d.suggestions == []
    assert 0.0 <= d.confidence <= 1.0


def test_suggest_between_thresholds_offers_two_or_three():
    d = POLICY.decide(hits(0.7, 0.65, 0.62, 0.3))
    assert d.kind == DecisionKind.SUGGEST
    assert [h.key for h in d.suggestions] == ["k0", "k1", "k2"]
    d = POLICY.decide(hits(0.7, 0.2, 0.1))
    assert d.kind == DecisionKind.SUGGEST and 2 <= len(d.suggestions) <= 3


def test_handoff_below_suggest_and_on_no_hits():
    assert POLICY.decide(hits(0.59, 0.5)).kind == DecisionKind.HANDOFF
    d = POLICY.decide([])
    assert d.kind == DecisionKind.HANDOFF and d.confidence == 0.0 and d.hits == []


def test_boundaries_are_inclusive():
    assert POLICY.decide(hits(0.8)).kind == DecisionKind.ANSWER
    assert POLICY.decide(hits(0.6)).kind == DecisionKind.SUGGEST


def test_min_margin_turns_ambiguous_answer_into_suggestion():
    policy = DecisionPolicy(Thresholds(answer=0.8, suggest=0.6, min_margin=0.05))
    assert policy.decide(hits(0.9, 0.88)).kind == DecisionKind.SUGGEST
    assert policy.decide(hits(0.9, 0.80)).kind == DecisionKind.ANSWER


def test_thresholds_validate():
    with pytest.raises(ValueError):
        Thresholds(answer=0.5, suggest=0.7)


def test_confidence_is_monotonic_in_score():
    cal = LogisticCalibrator()
    assert cal(hits(0.9, 0.5)) > cal(hits(0.7, 0.5)) > cal(hits(0.5, 0.5))
    assert cal([]) == 0.0


def test_tune_from_hits_separates_in_scope_from_oos():
    # in-scope queries score high and are right; oos ones score low
    hit_lists = [
        hits(0.9, 0.5),
        hits(0.85, 0.6),
        hits(0.82, 0.4),
        hits(0.5, 0.45),
        hits(0.45, 0.3),
        hits(0.4, 0.2),
    ]
    labels: list[str | None] = ["k0", "k0", "k0", None, None, None]
    for calibrated in (False, True):
        policy = DecisionPolicy.tune_from_hits(hit_lists, labels, calibrated=calibrated)
        th = policy.thresholds
        if calibrated:  # the confidence rule separates them; its score floor stays below
            assert th.answer_confidence is not None and th.answer <= 0.82
        else:
            assert th.answer_confidence is None and 0.5 < th.answer <= 0.82
        assert th.suggest <= th.answer
        m = evaluate_faq_hits(hit_lists, labels, policy)
        assert m["answer_or_handoff_accuracy"] == 1.0
    assert policy.calibrator(hits(0.9, 0.5)) > 0.5 > policy.calibrator(hits(0.4, 0.3))


def test_tune_with_a_retriever_and_evaluate_faq():
    r = HybridRetriever(embedder=HashingEmbedder(dim=256))
    r.sync(
        [
            Document("pw", ("how do i reset my password",)),
            Document("addr", ("how do i change my delivery address",)),
            Document("cancel", ("how can i cancel my order",)),
        ]
    )
    val = [
        ("reset password please", "pw"),
        ("change the delivery address", "addr"),
        ("cancel an order", "cancel"),
        ("what is the capital of peru", None),
    ]
    policy = DecisionPolicy.tune(r, val)
    m = evaluate_faq(r, policy, val)
    assert m["p_at_1"] == 1.0 and m["mrr"] == 1.0 and m["n_oos"] == 1
    assert m["answer_or_handoff_accuracy"] == 1.0


def test_evaluate_faq_hits_known_values():
    policy = DecisionPolicy(Thresholds(answer=0.7, suggest=0.5))
    hit_lists = [
        hits(0.9, 0.3),  # label k0: rank 1, answered -> correct
        hits(0.6, 0.5),  # label k1: rank 2, suggested -> wrong decision, rr=0.5
        hits(0.8, 0.2),  # oos, answered -> wrong
        hits(0.3),  # oos, handed off -> correct
        hits(0.9, 0.8, 0.7, 0.6, 0.5, 0.4),  # label k9: not found
    ]
    labels = ["k0", "k1", None, None, "k9"]
    m = evaluate_faq_hits(hit_lists, labels, policy)
    assert m["p_at_1"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["recall_at_5"] == pytest.approx(2 / 3)
    assert m["oos_recall"] == pytest.approx(0.5)
    assert m["answer_or_handoff_accuracy"] == pytest.approx(2 / 5)
    assert (m["n"], m["n_in_scope"], m["n_oos"]) == (5, 3, 2)


def test_shipped_defaults_exist_for_auto_embedder_and_fallback():
    th = default_thresholds(AUTO_EMBEDDER)
    assert 0.0 < th.suggest <= th.answer < 1.0
    assert default_thresholds("some-unknown-embedder") is not None
    assert isinstance(default_calibrator(AUTO_EMBEDDER), LogisticCalibrator)
    policy = DecisionPolicy.from_defaults(AUTO_EMBEDDER)
    assert policy.thresholds == th


def _pair(top: float, margin: float, key: str = "k0") -> list[Hit]:
    return [Hit(key, top, top, 0.0, "a"), Hit("other", top - margin, top - margin, 0.0, "b")]


def test_tuning_answers_by_calibrated_confidence_when_a_box_cannot_separate():
    # Right answers either clear the runner-up by far or score very high; the wrong and
    # out-of-scope ones sit in between: no (score, margin) box separates them, a line does.
    right = [_pair(0.60 + 0.01 * i, 0.20) for i in range(5)] + [
        _pair(0.90 + 0.01 * i, 0.02) for i in range(5)
    ]
    wrong = [_pair(0.74 + 0.01 * i, 0.05, key="kx") for i in range(5)]
    oos = [_pair(0.70 + 0.01 * i, 0.04) for i in range(5)]
    hit_lists = right + wrong + oos
    labels = ["k0"] * 10 + ["k0"] * 5 + [None] * 5
    box = DecisionPolicy.tune_from_hits(hit_lists, labels, calibrated=False)
    cal = DecisionPolicy.tune_from_hits(hit_lists, labels)
    assert box.thresholds.answer_confidence is None
    assert cal.thresholds.answer_confidence is not None
    box_acc = evaluate_faq_hits(hit_lists, labels, box)["answer_or_handoff_accuracy"]
    cal_acc = evaluate_faq_hits(hit_lists, labels, cal)["answer_or_handoff_accuracy"]
    # every right top hit answered, nothing else: the 5 wrong top hits cannot count
    assert cal_acc == pytest.approx(15 / 20) and box_acc < cal_acc
    d = cal.decide(_pair(0.62, 0.2))
    assert d.kind == DecisionKind.ANSWER and d.confidence >= cal.thresholds.answer_confidence
    assert cal.decide(_pair(0.76, 0.05)).kind != DecisionKind.ANSWER


def test_thresholds_round_trip_and_settings_override_the_confidence_rule():
    th = Thresholds(answer=0.7, suggest=0.6, min_margin=0.01, answer_confidence=0.55)
    assert Thresholds.from_dict(th.as_dict()) == th
    plain = Thresholds(answer=0.7, suggest=0.6)
    assert "answer_confidence" not in plain.as_dict()
    assert Thresholds.from_dict(plain.as_dict()) == plain
    over = th.with_scores(0.8, None)
    assert over.answer_confidence is None and (over.answer, over.suggest) == (0.8, 0.6)
    assert "confidence >= 0.550" in th.describe() and "answer 0.7000" in plain.describe()
    with pytest.raises(ValueError):
        Thresholds(answer=0.7, suggest=0.6, answer_confidence=1.5)


def test_the_confidence_rule_never_answers_below_its_score_floor():
    """One weak hit has a large margin over "nothing": the confidence rule alone would
    answer it; the tuned score floor (``answer``) keeps it a hand-off."""
    policy = DecisionPolicy(
        Thresholds(answer=0.55, suggest=0.5, answer_confidence=0.3),
        LogisticCalibrator(a_score=9.2, a_margin=14.8, bias=-7.3),
    )
    lone = [Hit("k0", 0.30, 0.30, 0.0, "a")]
    assert policy.calibrator(lone) >= 0.3  # confident by the line alone...
    assert policy.decide(lone).kind == DecisionKind.HANDOFF  # ...but below the floor
    assert policy.decide(_pair(0.62, 0.2)).kind == DecisionKind.ANSWER
    th = policy.thresholds
    assert th.with_scores(None, 0.45).answer_confidence == 0.3  # suggest only: rule kept
    assert th.with_scores(0.7, None).answer_confidence is None  # answer: plain score rule
