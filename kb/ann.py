"""Vector stores behind one small interface (after txtai's `ann/`); pgvector's is in kb/pgindex.py.

Vectors are L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

EXACT_LIMIT = 50_000  # passages; above this dense candidates come from the vector store's ANN index


class VectorStore(ABC):
    """What search asks of a vector store: nearest neighbours, candidates and the stored vectors."""

    kind: str = ""

    @abstractmethod
    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) for one query vector, best first; ids are insertion positions."""

    def candidates(self, query: np.ndarray, k: int) -> np.ndarray:
        """Positions worth scoring exactly for ``query`` (a backend may propose more than ``search``)."""
        return self.search(query, k)[1]

    @abstractmethod
    def vectors(self) -> np.ndarray:
        """All stored vectors, in insertion order (search scores them exactly)."""

    @property
    @abstractmethod
    def count(self) -> int: ...


class FaissStore(VectorStore):
    """A FAISS index saved as one file in the bundle directory."""

    filename: str = "vectors.faiss"

    def __init__(self, dim: int):
        self.dim = dim
        self.index = None

    def _new(self):
        raise NotImplementedError

    def add(self, vectors: np.ndarray) -> None:
        if self.index is None:
            self.index = self._new()
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.index is None or self.index.ntotal == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        k = min(k, self.index.ntotal)
        scores, ids = self.index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k,
                                        params=self._params(k))
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def _params(self, k: int):
        return None

    def vectors(self) -> np.ndarray:
        if self.index is None or self.index.ntotal == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.index.reconstruct_n(0, self.index.ntotal)

    def save(self, directory: Path) -> None:
        import faiss

        if self.index is None:
            self.index = self._new()
        faiss.write_index(self.index, str(Path(directory) / self.filename))

    def load(self, directory: Path) -> None:
        import faiss

        self.index = faiss.read_index(str(Path(directory) / self.filename))
        if self.index.d != self.dim:
            raise ValueError(f"vector dimension {self.index.d} does not match the model's {self.dim}")

    @property
    def count(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)


class FlatStore(FaissStore):
    """Exact search; right for a KB of thousands of passages."""

    kind = "flat"

    def _new(self):
        import faiss

        return faiss.IndexFlatIP(self.dim)


class HNSWStore(FaissStore):
    """Approximate search for large KBs."""

    kind = "hnsw"

    def __init__(self, dim: int, m: int = 32, ef_search: int = 128):
        super().__init__(dim)
        self.m, self.ef_search = m, ef_search

    def _params(self, k: int):
        """efSearch of at least k, per call (shared index, threaded workers): FAISS does not widen the beam to
        k by itself, so 800 candidates asked at efSearch 128 held only 0.962 of the exact top-10 passages at
        100k (benchmarks/scale.py), at efSearch 800 0.997."""
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        return params

    def _new(self):
        import faiss

        index = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200  # efSearch is per call (_params), never set on the shared index
        return index


STORES: dict[str, type[FaissStore]] = {"flat": FlatStore, "hnsw": HNSWStore}


def store_for(kind: str, passages: int) -> str:
    """``auto``: exact (flat) up to EXACT_LIMIT passages, where scoring every vector is cheap, HNSW above."""
    if kind == "auto":
        return "hnsw" if passages > EXACT_LIMIT else "flat"
    return kind


def create_store(kind: str, dim: int) -> FaissStore:
    try:
        return STORES[kind](dim)
    except KeyError:
        raise ValueError(f"unknown vector store {kind!r}: expected one of {', '.join(STORES)}") from None
