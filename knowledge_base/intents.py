"""Intent classification with out-of-scope detection, and Rasa 3.x NLU YAML I/O.

The classifier combines a linear model over sentence embeddings (plus optional
character n-gram TF-IDF features) with a nearest-neighbour vote; a query whose
in-scope score is below ``oos_threshold`` is out of scope (``intent=None``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from .embedder import Embedder
from .textnorm import clean_text, has_content, normalize

__all__ = [
    "IntentClassifier",
    "IntentPrediction",
    "dump_rasa_nlu",
    "load_rasa_nlu",
    "strip_entities",
]

# [text](entity), [text](entity:value), [text]{"entity": ...}
_ENTITY_RE = re.compile(r"\[([^\[\]]+)\](?:\([^()]*\)|\{[^{}]*\})")
_PLAIN_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")


# ---------------------------------------------------------------------- Rasa YAML
def strip_entities(text: str) -> str:
    """Remove Rasa entity annotations, keeping the annotated text."""
    return _ENTITY_RE.sub(r"\1", text)


def _where(node: yaml.Node | None) -> str:
    if node is None or node.start_mark is None:
        return ""
    mark = node.start_mark
    return f" at line {mark.line + 1}, column {mark.column + 1}"


def _read_source(source: str | Path) -> tuple[str, str]:
    """(yaml text, description) from a path, a directory of .yml files, or YAML text."""
    if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yml", ".yaml"))
    ):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"Rasa NLU file not found: {path}")
        return path.read_text(encoding="utf-8"), str(path)
    return source, "<string>"


def load_rasa_nlu(source: str | Path) -> dict[str, list[str]]:
    """Read Rasa 3.x NLU training data into ``{intent: [example, ...]}``.

    ``source`` is a path to a ``.yml`` file, a directory (all ``*.yml``/``*.yaml`` files
    in it, merged), or the YAML text itself. Entity annotations such as
    ``[Tokyo](city)`` are stripped to their text; non-intent items (synonym, regex,
    lookup) are ignored. Raises ``ValueError`` with the position on malformed input.
    """
    if isinstance(source, str) and "\n" not in source and Path(source).exists():
        source = Path(source)
    if isinstance(source, Path) and source.is_dir():
        merged: dict[str, list[str]] = {}
        for path in sorted([*source.glob("*.yml"), *source.glob("*.yaml")]):
            for intent, exs in load_rasa_nlu(path).items():
                merged.setdefault(intent, []).extend(e for e in exs if e not in merged[intent])
        return merged
    text, origin = _read_source(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"malformed Rasa NLU YAML in {origin}{pos}: {problem}") from exc
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ValueError(f"Rasa NLU data in {origin} must be a mapping{_where(root)}")
    nodes = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    nlu = nodes.get("nlu")
    if nlu is None:
        return {}
    if not isinstance(nlu, yaml.SequenceNode):
        raise ValueError(f"'nlu' in {origin} must be a list{_where(nlu)}")
    out: dict[str, list[str]] = {}
    for item in nlu.value:
        if not isinstance(item, yaml.MappingNode):
            raise ValueError(f"nlu item in {origin} must be a mapping{_where(item)}")
        fields = {k.value: v for k, v in item.value if isinstance(k, yaml.ScalarNode)}
        if "intent" not in fields:
            continue  # synonym / regex / lookup items
        name_node = fields["intent"]
        if not isinstance(name_node, yaml.ScalarNode) or not str(name_node.value).strip():
            raise ValueError(f"intent name in {origin} must be a string{_where(name_node)}")
        name = str(name_node.value).strip()
        ex_node = fields.get("examples")
        if ex_node is None:
            raise ValueError(f"intent {name!r} in {origin} has no examples{_where(item)}")
        examples = _parse_examples(ex_node, name, origin)
        bucket = out.setdefault(name, [])
        bucket.extend(e for e in examples if e not in bucket)
    return out


def _parse_examples(node: yaml.Node, intent: str, origin: str) -> list[str]:
    examples: list[str] = []
    if isinstance(node, yaml.ScalarNode):
        base_line = node.start_mark.line + (1 if node.style in ("|", ">") else 0)
        for offset, raw in enumerate(str(node.value).splitlines()):
            line = raw.strip()
            if not line:
                continue
            if not line.startswith("-"):
                raise ValueError(
                    f"example of intent {intent!r} in {origin} at line {base_line + offset + 1} "
                    f"must start with '- ': {line[:60]!r}"
                )
            examples.append(line[1:].strip())
    elif isinstance(node, yaml.SequenceNode):  # list form: [- text: ..., metadata: ...]
        for sub in node.value:
            if isinstance(sub, yaml.ScalarNode):
                examples.append(str(sub.value))
            elif isinstance(sub, yaml.MappingNode):
                f = {k.value: v for k, v in sub.value if isinstance(k, yaml.ScalarNode)}
                t = f.get("text")
                if not isinstance(t, yaml.ScalarNode):
                    raise ValueError(f"example in {origin} has no text{_where(sub)}")
                examples.append(str(t.value))
            else:
                raise ValueError(f"bad example in {origin}{_where(sub)}")
    else:
        raise ValueError(
            f"examples of intent {intent!r} in {origin} must be a block{_where(node)}"
        )
    cleaned = (clean_text(strip_entities(e)) for e in examples)
    return [e for e in cleaned if e]


def dump_rasa_nlu(examples: dict[str, list[str]]) -> str:
    """Rasa 3.1 NLU YAML for ``{intent: [example, ...]}`` (inverse of :func:`load_rasa_nlu`)."""
    lines = ['version: "3.1"', "nlu:"]
    for intent, texts in examples.items():
        name = intent if _PLAIN_NAME_RE.match(intent) else json.dumps(intent, ensure_ascii=False)
        lines.append(f"- intent: {name}")
        lines.append("  examples: |")
        for text in texts:
            t = clean_text(text)
            if t:
                lines.append(f"    - {t}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- classifier
@dataclass
class IntentPrediction:
    """Predicted intent (``None`` = out of scope), its confidence and the top ranking."""

    intent: str | None
    confidence: float
    ranking: list[tuple[str, float]]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class _CharTfidf:
    """Hashed character n-gram TF-IDF restricted to n-grams seen in training."""

    def __init__(
        self, n_features: int = 2**20, ngram: tuple[int, int] = (2, 4), min_df: int = 2
    ) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.n_features = n_features
        self.ngram = ngram
        self.min_df = min_df
        self._hv = HashingVectorizer(
            analyzer="char_wb",
            ngram_range=ngram,
            n_features=n_features,
            alternate_sign=False,
            norm=None,
            preprocessor=normalize,
        )
        self.cols: np.ndarray | None = None
        self.idf: np.ndarray | None = None

    def fit(self, texts: Sequence[str]) -> _CharTfidf:
        x = self._hv.transform(texts).tocsc()
        df = np.diff(x.indptr)
        n = x.shape[0]
        self.cols = np.flatnonzero(df >= min(self.min_df, max(1, n // 2))).astype(np.int64)
        self.idf = (np.log((1 + n) / (1 + df[self.cols])) + 1.0).astype(np.float32)
        return self

    def transform(self, texts: Sequence[str]):
        from sklearn.preprocessing import normalize as l2norm

        assert self.idf is not None and self.cols is not None, "fit first"
        x = self._hv.transform(texts).tocsc()[:, self.cols].tocsr().astype(np.float32)
        x.data = np.log1p(x.data)  # sublinear tf
        x = x.multiply(self.idf).tocsr()
        return l2norm(x)


OosScore = Literal["prob", "energy", "hybrid"]


class IntentClassifier:
    """Embedding-based intent classifier with out-of-scope rejection.

    Intent probabilities mix a multinomial logistic regression over the features
    (sentence embedding, plus character n-gram TF-IDF when ``tfidf``) with a
    nearest-neighbour vote (``knn_weight``). A query is out of scope (``intent=None``)
    when its in-scope score is below ``oos_threshold`` or an explicit out-of-scope
    class (examples filed under ``oos_label`` in :meth:`fit`) wins. The in-scope score
    is ``oos_score``: ``"prob"`` the best probability; ``"energy"`` the standardised
    log-sum-exp of the linear model's logits; ``"hybrid"`` the mean of that and the
    standardised mean similarity to the ``knn_k`` nearest training examples; these two
    are mapped to 0..1 so that 0.5 accepts about 95% of the training examples. Tune the
    threshold on validation data with :meth:`tune_threshold` where possible.
    (``knn_k=1``, the nearest example alone, separated out-of-scope queries best on the
    CLINC150 and BANKING77-OOS validation data: see ``bench/kb_bench.py``.)
    """

    def __init__(
        self,
        *,
        embedder: Embedder,
        oos_threshold: float | None = None,
        oos_score: OosScore = "hybrid",
        tfidf: bool = True,
        tfidf_weight: float = 10.0,
        knn_weight: float = 0.0,
        knn_temperature: float = 0.05,
        knn_k: int = 1,
        C: float = 0.1,
        dense_scale: float = 1.0,
        oos_label: str | None = "oos",
        max_iter: int = 300,
    ) -> None:
        if oos_score not in ("prob", "energy", "hybrid"):
            raise ValueError(f"unknown oos_score {oos_score!r}")
        self.embedder = embedder
        self.oos_threshold = oos_threshold
        self.oos_score = oos_score
        self.tfidf = tfidf
        self.tfidf_weight = tfidf_weight
        self.knn_weight = knn_weight
        self.knn_temperature = knn_temperature
        if knn_k < 1:
            raise ValueError("knn_k must be >= 1")
        self.knn_k = knn_k
        self.C = C
        self.dense_scale = dense_scale
        self.oos_label = oos_label
        self.max_iter = max_iter
        self.classes_: list[str] = []
        self._W: np.ndarray | None = None  # (n_classes, embedding dim)
        self._Ws: np.ndarray | None = None  # TF-IDF feature weights (n_classes, n_ngrams)
        self._b: np.ndarray | None = None
        self._tfidf: _CharTfidf | None = None
        self._train_vecs: np.ndarray | None = None
        self._train_labels: np.ndarray | None = None
        # energy mean/std, knn mean/std, centre/scale of the 0..1 mapping
        self._stats = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])

    # ------------------------------------------------------------------ features
    def _features(self, texts: Sequence[str], vecs: np.ndarray | None = None):
        if vecs is None:
            vecs = self.embedder.embed(list(texts), kind="query")
        sparse = None
        if self._tfidf is not None:
            sparse = self._tfidf.transform(list(texts)) * self.tfidf_weight
        return vecs, sparse

    @property
    def intents(self) -> list[str]:
        """In-scope intents the classifier knows."""
        return [c for c in self.classes_ if c != self.oos_label]

    def fit(
        self, examples: dict[str, list[str]], *, vectors: np.ndarray | None = None
    ) -> IntentClassifier:
        """Train on ``{intent: [example, ...]}``. ``vectors`` may pass precomputed
        embeddings of the examples in iteration order (used by the benchmark)."""
        from scipy import sparse as sp
        from sklearn.linear_model import LogisticRegression

        texts: list[str] = []
        labels: list[str] = []
        for intent, exs in examples.items():
            for e in exs:
                texts.append(e)
                labels.append(intent)
        if not texts:
            raise ValueError("no training examples")
        classes = sorted(set(labels))
        if not [c for c in classes if c != self.oos_label]:
            raise ValueError("need at least one in-scope intent")
        self.classes_ = classes
        y = np.array([classes.index(lab) for lab in labels])
        self._tfidf = _CharTfidf().fit(texts) if self.tfidf else None
        vecs, sparse = self._features(texts, vectors)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        # standardise the embedding features (sentence embeddings are anisotropic: without
        # centring, the gradients start tiny and the solver stops early); the scaling is
        # folded back into the weights below, so inference uses the raw vectors
        mu = vecs.mean(axis=0)
        sd = np.maximum(vecs.std(axis=0), 1e-6)
        z = (vecs - mu) / sd * self.dense_scale
        x = sp.hstack([sp.csr_matrix(z), sparse]).tocsr() if sparse is not None else z
        d = vecs.shape[1]
        if len(classes) == 1:
            self._W = np.zeros((1, d), dtype=np.float32)
            self._b = np.zeros(1, dtype=np.float32)
            self._Ws = None
        else:
            lr = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=1e-4)
            lr.fit(x, y)
            coef = np.asarray(lr.coef_, dtype=np.float64)
            b = np.asarray(lr.intercept_, dtype=np.float64)
            if coef.shape[0] == 1:  # binary: expand to two softmax rows
                coef = np.vstack([-coef / 2, coef / 2])
                b = np.array([-b[0] / 2, b[0] / 2])
            wd = coef[:, :d] * (self.dense_scale / sd)
            b = (b - wd @ mu).astype(np.float32)
            coef = coef.astype(np.float32)
            self._W = np.ascontiguousarray(wd, dtype=np.float32)
            self._Ws = np.ascontiguousarray(coef[:, d:]) if sparse is not None else None
            self._b = b
        self._train_vecs = vecs
        self._train_labels = y.astype(np.int32)
        # standardisation of the raw OOS scores, from the in-scope training examples
        logits = self._logits(vecs, sparse)
        energy = self._energy(logits)
        knn = self._knn(vecs, exclude_self=True, k=self.knn_k)
        inscope = np.array([lab != self.oos_label for lab in labels])
        e, k = energy[inscope], knn[inscope]
        self._stats = np.array(
            [e.mean(), max(e.std(), 1e-6), k.mean(), max(k.std(), 1e-6), 0.0, 1.0],
            dtype=np.float64,
        )
        # map the raw score to 0..1 so that 0.5 accepts ~95% of (training) in-scope text
        raw = self._raw_score(energy[inscope], knn[inscope])
        self._stats[4] = np.percentile(raw, 5)
        self._stats[5] = max(raw.std() / 2, 1e-6)
        return self

    def _raw_score(self, energy: np.ndarray, knn: np.ndarray) -> np.ndarray:
        e_mu, e_sd, k_mu, k_sd = self._stats[:4]
        score = (energy - e_mu) / e_sd
        if self.oos_score == "hybrid":
            score = (score + (knn - k_mu) / k_sd) / 2
        return score

    # ------------------------------------------------------------------ scoring
    def _logits(self, vecs: np.ndarray, sparse) -> np.ndarray:
        assert self._W is not None and self._b is not None
        logits = vecs @ self._W.T + self._b
        if sparse is not None and self._Ws is not None:
            logits = logits + np.asarray(sparse @ self._Ws.T)
        return logits.astype(np.float64)

    def _inscope_cols(self) -> np.ndarray:
        return np.array([c != self.oos_label for c in self.classes_])

    def _energy(self, logits: np.ndarray) -> np.ndarray:
        z = logits[:, self._inscope_cols()]
        m = z.max(axis=1, keepdims=True)
        return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]

    def _knn(self, vecs: np.ndarray, *, exclude_self: bool = False, k: int = 1) -> np.ndarray:
        if self._train_vecs is None or self._train_labels is None:
            return np.zeros(len(vecs))
        inscope = self._inscope_cols()[self._train_labels]
        ref = self._train_vecs[inscope]
        if len(ref) == 0:
            return np.zeros(len(vecs))
        out = np.empty(len(vecs))
        for start in range(0, len(vecs), 1024):
            sims = vecs[start : start + 1024] @ ref.T
            if exclude_self:
                sims[sims > 0.9999] = -1.0
            kk = min(k, sims.shape[1])
            top = np.partition(sims, sims.shape[1] - kk, axis=1)[:, -kk:]
            out[start : start + 1024] = top.mean(axis=1)
        return out

    def _class_knn(self, vecs: np.ndarray) -> np.ndarray:
        assert self._train_vecs is not None and self._train_labels is not None
        n_cls = len(self.classes_)
        best = np.full((len(vecs), n_cls), -1.0)
        for start in range(0, len(vecs), 1024):
            sims = vecs[start : start + 1024] @ self._train_vecs.T
            for c in range(n_cls):
                mask = self._train_labels == c
                if mask.any():
                    best[start : start + 1024, c] = sims[:, mask].max(axis=1)
        return best

    def _forward(
        self, texts: Sequence[str], vectors: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities, in-scope score) per text."""
        if self._W is None or self._b is None:
            raise RuntimeError("IntentClassifier is not fitted")
        vecs, sparse = self._features(texts, vectors)
        logits = self._logits(vecs, sparse)
        p = _softmax(logits)
        if self.knn_weight > 0 and self._train_vecs is not None:
            pk = _softmax(self._class_knn(vecs) / self.knn_temperature)
            p = (1.0 - self.knn_weight) * p + self.knn_weight * pk
        if self.oos_score == "prob":
            score = self._best_inscope(p)[1]
        else:
            knn = (
                self._knn(vecs, k=self.knn_k)
                if self.oos_score == "hybrid"
                else np.zeros(len(vecs))
            )
            raw = self._raw_score(self._energy(logits), knn)
            center, scale = self._stats[4], self._stats[5]
            score = 1.0 / (1.0 + np.exp(-np.clip((raw - center) / scale, -50, 50)))
        return p.astype(np.float32), score

    def predict_proba(
        self, texts: Sequence[str], *, vectors: np.ndarray | None = None
    ) -> np.ndarray:
        """Class probabilities (n_texts, n_classes) in the order of ``classes_``."""
        texts = [clean_text(t) or " " for t in texts]
        if not texts:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        return self._forward(texts, vectors)[0]

    def _best_inscope(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(best in-scope class index, its probability) per row."""
        masked = np.where(self._inscope_cols()[None, :], proba, -1.0)
        idx = masked.argmax(axis=1)
        return idx, masked[np.arange(len(idx)), idx]

    def _oos_win(self, proba: np.ndarray) -> np.ndarray:
        _, conf = self._best_inscope(proba)
        if self.oos_label in self.classes_:
            return proba[:, self.classes_.index(self.oos_label)] > conf
        return np.zeros(len(proba), dtype=bool)

    def _decide(
        self, proba: np.ndarray, score: np.ndarray, threshold: float | None
    ) -> list[IntentPrediction]:
        idx, conf = self._best_inscope(proba)
        oos_win = self._oos_win(proba)
        out = []
        for row, (i, c) in enumerate(zip(idx, conf, strict=True)):
            order = np.argsort(-proba[row])[:5]
            ranking = [(self.classes_[j], float(proba[row, j])) for j in order]
            is_oos = bool(oos_win[row]) or (threshold is not None and score[row] < threshold)
            out.append(IntentPrediction(None if is_oos else self.classes_[i], float(c), ranking))
        return out

    def predict_batch(
        self, texts: Sequence[str], *, vectors: np.ndarray | None = None
    ) -> list[IntentPrediction]:
        """Predictions for many texts."""
        texts = [clean_text(t) or " " for t in texts]
        if not texts:
            return []
        proba, score = self._forward(texts, vectors)
        return self._decide(proba, score, self.oos_threshold)

    def predict(self, text: str) -> IntentPrediction:
        """Prediction for one text (empty or symbol-only text is out of scope)."""
        if not isinstance(text, str) or not has_content(normalize(text)):
            return IntentPrediction(None, 0.0, [])
        return self.predict_batch([text])[0]

    def tune_threshold(
        self,
        val: list[tuple[str, str | None]],
        *,
        vectors: np.ndarray | None = None,
        min_oos_recall: float | None = None,
    ) -> float:
        """Set ``oos_threshold`` from validation pairs (label ``None`` or ``oos_label`` =
        out of scope) and return it. By default it maximises in-scope accuracy + OOS
        recall; with ``min_oos_recall`` it maximises in-scope accuracy among thresholds
        whose OOS recall reaches that value."""
        if not val:
            raise ValueError("no validation examples")
        texts = [clean_text(t) or " " for t, _ in val]
        proba, score = self._forward(texts, vectors)
        labels = [None if lab == self.oos_label else lab for _, lab in val]
        self.oos_threshold = self._best_threshold(proba, score, labels, min_oos_recall)
        return self.oos_threshold

    def _best_threshold(
        self,
        proba: np.ndarray,
        score: np.ndarray,
        labels: Sequence[str | None],
        min_oos_recall: float | None,
    ) -> float:
        idx, _ = self._best_inscope(proba)
        oos_win = self._oos_win(proba)
        is_oos = np.array([lab is None for lab in labels])
        pred = np.array([self.classes_[i] for i in idx])
        right = np.array([p == lab for p, lab in zip(pred, labels, strict=True)]) & ~oos_win
        values = np.unique(score)
        # candidate thresholds: below everything, between neighbours, above everything
        cands = np.concatenate(
            [[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]]
        )
        n_in, n_oos = max(1, int((~is_oos).sum())), max(1, int(is_oos.sum()))
        acc = np.empty(len(cands))
        rec = np.empty(len(cands))
        for i, t in enumerate(cands):
            reject = (score < t) | oos_win
            acc[i] = (right & ~reject & ~is_oos).sum() / n_in
            rec[i] = (reject & is_oos).sum() / n_oos if is_oos.any() else 0.0
        if min_oos_recall is not None and is_oos.any():
            objective = np.where(rec >= min_oos_recall - 1e-12, acc, -1.0 + rec)
        else:
            objective = acc + rec
        best = np.flatnonzero(objective >= objective.max() - 1e-12)
        # widest run of optimal candidates -> its middle threshold
        runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
        run = max(runs, key=lambda r: cands[r[-1]] - cands[r[0]])
        return float((cands[run[0]] + cands[run[-1]]) / 2)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save to a directory (``config.json`` + ``model.npz``)."""
        if self._W is None or self._b is None:
            raise RuntimeError("IntentClassifier is not fitted")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "embedder": self.embedder.name,
            "classes": self.classes_,
            "oos_threshold": self.oos_threshold,
            "oos_score": self.oos_score,
            "tfidf": self._tfidf is not None,
            "tfidf_weight": self.tfidf_weight,
            "knn_weight": self.knn_weight,
            "knn_temperature": self.knn_temperature,
            "knn_k": self.knn_k,
            "C": self.C,
            "dense_scale": self.dense_scale,
            "oos_label": self.oos_label,
        }
        arrays: dict[str, np.ndarray] = {
            "W": self._W,
            "b": self._b,
            "stats": self._stats,
            "train_vecs": self._train_vecs if self._train_vecs is not None else np.zeros(0),
            "train_labels": (
                self._train_labels if self._train_labels is not None else np.zeros(0)
            ),
        }
        if self._tfidf is not None and self._tfidf.idf is not None:
            arrays["idf"] = self._tfidf.idf
            arrays["cols"] = self._tfidf.cols
            if self._Ws is not None:
                arrays["Ws"] = self._Ws
        np.savez_compressed(path / "model.npz", **arrays)
        (path / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, *, embedder: Embedder) -> IntentClassifier:
        """Load a classifier saved by :meth:`save`; ``embedder`` must be the same model."""
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        if config["embedder"] != embedder.name:
            raise ValueError(
                f"classifier was trained with embedder {config['embedder']!r}, "
                f"got {embedder.name!r}"
            )
        self = cls(
            embedder=embedder,
            oos_threshold=config["oos_threshold"],
            oos_score=config.get("oos_score", "prob"),
            tfidf=config["tfidf"],
            tfidf_weight=config["tfidf_weight"],
            knn_weight=config["knn_weight"],
            knn_temperature=config["knn_temperature"],
            knn_k=int(config.get("knn_k", 5)),  # saved before knn_k existed: 5
            C=config["C"],
            dense_scale=config.get("dense_scale", 1.0),
            oos_label=config["oos_label"],
        )
        self.classes_ = list(config["classes"])
        with np.load(path / "model.npz", allow_pickle=False) as z:
            self._W = z["W"]
            self._b = z["b"]
            self._stats = z["stats"]
            self._train_vecs = z["train_vecs"] if z["train_vecs"].size else None
            self._train_labels = z["train_labels"] if z["train_labels"].size else None
            if "idf" in z.files:
                self._tfidf = _CharTfidf()
                self._tfidf.idf = z["idf"]
                self._tfidf.cols = z["cols"]
                if "Ws" in z.files:
                    self._Ws = z["Ws"]
        return self
