"""Answer / suggest / hand-off decision on top of retrieval hits.

The decision compares the top hit's fused score with two thresholds; a calibrator turns
the top score and its margin over the runner-up into a 0..1 estimate that the top hit
is right. Thresholds and calibration are tuned on validation queries only; the shipped
defaults per embedder live in ``defaults.toml`` (written by ``bench/kb_bench.py``).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .retrieval import Hit, HybridRetriever

__all__ = [
    "DEFAULTS_PATH",
    "Calibrator",
    "Decision",
    "DecisionKind",
    "DecisionPolicy",
    "LogisticCalibrator",
    "Thresholds",
    "default_calibrator",
    "default_thresholds",
    "load_defaults",
]

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")
_FALLBACK = "_fallback"


class DecisionKind(StrEnum):
    """What the bot should do with a query."""

    ANSWER = "answer"
    SUGGEST = "suggest"
    HANDOFF = "handoff"


@dataclass
class Decision:
    """The decision for one query, with the hits it was based on."""

    kind: DecisionKind
    confidence: float
    hits: list[Hit]
    suggestions: list[Hit] = field(default_factory=list)

    @property
    def top(self) -> Hit | None:
        """The best hit, if any."""
        return self.hits[0] if self.hits else None


@dataclass(frozen=True)
class Thresholds:
    """When to answer, suggest or hand off.

    With ``answer_confidence`` set (what tuning chooses when validation supports it), the
    bot answers when the calibrated confidence - the probability that the top hit is
    right, from the top score and its margin over the runner-up - is at least
    ``answer_confidence`` and the top score at least ``answer``. Without it, it answers when the top hit's fused score is at
    least ``answer`` and beats the runner-up by ``min_margin``. Not answered, it suggests
    the top questions when the top score is at least ``suggest``, else hands off."""

    answer: float
    suggest: float
    min_margin: float = 0.0
    answer_confidence: float | None = None

    def __post_init__(self) -> None:
        if self.suggest > self.answer:
            raise ValueError(f"suggest threshold {self.suggest} exceeds answer {self.answer}")
        if self.min_margin < 0:
            raise ValueError("min_margin must be >= 0")
        if self.answer_confidence is not None and not 0.0 <= self.answer_confidence <= 1.0:
            raise ValueError("answer_confidence must be in [0, 1]")

    def as_dict(self) -> dict[str, float]:
        out = {"answer": self.answer, "suggest": self.suggest, "min_margin": self.min_margin}
        if self.answer_confidence is not None:
            out["answer_confidence"] = self.answer_confidence
        return out

    @classmethod
    def from_dict(cls, row: Mapping[str, object]) -> Thresholds:
        """From :meth:`as_dict` output (``defaults.toml`` rows, saved tuning)."""
        conf = row.get("answer_confidence")
        return cls(
            answer=float(row["answer"]),  # type: ignore[arg-type]
            suggest=float(row["suggest"]),  # type: ignore[arg-type]
            min_margin=float(row.get("min_margin", 0.0)),  # type: ignore[arg-type]
            answer_confidence=None if conf is None else float(conf),  # type: ignore[arg-type]
        )

    def with_scores(self, answer: float | None, suggest: float | None) -> Thresholds:
        """Explicit score thresholds (settings): an answer threshold replaces the tuned rule
        by the plain score rule; a suggest threshold alone keeps the answer rule."""
        answer_t = self.answer if answer is None else float(answer)
        suggest_t = self.suggest if suggest is None else float(suggest)
        conf = self.answer_confidence if answer is None else None
        return Thresholds(answer_t, min(suggest_t, answer_t), self.min_margin, conf)

    def describe(self) -> str:
        rule = (
            f"answer at confidence >= {self.answer_confidence:.3f} and score >= "
            f"{self.answer:.4f}"
            if self.answer_confidence is not None
            else f"answer {self.answer:.4f}, min margin {self.min_margin:.3f}"
        )
        return f"{rule}, suggest {self.suggest:.4f}"


class Calibrator(Protocol):
    """Maps a hit list to the probability that its top hit is the right answer."""

    def __call__(self, hits: Sequence[Hit]) -> float: ...


def _features(hits: Sequence[Hit]) -> tuple[float, float]:
    top = hits[0].score
    second = hits[1].score if len(hits) > 1 else 0.0
    return top, top - second


@dataclass(frozen=True)
class LogisticCalibrator:
    """Platt-style calibration: ``sigmoid(a_score * top + a_margin * margin + bias)``."""

    a_score: float = 20.0
    a_margin: float = 10.0
    bias: float = -14.0

    def __call__(self, hits: Sequence[Hit]) -> float:
        if not hits:
            return 0.0
        top, margin = _features(hits)
        z = self.a_score * top + self.a_margin * margin + self.bias
        return float(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z)))))

    @classmethod
    def fit(
        cls, hit_lists: Sequence[Sequence[Hit]], correct: Sequence[bool], *, l2: float = 1e-3
    ) -> LogisticCalibrator:
        """Fit on validation hit lists labelled with whether the top hit was right."""
        rows = [(_features(h), bool(c)) for h, c in zip(hit_lists, correct, strict=True) if h]
        if not rows or len({c for _, c in rows}) < 2:
            return cls()
        x = np.array([[1.0, f[0], f[1]] for f, _ in rows], dtype=np.float64)
        y = np.array([c for _, c in rows], dtype=np.float64)
        w = np.zeros(3)
        for _ in range(100):  # Newton / IRLS with a small ridge
            p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -60, 60)))
            grad = x.T @ (p - y) + l2 * np.r_[0.0, w[1:]]
            hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.diag([1e-9, 1.0, 1.0])
            step = np.linalg.solve(hess + 1e-9 * np.eye(3), grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(a_score=float(w[1]), a_margin=float(w[2]), bias=float(w[0]))


def load_defaults() -> dict:
    """The parsed ``defaults.toml`` (empty when missing or unreadable)."""
    try:
        with DEFAULTS_PATH.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def default_thresholds(embedder_name: str) -> Thresholds:
    """Tuned default thresholds for ``embedder_name`` from ``defaults.toml`` (tuned on
    validation splits only); a conservative fallback for an embedder without entry."""
    table = load_defaults().get("thresholds", {})
    row = table.get(embedder_name) or table.get(_FALLBACK) or {"answer": 0.8, "suggest": 0.6}
    return Thresholds.from_dict(row)


def default_calibrator(embedder_name: str) -> LogisticCalibrator:
    """Calibration fitted on validation queries for ``embedder_name`` (``defaults.toml``)."""
    table = load_defaults().get("calibration", {})
    row = table.get(embedder_name) or table.get(_FALLBACK)
    if not row:
        return LogisticCalibrator()
    return LogisticCalibrator(
        a_score=float(row["a_score"]), a_margin=float(row["a_margin"]), bias=float(row["bias"])
    )


def _plateau_middle(grid: np.ndarray, values: np.ndarray) -> float:
    """The middle of the longest run of grid points achieving the best value."""
    best = values.max()
    ok = values >= best - 1e-12
    best_len, best_mid, i = 0, float(grid[int(np.argmax(values))]), 0
    while i < len(grid):
        if ok[i]:
            j = i
            while j + 1 < len(grid) and ok[j + 1]:
                j += 1
            if j - i + 1 > best_len:
                best_len, best_mid = j - i + 1, float((grid[i] + grid[j]) / 2)
            i = j + 1
        else:
            i += 1
    return best_mid


class DecisionPolicy:
    """Turns retrieval hits into an ANSWER / SUGGEST / HANDOFF decision."""

    def __init__(
        self,
        thresholds: Thresholds,
        calibrator: Calibrator | Callable[[Sequence[Hit]], float] | None = None,
        *,
        max_suggestions: int = 3,
    ) -> None:
        self.thresholds = thresholds
        self.calibrator = calibrator or LogisticCalibrator()
        self.max_suggestions = max_suggestions

    def __repr__(self) -> str:
        return f"DecisionPolicy({self.thresholds!r}, {self.calibrator!r})"

    @classmethod
    def from_defaults(cls, embedder_name: str) -> DecisionPolicy:
        """Policy with the shipped, validation-tuned thresholds and calibration."""
        return cls(default_thresholds(embedder_name), default_calibrator(embedder_name))

    def decide(self, hits: Sequence[Hit]) -> Decision:
        """Decide what to do with a query given its hits (best first)."""
        hits = list(hits)
        if not hits:
            return Decision(DecisionKind.HANDOFF, 0.0, [], [])
        th = self.thresholds
        conf = float(self.calibrator(hits))
        top, margin = _features(hits)
        if th.answer_confidence is not None:
            answer = conf >= th.answer_confidence and top >= th.answer
        else:
            answer = top >= th.answer and margin >= th.min_margin
        if answer:
            return Decision(DecisionKind.ANSWER, conf, hits, [])
        if top >= th.suggest:
            floor = th.suggest - 0.1
            sugg = [h for h in hits[: self.max_suggestions] if h.score >= floor]
            if len(sugg) < 2:
                sugg = hits[: min(2, self.max_suggestions)]
            return Decision(DecisionKind.SUGGEST, conf, hits, sugg)
        return Decision(DecisionKind.HANDOFF, conf, hits, [])

    # ------------------------------------------------------------------ tuning
    @classmethod
    def tune(
        cls,
        retriever: HybridRetriever,
        val_queries: list[tuple[str, str | None]],
        *,
        k: int = 5,
        calibrated: bool = True,
    ) -> DecisionPolicy:
        """Tune thresholds and calibration on validation ``(query, expected key or None)``
        pairs (``None`` = out of scope: the bot should hand off). Never pass test data."""
        hit_lists = [retriever.search(q, k=k) for q, _ in val_queries]
        return cls.tune_from_hits(
            hit_lists, [label for _, label in val_queries], calibrated=calibrated
        )

    @classmethod
    def tune_from_hits(
        cls,
        hit_lists: Sequence[Sequence[Hit]],
        labels: Sequence[str | None],
        *,
        margins: Sequence[float] = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05),
        oos_suggest_cost: float = 1.0,
        wrong_suggest_cost: float = 0.25,
        calibrated: bool = True,
    ) -> DecisionPolicy:
        """Tune from precomputed hit lists.

        ``answer`` and ``min_margin`` maximise answer-or-hand-off accuracy (an in-scope
        query counts when its right entry is answered, an out-of-scope one when it is not
        answered). With ``calibrated``, a threshold on the calibrated confidence
        (``answer_confidence``) is tuned the same way and replaces them when it does at
        least as well on these queries. ``suggest`` then maximises (right entry among the suggestions)
        − ``oos_suggest_cost`` × (out-of-scope queries shown suggestions)
        − ``wrong_suggest_cost`` × (in-scope queries shown only wrong suggestions).
        """
        if not hit_lists:
            raise ValueError("no validation queries")
        n = len(hit_lists)
        top = np.array([h[0].score if h else -1.0 for h in hit_lists])
        margin = np.array([_features(h)[1] if h else 0.0 for h in hit_lists])
        oos = np.array([lab is None for lab in labels])
        right1 = np.array(
            [
                bool(h) and lab is not None and h[0].key == lab
                for h, lab in zip(hit_lists, labels, strict=True)
            ]
        )
        right3 = np.array(
            [
                lab is not None and any(x.key == lab for x in h[:3])
                for h, lab in zip(hit_lists, labels, strict=True)
            ]
        )
        grid = np.round(np.arange(0.0, 1.0001, 0.0025), 4)
        best = (-1.0, 1.0, 0.0)
        for mm in margins:
            ok_margin = margin >= mm
            accs = np.array(
                [
                    ((right1 & (top >= t) & ok_margin) | (oos & ~((top >= t) & ok_margin))).sum()
                    / n
                    for t in grid
                ]
            )
            if accs.max() > best[0] + 1e-12:
                best = (float(accs.max()), _plateau_middle(grid, accs), float(mm))
        box_acc, t_answer, t_margin = best
        answered = (top >= t_answer) & (margin >= t_margin)
        # The calibrated rule: answer when P(top hit right | top, margin) >= p and the top
        # score is at least a floor (a line in (top, margin) is not enough on its own: one
        # lone weak hit has a large "margin", and validation rarely has such cases, so the
        # floor is the highest that keeps the best validation accuracy, capped at the plain
        # rule's threshold). The rule is kept when it does at least as well as the box.
        calibrator = LogisticCalibrator.fit(hit_lists, right1.tolist())
        conf = np.array([calibrator(h) if h else 0.0 for h in hit_lists])
        p_answer: float | None = None
        if calibrated:
            over_p = conf[None, :] >= grid[:, None]  # (p, query)
            per_floor = np.empty(len(grid))
            for i, floor in enumerate(grid):
                ans = over_p & (top >= floor)[None, :]
                per_floor[i] = (((right1 & ans) | (oos & ~ans)).sum(axis=1) / n).max()
            if per_floor.max() >= box_acc - 1e-12:
                # the highest floor that keeps the best accuracy, but never above the plain
                # rule's threshold: as strict as validation allows, not stricter than the box
                best_floors = np.flatnonzero(per_floor >= per_floor.max() - 1e-12)
                floor = min(float(grid[best_floors.max()]), t_answer)
                ans = over_p & (top >= floor)[None, :]
                p_answer = _plateau_middle(grid, ((right1 & ans) | (oos & ~ans)).sum(axis=1) / n)
                t_answer, t_margin = floor, 0.0
                answered = (conf >= p_answer) & (top >= floor)
        util = []
        sgrid = grid[grid <= t_answer]
        for t in sgrid:
            shown = ~answered & (top >= t)
            util.append(
                (shown & right3).sum()
                - oos_suggest_cost * (shown & oos).sum()
                - wrong_suggest_cost * (shown & ~oos & ~right3).sum()
            )
        t_suggest = _plateau_middle(sgrid, np.array(util, dtype=float)) if len(sgrid) else 0.0
        t_suggest = min(t_suggest, t_answer)
        return cls(
            Thresholds(
                answer=round(t_answer, 4),
                suggest=round(t_suggest, 4),
                min_margin=t_margin,
                answer_confidence=None if p_answer is None else round(p_answer, 4),
            ),
            calibrator,
        )
