"""FAISS vector index keyed by integer ids (the only module that imports faiss).

Inner product over L2-normalised vectors, i.e. cosine similarity. ``flat`` stores
float32 vectors and searches exhaustively (exact); ``sq8``/``fp16`` store scalar-quantised
vectors (4x/2x less memory, nearly exact). All kinds support removal by id.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["IndexKind", "ScriptAwareIndex", "VectorIndex", "index_exists", "load_index", "make_index"]

IndexKind = Literal["flat", "fp16", "sq8"]
_FILE = "vectors.faiss"
_LAYOUT = "layout.json"  # ScriptAwareIndex: its marker file and block folders
_PARTS = ("u_latin", "m_latin", "u_other")


def _faiss():  # lazy import keeps `import knowledge_base` cheap
    import faiss

    return faiss


class VectorIndex:
    """Cosine-similarity vector index with add/remove by integer id and save/load.

    ``threads`` sets FAISS's OpenMP thread count (process-wide); the default of 1 is
    fastest for single queries on a small, busy machine (OpenMP spin-waiting across
    contended cores costs far more than it saves). ``None`` leaves it unchanged.
    """

    def __init__(self, dim: int, *, kind: IndexKind = "flat", threads: int | None = 1) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        faiss = _faiss()
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        self.dim = dim
        self.kind = kind
        self._lock = threading.RLock()
        self._index = faiss.IndexIDMap2(self._make_base(dim, kind))

    @staticmethod
    def _make_base(dim: int, kind: IndexKind):
        faiss = _faiss()
        if kind == "flat":
            return faiss.IndexFlatIP(dim)
        if kind == "fp16":
            return faiss.IndexScalarQuantizer(
                dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
        if kind == "sq8":
            # QT_8bit_direct-style uniform range [-1, 1] suits normalised vectors; train on
            # a synthetic range so no data-dependent training is needed.
            index = faiss.IndexScalarQuantizer(
                dim, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT
            )
            bounds = np.vstack([np.full(dim, -1.0), np.full(dim, 1.0)]).astype(np.float32)
            index.train(bounds)
            return index
        raise ValueError(f"unknown index kind {kind!r} (flat, fp16, sq8)")

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (rows, L2-normalised) under ``ids`` (existing ids are replaced)."""
        ids_arr = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        vecs = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or vecs.shape[0] != ids_arr.size:
            raise ValueError(
                f"expected {ids_arr.size} vectors of dim {self.dim}, got shape {vecs.shape}"
            )
        if ids_arr.size == 0:
            return
        with self._lock:
            self._index.remove_ids(ids_arr)
            self._index.add_with_ids(vecs, ids_arr)

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove ``ids``; returns the number of vectors removed."""
        ids_arr = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if ids_arr.size == 0:
            return 0
        with self._lock:
            return int(self._index.remove_ids(ids_arr))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; missing slots have id -1."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim == 1:
            q = q[None, :]
        with self._lock:
            k = max(1, min(k, len(self)))
            if len(self) == 0:
                return (
                    np.zeros((q.shape[0], 0), dtype=np.float32),
                    np.zeros((q.shape[0], 0), dtype=np.int64),
                )
            return self._index.search(q, k)

    def reconstruct(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored vectors for ``ids`` (raises KeyError for an unknown id)."""
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.empty((ids_arr.size, self.dim), dtype=np.float32)
        with self._lock:
            for row, i in enumerate(ids_arr):
                try:
                    out[row] = self._index.reconstruct(int(i))
                except RuntimeError as exc:
                    raise KeyError(int(i)) from exc
        return out

    def save(self, directory: str | Path) -> Path:
        """Write the index to ``directory/vectors.faiss`` atomically; returns the path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / _FILE
        tmp = directory / (_FILE + ".tmp")
        with self._lock:
            _faiss().write_index(self._index, str(tmp))
        os.replace(tmp, path)
        # a block-wise index saved here before (another embedder) must not shadow this one
        (directory / _LAYOUT).unlink(missing_ok=True)
        for name in _PARTS:
            shutil.rmtree(directory / name, ignore_errors=True)
        return path

    @classmethod
    def load(cls, directory: str | Path, *, threads: int | None = 1) -> VectorIndex:
        """Read an index written by :meth:`save`."""
        path = Path(directory) / _FILE
        if not path.exists():
            raise FileNotFoundError(path)
        faiss = _faiss()
        raw = faiss.read_index(str(path))
        if not isinstance(raw, faiss.IndexIDMap2):
            raw = faiss.IndexIDMap2(raw) if raw.ntotal == 0 else raw
        self = cls.__new__(cls)
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        self.dim = int(raw.d)
        base = faiss.downcast_index(raw.index)
        if isinstance(base, faiss.IndexFlat):
            self.kind = "flat"
        elif isinstance(base, faiss.IndexScalarQuantizer):
            qt = base.sq.qtype
            self.kind = "fp16" if qt == faiss.ScalarQuantizer.QT_fp16 else "sq8"
        else:
            raise ValueError(f"unsupported index type in {path}: {type(base).__name__}")
        self._lock = threading.RLock()
        self._index = raw
        return self

    def ids(self) -> np.ndarray:
        """Every stored id."""
        with self._lock:
            return _faiss().vector_to_array(self._index.id_map).astype(np.int64)

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether :meth:`save` has written an index to ``directory``."""
        return (Path(directory) / _FILE).exists()



class ScriptAwareIndex:
    """The vectors of :class:`knowledge_base.embedder.ScriptAwareConcat`, stored by block.

    That embedder stores a Latin-script text as ``[u, m, 0]`` and any other text as
    ``[u, 0, u]`` (``du + de + du`` dimensions, a third of them zeros). A flat index over
    the whole layout reads every zero on every query; here the blocks live in three flat
    (or quantised) indexes instead - USE vectors of Latin rows, MiniLM vectors of Latin
    rows, USE vectors of the other rows - and a query ``[a, b, c]`` scores

    * a Latin row as ``a·u + b·m`` and
    * another row as ``(a + c)·u``,

    the same inner products as the flat index. An English query (``a = 0`` at the default
    MiniLM weight 1) reads only the MiniLM block of Latin rows and the USE block of the
    others; a Japanese or Chinese query (``b = c = 0``) only the USE blocks: about a third
    of the memory traffic of the flat layout, and exactly the same results. With a weight
    strictly between 0 and 1 (``a`` and ``b`` both non-zero) Latin rows are taken from the
    union of both blocks' top ``max(4k, 64)`` candidates and rescored exactly: approximate (a
    row that is in neither block's top list is missed), and not the shipped default (1).
    """

    def __init__(
        self, du: int, de: int, *, kind: IndexKind = "flat", threads: int | None = 1
    ) -> None:
        if du <= 0 or de <= 0:
            raise ValueError("block dimensions must be positive")
        self.du, self.de = du, de
        self.dim = 2 * du + de
        self.kind = kind
        self._lock = threading.RLock()
        self._u_latin = VectorIndex(du, kind=kind, threads=threads)
        self._m_latin = VectorIndex(de, kind=kind, threads=None)
        self._u_other = VectorIndex(du, kind=kind, threads=None)
        self._latin: set[int] = set()

    def __len__(self) -> int:
        return len(self._u_latin) + len(self._u_other)

    def _split(self, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        du, de = self.du, self.de
        return vecs[:, :du], vecs[:, du : du + de], vecs[:, du + de :]

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add stored-layout vectors under ``ids`` (existing ids are replaced)."""
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or vecs.shape[0] != ids_arr.size:
            raise ValueError(
                f"expected {ids_arr.size} vectors of dim {self.dim}, got shape {vecs.shape}"
            )
        if ids_arr.size == 0:
            return
        u, m, _ = self._split(vecs)
        latin = np.abs(m).sum(axis=1) > 0
        with self._lock:
            self.remove(ids_arr)
            if latin.any():
                self._u_latin.add(ids_arr[latin], u[latin])
                self._m_latin.add(ids_arr[latin], m[latin])
                self._latin.update(int(i) for i in ids_arr[latin])
            if (~latin).any():
                self._u_other.add(ids_arr[~latin], u[~latin])

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove ``ids``; returns the number of vectors removed."""
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids_arr.size == 0:
            return 0
        with self._lock:
            n = self._u_latin.remove(ids_arr) + self._u_other.remove(ids_arr)
            self._m_latin.remove(ids_arr)
            self._latin.difference_update(int(i) for i in ids_arr)
            return n

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row (search-space vectors of the full layout);
        missing slots have id -1."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        k = max(1, k)
        scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        labels = np.full((q.shape[0], k), -1, dtype=np.int64)
        with self._lock:
            for r, (a, b, c) in enumerate(zip(*self._split(q), strict=True)):
                parts = [self._search_latin(a, b, k)]
                if len(self._u_other):
                    s, i = self._u_other.search(a + c, k)
                    parts.append((s[0], i[0]))
                s_all = np.concatenate([p[0] for p in parts])
                i_all = np.concatenate([p[1] for p in parts])
                keep = i_all >= 0
                s_all, i_all = s_all[keep], i_all[keep]
                order = np.argsort(-s_all, kind="stable")[:k]
                scores[r, : order.size] = s_all[order]
                labels[r, : order.size] = i_all[order]
        return scores, labels

    def _search_latin(self, a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not len(self._u_latin):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        a_on, b_on = bool(np.any(a)), bool(np.any(b))
        if not b_on:
            s, i = self._u_latin.search(a, k)
            return s[0], i[0]
        if not a_on:
            s, i = self._m_latin.search(b, k)
            return s[0], i[0]
        wide = max(4 * k, 64)
        _, iu = self._u_latin.search(a, wide)
        _, im = self._m_latin.search(b, wide)
        cand = np.unique(np.concatenate([iu[0], im[0]]))
        cand = cand[cand >= 0]
        exact = self._u_latin.reconstruct(cand) @ a + self._m_latin.reconstruct(cand) @ b
        return exact.astype(np.float32), cand

    def ids(self) -> np.ndarray:
        """Every stored id."""
        with self._lock:
            return np.concatenate([self._u_latin.ids(), self._u_other.ids()])

    def reconstruct(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored-layout vectors for ``ids`` (raises KeyError for an unknown id)."""
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros((ids_arr.size, self.dim), dtype=np.float32)
        du, de = self.du, self.de
        with self._lock:
            for row, i in enumerate(ids_arr):
                if int(i) in self._latin:
                    out[row, :du] = self._u_latin.reconstruct([i])[0]
                    out[row, du : du + de] = self._m_latin.reconstruct([i])[0]
                else:
                    u = self._u_other.reconstruct([i])[0]
                    out[row, :du] = u
                    out[row, du + de :] = u
        return out

    def save(self, directory: str | Path) -> Path:
        """Write the three block indexes and ``layout.json`` under ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for name in _PARTS:
                getattr(self, f"_{name}").save(directory / name)
            tmp = directory / (_LAYOUT + ".tmp")
            tmp.write_text(json.dumps({"layout": "script-aware", "du": self.du, "de": self.de}))
            os.replace(tmp, directory / _LAYOUT)
        stale = directory / _FILE  # a flat index of an earlier version
        stale.unlink(missing_ok=True)
        return directory / _LAYOUT

    @classmethod
    def load(cls, directory: str | Path, *, threads: int | None = 1) -> ScriptAwareIndex:
        directory = Path(directory)
        meta = json.loads((directory / _LAYOUT).read_text())
        if meta.get("layout") != "script-aware":
            raise ValueError(f"unknown index layout in {directory}")
        self = cls(int(meta["du"]), int(meta["de"]), threads=threads)
        self._u_latin = VectorIndex.load(directory / "u_latin", threads=threads)
        self._m_latin = VectorIndex.load(directory / "m_latin", threads=None)
        self._u_other = VectorIndex.load(directory / "u_other", threads=None)
        dims = (self._u_latin.dim, self._m_latin.dim, self._u_other.dim)
        if dims != (self.du, self.de, self.du) or len(self._u_latin) != len(self._m_latin):
            raise ValueError(f"inconsistent block indexes in {directory}")
        self.kind = self._u_latin.kind
        self._latin = {int(i) for i in self._u_latin.ids()}
        return self

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / _LAYOUT).exists()


def make_index(
    dim: int, *, kind: IndexKind = "flat", layout: tuple[int, int] | None = None
) -> VectorIndex | ScriptAwareIndex:
    """A :class:`ScriptAwareIndex` for an embedder with a ``script_layout`` (``(du, de)``),
    else a :class:`VectorIndex`."""
    if layout is not None:
        du, de = layout
        if 2 * du + de != dim:
            raise ValueError(f"layout {layout} does not match dimension {dim}")
        return ScriptAwareIndex(du, de, kind=kind)
    return VectorIndex(dim, kind=kind)


def load_index(directory: str | Path) -> VectorIndex | ScriptAwareIndex:
    """Read whichever index :meth:`VectorIndex.save` / :meth:`ScriptAwareIndex.save` wrote."""
    if ScriptAwareIndex.exists(directory):
        return ScriptAwareIndex.load(directory)
    return VectorIndex.load(directory)


def index_exists(directory: str | Path) -> bool:
    return ScriptAwareIndex.exists(directory) or VectorIndex.exists(directory)
