"""Intent classification with out-of-scope detection, and Rasa 3.x NLU YAML I/O.

The classifier combines a linear model over sentence embeddings (plus optional
character n-gram TF-IDF features) with a nearest-neighbour vote; a query whose best
combined probability is below ``oos_threshold`` is out of scope (``intent=None``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .embedder import Embedder
from .textnorm import clean_text, normalize

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


class IntentClassifier:
    """Embedding-based intent classifier with out-of-scope rejection.

    Scores are a mix of a multinomial logistic regression over the features and a
    nearest-neighbour vote (``knn_weight``); examples filed under ``oos_label`` in
    :meth:`fit` train an explicit out-of-scope class. ``intent`` is ``None`` when the
    best in-scope score is below ``oos_threshold`` or the out-of-scope class wins.
    """

    def __init__(
        self,
        *,
        embedder: Embedder,
        oos_threshold: float | None = None,
        tfidf: bool = True,
        tfidf_weight: float = 1.0,
        knn_weight: float = 0.3,
        knn_temperature: float = 0.05,
        C: float = 10.0,
        oos_label: str | None = "oos",
        max_iter: int = 300,
    ) -> None:
        self.embedder = embedder
        self.oos_threshold = oos_threshold
        self.tfidf = tfidf
        self.tfidf_weight = tfidf_weight
        self.knn_weight = knn_weight
        self.knn_temperature = knn_temperature
        self.C = C
        self.oos_label = oos_label
        self.max_iter = max_iter
        self.classes_: list[str] = []
        self._W: np.ndarray | None = None  # (n_classes, n_features) dense part
        self._Ws: np.ndarray | None = None  # TF-IDF feature weights (n_classes, n_ngrams)
        self._b: np.ndarray | None = None
        self._tfidf: _CharTfidf | None = None
        self._train_vecs: np.ndarray | None = None
        self._train_labels: np.ndarray | None = None

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
        if len([c for c in classes if c != self.oos_label]) < 1:
            raise ValueError("need at least one in-scope intent")
        self.classes_ = classes
        y = np.array([classes.index(lab) for lab in labels])
        self._tfidf = _CharTfidf().fit(texts) if self.tfidf else None
        vecs, sparse = self._features(texts, vectors)
        x = sp.hstack([sp.csr_matrix(vecs), sparse]).tocsr() if sparse is not None else vecs
        if len(classes) == 1:
            self._W = np.zeros((1, vecs.shape[1]), dtype=np.float32)
            self._b = np.zeros(1, dtype=np.float32)
            self._Ws = None
        else:
            lr = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=1e-3)
            lr.fit(x, y)
            coef = np.asarray(lr.coef_, dtype=np.float32)
            b = np.asarray(lr.intercept_, dtype=np.float32)
            if coef.shape[0] == 1:  # binary: expand to two softmax rows
                coef = np.vstack([-coef / 2, coef / 2])
                b = np.array([-b[0] / 2, b[0] / 2], dtype=np.float32)
            d = vecs.shape[1]
            self._W = np.ascontiguousarray(coef[:, :d])
            self._Ws = np.ascontiguousarray(coef[:, d:]) if sparse is not None else None
            self._b = b
        self._train_vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        self._train_labels = y.astype(np.int32)
        return self

    # ------------------------------------------------------------------ scoring
    def predict_proba(
        self, texts: Sequence[str], *, vectors: np.ndarray | None = None
    ) -> np.ndarray:
        """Class probabilities (n_texts, n_classes) in the order of ``classes_``."""
        if self._W is None or self._b is None:
            raise RuntimeError("IntentClassifier is not fitted")
        texts = [clean_text(t) or " " for t in texts]
        if not texts:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        vecs, sparse = self._features(texts, vectors)
        logits = vecs @ self._W.T + self._b
        if sparse is not None and self._Ws is not None:
            logits = logits + np.asarray(sparse @ self._Ws.T)
        p = _softmax(logits.astype(np.float64))
        if self.knn_weight > 0 and self._train_vecs is not None:
            sims = vecs @ self._train_vecs.T
            n_cls = len(self.classes_)
            best = np.full((len(texts), n_cls), -1.0)
            for c in range(n_cls):
                mask = self._train_labels == c
                if mask.any():
                    best[:, c] = sims[:, mask].max(axis=1)
            pk = _softmax(best / self.knn_temperature)
            p = (1.0 - self.knn_weight) * p + self.knn_weight * pk
        return p.astype(np.float32)

    def _scores(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(best in-scope class index, its probability) per row."""
        masked = proba.copy()
        if self.oos_label in self.classes_:
            masked[:, self.classes_.index(self.oos_label)] = -1.0
        idx = masked.argmax(axis=1)
        return idx, masked[np.arange(len(idx)), idx]

    def _decide(self, proba: np.ndarray, threshold: float | None) -> list[IntentPrediction]:
        idx, conf = self._scores(proba)
        oos_col = self.classes_.index(self.oos_label) if self.oos_label in self.classes_ else -1
        out = []
        for row, (i, c) in enumerate(zip(idx, conf, strict=True)):
            order = np.argsort(-proba[row])[:5]
            ranking = [(self.classes_[j], float(proba[row, j])) for j in order]
            is_oos = (threshold is not None and c < threshold) or (
                oos_col >= 0 and proba[row, oos_col] > c
            )
            out.append(IntentPrediction(None if is_oos else self.classes_[i], float(c), ranking))
        return out

    def predict_batch(
        self, texts: Sequence[str], *, vectors: np.ndarray | None = None
    ) -> list[IntentPrediction]:
        """Predictions for many texts."""
        return self._decide(self.predict_proba(texts, vectors=vectors), self.oos_threshold)

    def predict(self, text: str) -> IntentPrediction:
        """Prediction for one text (empty or symbol-only text is out of scope)."""
        if not isinstance(text, str) or not normalize(text):
            return IntentPrediction(None, 0.0, [])
        return self.predict_batch([text])[0]

    def tune_threshold(
        self,
        val: list[tuple[str, str | None]],
        *,
        vectors: np.ndarray | None = None,
    ) -> float:
        """Set ``oos_threshold`` to maximise in-scope accuracy + OOS recall on validation
        pairs (label ``None`` or ``oos_label`` = out of scope). Returns the threshold."""
        if not val:
            raise ValueError("no validation examples")
        proba = self.predict_proba([t for t, _ in val], vectors=vectors)
        self.oos_threshold = self._best_threshold(proba, [lab for _, lab in val])
        return self.oos_threshold

    def _best_threshold(self, proba: np.ndarray, labels: Sequence[str | None]) -> float:
        idx, conf = self._scores(proba)
        oos_col = self.classes_.index(self.oos_label) if self.oos_label in self.classes_ else -1
        oos_win = proba[:, oos_col] > conf if oos_col >= 0 else np.zeros(len(conf), bool)
        is_oos = np.array([lab is None or lab == self.oos_label for lab in labels])
        pred = np.array([self.classes_[i] for i in idx])
        right = np.array([p == lab for p, lab in zip(pred, labels, strict=True)]) & ~oos_win
        values = np.unique(conf)
        # candidate thresholds: below everything, between neighbours, above everything
        cands = np.concatenate([[0.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
        n_in, n_oos = max(1, (~is_oos).sum()), max(1, is_oos.sum())
        scores = np.empty(len(cands))
        for i, t in enumerate(cands):
            reject = (conf < t) | oos_win
            acc = (right & ~reject & ~is_oos).sum() / n_in
            rec = (reject & is_oos).sum() / n_oos if is_oos.any() else 0.0
            scores[i] = acc + rec
        best = np.flatnonzero(scores >= scores.max() - 1e-12)
        # widest run of optimal candidates -> its middle threshold
        runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
        run = max(runs, key=lambda r: cands[r[-1]] - cands[r[0]])
        best_t = float((cands[run[0]] + cands[run[-1]]) / 2)
        return best_t

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
            "tfidf": self._tfidf is not None,
            "tfidf_weight": self.tfidf_weight,
            "knn_weight": self.knn_weight,
            "knn_temperature": self.knn_temperature,
            "C": self.C,
            "oos_label": self.oos_label,
        }
        arrays: dict[str, np.ndarray] = {
            "W": self._W,
            "b": self._b,
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
            tfidf=config["tfidf"],
            tfidf_weight=config["tfidf_weight"],
            knn_weight=config["knn_weight"],
            knn_temperature=config["knn_temperature"],
            C=config["C"],
            oos_label=config["oos_label"],
        )
        self.classes_ = list(config["classes"])
        with np.load(path / "model.npz", allow_pickle=False) as z:
            self._W = z["W"]
            self._b = z["b"]
            self._train_vecs = z["train_vecs"] if z["train_vecs"].size else None
            self._train_labels = z["train_labels"] if z["train_labels"].size else None
            if "idf" in z.files:
                self._tfidf = _CharTfidf()
                self._tfidf.idf = z["idf"]
                self._tfidf.cols = z["cols"]
                if "Ws" in z.files:
                    self._Ws = z["Ws"]
        return self
