"""Evaluation metrics for FAQ retrieval + hand-off and for intent classification, and
loaders for the benchmark JSONL formats (``shared/data``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .retrieval import Document

if TYPE_CHECKING:  # pragma: no cover
    from .decision import DecisionPolicy
    from .intents import IntentClassifier
    from .retrieval import Hit, HybridRetriever

__all__ = [
    "OOS",
    "evaluate_faq",
    "evaluate_faq_hits",
    "evaluate_intent_predictions",
    "evaluate_intents",
    "load_faq_jsonl",
    "load_intent_jsonl",
    "load_queries_jsonl",
]

#: Label used for out-of-scope rows in the benchmark files.
OOS = "oos"


def _read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: invalid JSON: {exc}") from exc
    return rows


def load_faq_jsonl(path: str | Path, *, with_answer: bool = True) -> list[Document]:
    """FAQ entries (``{"id", "question", "answer"}`` per line) as documents."""
    docs = []
    for row in _read_jsonl(path):
        texts = [row["question"], *row.get("alternatives", [])]
        docs.append(
            Document(
                key=str(row["id"]),
                texts=tuple(texts),
                lang=row.get("lang"),
                answer=row.get("answer") if with_answer else None,
            )
        )
    return docs


def load_queries_jsonl(path: str | Path, split: str) -> list[tuple[str, str | None]]:
    """``(query, faq_id or None)`` pairs of one split; ``None`` = out of scope."""
    out: list[tuple[str, str | None]] = []
    for row in _read_jsonl(path):
        if row.get("split") != split:
            continue
        fid = row.get("faq_id")
        out.append((row["query"], None if fid in (None, OOS) else str(fid)))
    return out


def load_intent_jsonl(
    path: str | Path, split: str, *, keep_oos: bool = True, with_meta: bool = False
) -> list[tuple[str, str | None]] | list[tuple[str, str | None, dict]]:
    """``(text, intent or None)`` pairs of one split (``None`` for the ``oos`` label).
    With ``keep_oos=False`` out-of-scope rows are dropped; with ``with_meta`` each tuple
    gets the full row as a third element (e.g. for ``oos_type``)."""
    out: list = []
    for row in _read_jsonl(path):
        if row.get("split") != split:
            continue
        label = row.get("intent")
        label = None if label in (None, OOS) else str(label)
        if label is None and not keep_oos:
            continue
        out.append((row["text"], label, row) if with_meta else (row["text"], label))
    return out


# ---------------------------------------------------------------------- FAQ metrics
def evaluate_faq_hits(
    hit_lists: Sequence[Sequence[Hit]],
    labels: Sequence[str | None],
    policy: DecisionPolicy,
) -> dict[str, float]:
    """Metrics from precomputed hit lists (see :func:`evaluate_faq`)."""
    from .decision import DecisionKind

    rr, p1, r5 = [], [], []
    correct_decisions = 0
    oos_total = oos_rejected = 0
    answered = answered_right = 0
    for hits, label in zip(hit_lists, labels, strict=True):
        decision = policy.decide(hits)
        is_answer = decision.kind == DecisionKind.ANSWER
        answered += is_answer
        if label is None:
            oos_total += 1
            if not is_answer:
                oos_rejected += 1
                correct_decisions += 1
            continue
        keys = [h.key for h in hits]
        rank = keys.index(label) + 1 if label in keys else 0
        rr.append(1.0 / rank if rank else 0.0)
        p1.append(1.0 if rank == 1 else 0.0)
        r5.append(1.0 if 0 < rank <= 5 else 0.0)
        if rank == 1 and is_answer:
            correct_decisions += 1
            answered_right += 1
    n = len(labels)
    n_in = len(rr)
    return {
        "p_at_1": float(np.mean(p1)) if p1 else 0.0,
        "mrr": float(np.mean(rr)) if rr else 0.0,
        "recall_at_5": float(np.mean(r5)) if r5 else 0.0,
        "oos_recall": oos_rejected / oos_total if oos_total else 0.0,
        "answer_or_handoff_accuracy": correct_decisions / n if n else 0.0,
        "answer_precision": answered_right / answered if answered else 0.0,
        "answer_rate": answered / n if n else 0.0,
        "n": float(n),
        "n_in_scope": float(n_in),
        "n_oos": float(oos_total),
    }


def evaluate_faq(
    retriever: HybridRetriever,
    policy: DecisionPolicy,
    queries: list[tuple[str, str | None]],
    *,
    k: int = 10,
) -> dict[str, float]:
    """FAQ retrieval and hand-off metrics over ``(query, expected key or None)``.

    P@1, MRR and R@5 are over in-scope queries (MRR counts ranks up to ``k``).
    ``answer_or_handoff_accuracy`` is over all queries: right when the top-1 is the
    expected entry and the policy answers, or an out-of-scope query is not answered.
    ``oos_recall`` is the share of out-of-scope queries not answered.
    """
    hit_lists = [retriever.search(q, k=k) for q, _ in queries]
    return evaluate_faq_hits(hit_lists, [label for _, label in queries], policy)


# ---------------------------------------------------------------------- intent metrics
def evaluate_intent_predictions(
    predicted: Sequence[str | None], gold: Sequence[str | None]
) -> dict[str, float]:
    """Metrics from predicted vs gold labels (``None`` = out of scope)."""
    pred = list(predicted)
    gold = list(gold)
    if len(pred) != len(gold):
        raise ValueError("predicted and gold differ in length")
    in_idx = [i for i, g in enumerate(gold) if g is not None]
    oos_idx = [i for i, g in enumerate(gold) if g is None]
    in_acc = float(np.mean([pred[i] == gold[i] for i in in_idx])) if in_idx else 0.0
    tp = sum(1 for i in oos_idx if pred[i] is None)
    pred_oos = sum(1 for p in pred if p is None)
    rec = tp / len(oos_idx) if oos_idx else 0.0
    prec = tp / pred_oos if pred_oos else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    labels = sorted({g for g in gold if g is not None})
    f1s = []
    for lab in labels:
        tp_l = sum(1 for p, g in zip(pred, gold, strict=True) if p == lab and g == lab)
        fp_l = sum(1 for p, g in zip(pred, gold, strict=True) if p == lab and g != lab)
        fn_l = sum(1 for p, g in zip(pred, gold, strict=True) if p != lab and g == lab)
        denom = 2 * tp_l + fp_l + fn_l
        f1s.append(2 * tp_l / denom if denom else 0.0)
    return {
        "in_scope_accuracy": in_acc,
        "accuracy": float(np.mean([p == g for p, g in zip(pred, gold, strict=True)]))
        if gold
        else 0.0,
        "oos_recall": rec,
        "oos_precision": prec,
        "oos_f1": f1,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "n": float(len(gold)),
        "n_in_scope": float(len(in_idx)),
        "n_oos": float(len(oos_idx)),
    }


def evaluate_intents(
    classifier: IntentClassifier, test: list[tuple[str, str | None]]
) -> dict[str, float]:
    """In-scope accuracy, OOS recall/precision/F1 and macro-F1 (over in-scope intents)
    of ``classifier`` on ``(text, intent or None)`` pairs."""
    preds = classifier.predict_batch([t for t, _ in test])
    return evaluate_intent_predictions([p.intent for p in preds], [g for _, g in test])
