"""FAISS vector index keyed by integer ids (the only module that imports faiss).

Inner product over L2-normalised vectors, i.e. cosine similarity. ``flat`` stores
float32 vectors and searches exhaustively (exact); ``sq8``/``fp16`` store scalar-quantised
vectors (4x/2x less memory, nearly exact). All kinds support removal by id.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["IndexKind", "VectorIndex"]

IndexKind = Literal["flat", "fp16", "sq8"]
_FILE = "vectors.faiss"


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

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether :meth:`save` has written an index to ``directory``."""
        return (Path(directory) / _FILE).exists()
