"""Gallery search behind one interface: exact flat, FAISS (factory strings) and hierarchical.

Every index answers ``search(queries (Q, D), k) -> SearchResult`` with cosine similarities (queries
are L2-normalised here; gallery rows are normalised already) and the mean number of similarity
computations per query (vector–vector comparisons: gallery rows, centroids or PQ codes).

Specs for :func:`make_index`:

* ``"flat"`` — exact search by batched float32 matrix products;
* ``"hierarchical"`` — the k-means tree of :mod:`terraloc.search.hierarchical`;
* any FAISS factory string (``"Flat"``, ``"HNSW32"``, ``"IVF1024,Flat"``, ``"IVF4096,PQ64"``, ...),
  built with the inner-product metric; search-time parameters via ``params="nprobe=16"`` or
  ``nprobe=``/``ef_search=`` options.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.errors import InputError, MissingResourceError
from terraloc.io import atomic_write, atomic_write_text

#: folder under a gallery or reference database where built indexes are cached
INDEX_DIR = "indexes"


@dataclass
class SearchResult:
    """Top-k results of a batch of queries.

    Attributes:
        scores: ``(Q, k)`` float32 cosine similarities, best first (``-inf`` where an approximate
            index found fewer than ``k`` results).
        indices: ``(Q, k)`` int64 gallery row numbers (``-1`` where fewer than ``k`` were found).
        comparisons_per_query: mean similarity computations per query.
    """

    scores: NDArray[np.float32]
    indices: NDArray[np.int64]
    comparisons_per_query: float


def validate_queries(queries: Any, dim: int, size: int, k: int) -> NDArray[np.float32]:
    """Check and L2-normalise queries: ``(Q, D)`` or ``(D,)`` → ``(Q, D)`` float32 C-contiguous.

    Raises:
        InputError: wrong shape or dimension, non-finite or all-zero rows, ``k`` outside
            ``[1, gallery size]``.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}", field="k")
    if k > size:
        raise InputError(f"k = {k} is larger than the gallery ({size} entries)", field="k")
    if hasattr(queries, "detach"):  # torch tensor
        queries = queries.detach().cpu().numpy()
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise InputError(f"queries must be (Q, D), got shape {q.shape}", field="queries")
    if q.shape[1] != dim:
        raise InputError(f"query dimension {q.shape[1]} does not match the gallery dimension {dim}", field="queries")
    finite = np.isfinite(q).all(axis=1)
    if not finite.all():
        raise InputError(f"query row {int(np.flatnonzero(~finite)[0])} contains NaN or infinity", field="queries")
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InputError(f"query row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros", field="queries")
    return np.ascontiguousarray(q / norms, dtype=np.float32)


def check_options(options: dict[str, Any], known: frozenset[str], what: str) -> None:
    """Refuse options not in ``known`` with one line listing the known ones."""
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(
            f"unknown {what} option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            field=unknown[0],
        )


class SearchIndex(ABC):
    """A search structure over ``(N, D)`` normalised gallery embeddings."""

    spec: str = ""
    build_s: float = 0.0

    def __init__(self, dim: int, size: int) -> None:
        self.dim = dim
        self.size = size

    def search(self, queries: Any, k: int = 1) -> SearchResult:
        """Top-``k`` gallery rows for each query: ``(Q, D)`` → :class:`SearchResult` ``(Q, k)``."""
        q = validate_queries(queries, self.dim, self.size, k)
        return self._search(q, int(k))

    @abstractmethod
    def _search(self, q: NDArray[np.float32], k: int) -> SearchResult: ...

    @property
    @abstractmethod
    def memory_bytes(self) -> int:
        """Bytes held in memory by the structure (including any in-memory copy of the gallery)."""

    def save(self, path: str | Path) -> None:
        """Save to ``path`` atomically (not supported by every index)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")


class FlatIndex(SearchIndex):
    """Exact search: batched float32 matrix products over the whole gallery.

    Galleries up to ``max_memory_mb`` are held as one float32 matrix; larger (memory-mapped
    float16) galleries are streamed in blocks of ``block_rows`` rows and merged top-k.
    """

    spec = "flat"

    def __init__(
        self,
        embeddings: np.ndarray,
        *,
        query_batch: int = 256,
        block_rows: int = 262144,
        max_memory_mb: float = 2048,
    ) -> None:
        t0 = time.perf_counter()
        super().__init__(int(embeddings.shape[1]), int(embeddings.shape[0]))
        self.query_batch = query_batch
        self.block_rows = block_rows
        self._source = embeddings
        fits = self.size * self.dim * 4 <= max_memory_mb * 2**20
        # An owned, writable float32 copy in RAM (a read-only memmap cannot back a torch tensor).
        self._matrix = np.array(embeddings, dtype=np.float32, order="C") if fits else None
        self.build_s = time.perf_counter() - t0

    @property
    def memory_bytes(self) -> int:
        if self._matrix is not None:
            return int(self._matrix.nbytes)
        return int(self.block_rows * self.dim * 4)

    def _search(self, q: NDArray[np.float32], k: int) -> SearchResult:
        import torch

        scores = np.empty((len(q), k), dtype=np.float32)
        indices = np.empty((len(q), k), dtype=np.int64)
        full = None if self._matrix is None else torch.from_numpy(self._matrix)
        for s in range(0, len(q), self.query_batch):
            qt = torch.from_numpy(q[s : s + self.query_batch])
            if full is not None:
                sim = qt @ full.T
                v, i = torch.topk(sim, k, dim=1)
            else:
                v, i = self._streamed(qt, k)
            scores[s : s + len(qt)] = v.numpy()
            indices[s : s + len(qt)] = i.numpy()
        return SearchResult(scores, indices, float(self.size))

    def _streamed(self, qt: Any, k: int) -> tuple[Any, Any]:
        import torch

        best_v = torch.full((len(qt), k), -torch.inf)
        best_i = torch.full((len(qt), k), -1, dtype=torch.int64)
        for b in range(0, self.size, self.block_rows):
            block = torch.from_numpy(np.asarray(self._source[b : b + self.block_rows], dtype=np.float32))
            v, i = torch.topk(qt @ block.T, min(k, len(block)), dim=1)
            cat_v = torch.cat([best_v, v], dim=1)
            cat_i = torch.cat([best_i, i + b], dim=1)
            best_v, pos = torch.topk(cat_v, k, dim=1)
            best_i = torch.gather(cat_i, 1, pos)
        return best_v, best_i


def _faiss_params(options: dict[str, Any]) -> str:
    parts = []
    if options.get("params"):
        parts.append(str(options["params"]))
    if options.get("nprobe") is not None:
        parts.append(f"nprobe={int(options['nprobe'])}")
    if options.get("ef_search") is not None:
        parts.append(f"efSearch={int(options['ef_search'])}")
    return ",".join(parts)


class FaissIndex(SearchIndex):
    """A FAISS index from a factory string, inner-product metric, trained on (a sample of) the gallery.

    Options: ``params`` (FAISS ParameterSpace string, e.g. ``"nprobe=16"``), ``nprobe``,
    ``ef_search``, ``train_size`` (rows sampled for training; default the larger of 100,000 and
    64 per IVF list), ``add_batch`` (rows converted to float32 at a time while adding, default
    262,144). Unknown options are refused.
    """

    OPTIONS = frozenset({"params", "nprobe", "ef_search", "train_size", "add_batch"})

    def __init__(self, spec: str, embeddings: np.ndarray | None, *, index: Any = None, **options: Any) -> None:
        import faiss

        check_options(options, self.OPTIONS, f"FAISS index '{spec}'")
        t0 = time.perf_counter()
        if index is None:
            assert embeddings is not None
            dim, size = int(embeddings.shape[1]), int(embeddings.shape[0])
            try:
                index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as exc:
                msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid"
                raise InputError(f"not a valid FAISS factory string: {msg}", field="index") from None
            if not index.is_trained:
                nlist = int(getattr(faiss.extract_index_ivf(index), "nlist", 0)) if "IVF" in spec else 0
                n_train = int(options.get("train_size") or max(100_000, 64 * nlist))
                rng = np.random.default_rng(0)
                rows = np.sort(rng.choice(size, size=min(size, n_train), replace=False))
                index.train(np.ascontiguousarray(embeddings[rows], dtype=np.float32))
            step = int(options.get("add_batch", 262144))
            for b in range(0, size, step):
                index.add(np.ascontiguousarray(embeddings[b : b + step], dtype=np.float32))
        super().__init__(int(index.d), int(index.ntotal))
        self.spec = spec
        self.index = index
        self.params = _faiss_params(options)
        if self.params:
            try:
                faiss.ParameterSpace().set_index_parameters(index, self.params)  # type: ignore[arg-type]
            except RuntimeError as exc:
                raise InputError(f"bad FAISS search parameters '{self.params}': {exc}", field="params") from None
        self.build_s = time.perf_counter() - t0

    @property
    def memory_bytes(self) -> int:
        """Serialised size; for IVF indexes over 256 MB of codes, codes + ids + coarse quantizer.

        (Serialising a multi-GB index only to measure it would double the peak memory.)
        """
        import faiss

        try:
            ivf = faiss.extract_index_ivf(self.index)
        except RuntimeError:
            ivf = None
        if ivf is not None and ivf.ntotal * ivf.code_size > 256 * 2**20:
            codes = int(ivf.ntotal) * (int(ivf.code_size) + 8)  # codes + int64 ids
            return codes + int(faiss.serialize_index(ivf.quantizer).nbytes)
        return int(faiss.serialize_index(self.index).nbytes)

    def _search(self, q: NDArray[np.float32], k: int) -> SearchResult:
        import faiss

        ivf_stats, hnsw_stats = faiss.cvar.indexIVF_stats, faiss.cvar.hnsw_stats  # type: ignore[attr-defined]
        ivf_stats.reset()
        hnsw_stats.reset()
        scores, indices = self.index.search(q, k)
        scores = np.where(indices < 0, -np.inf, scores).astype(np.float32)
        return SearchResult(scores, indices.astype(np.int64), self._comparisons(len(q), ivf_stats, hnsw_stats))

    def _comparisons(self, nq: int, ivf_stats: Any, hnsw_stats: Any) -> float:
        """Mean vector comparisons per query, from FAISS's own counters where it keeps them."""
        import faiss

        try:
            ivf = faiss.extract_index_ivf(self.index)
        except RuntimeError:
            ivf = None
        if ivf is not None:
            quantizer = faiss.downcast_index(ivf.quantizer)
            coarse = float(ivf.nlist)
            if isinstance(quantizer, faiss.IndexHNSW):
                coarse = float(hnsw_stats.ndis) / nq if hnsw_stats.ndis else coarse
            return float(ivf_stats.ndis) / nq + coarse
        if hnsw_stats.ndis:
            return float(hnsw_stats.ndis) / nq
        return float(self.size)

    def save(self, path: str | Path) -> None:
        import faiss

        data = faiss.serialize_index(self.index)
        with atomic_write(path, "wb") as fh:
            fh.write(data.tobytes())
        atomic_write_text(Path(str(path) + ".json"), json.dumps({"spec": self.spec, "count": self.size}))

    @classmethod
    def load(cls, path: Path, **options: Any) -> FaissIndex:
        import faiss

        meta = json.loads(Path(str(path) + ".json").read_text(encoding="utf-8"))
        raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        return cls(meta["spec"], None, index=faiss.deserialize_index(raw), **options)


#: options of :class:`FlatIndex` (all search-time)
FLAT_OPTIONS = frozenset({"query_batch", "block_rows", "max_memory_mb"})


def make_index(spec: str, embeddings: np.ndarray, **options: Any) -> SearchIndex:
    """Build a search index over ``(N, D)`` normalised embeddings.

    Args:
        spec: ``"flat"``, ``"hierarchical"`` or a FAISS factory string.
        embeddings: ``(N, D)`` float16/float32 normalised rows (may be a memmap).
        **options: passed to the index (see each class); unknown options are refused.

    Raises:
        InputError: bad embeddings, an unknown option or an invalid FAISS factory string.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] < 1:
        raise InputError(f"embeddings must be a non-empty (N, D) array, got shape {embeddings.shape}")
    if spec == "flat":
        check_options(options, FLAT_OPTIONS, "flat index")
        return FlatIndex(embeddings, **options)
    if spec == "hierarchical":
        from terraloc.search.hierarchical import HierarchicalIndex

        return HierarchicalIndex.build(embeddings, **options)
    return FaissIndex(spec, embeddings, **options)


# Options that change how an index is searched, not what is built: not part of its cache file name.
SEARCH_TIME_OPTIONS = frozenset(
    {"params", "nprobe", "ef_search", "beam", "leaf_beam", "parent_weight", "query_batch", "max_memory_mb"}
)


def index_cache_name(spec: str, **options: Any) -> str:
    """File name under ``<gallery>/indexes/`` for an index built with these options."""
    build_opts = {k: v for k, v in sorted(options.items()) if k not in SEARCH_TIME_OPTIONS}
    digest = hashlib.sha256(json.dumps([spec, build_opts], default=str).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() else "_" for c in spec)
    ext = ".npz" if spec == "hierarchical" else ".faiss"
    return f"{safe}-{digest}{ext}"


def load_index(path: Path, embeddings: np.ndarray, *, expected_count: int, **options: Any) -> SearchIndex:
    """Load an index saved by :meth:`SearchIndex.save`, checking it covers ``expected_count`` rows."""
    if not path.exists():
        raise MissingResourceError(f"{path}: index file not found")
    idx: SearchIndex
    if path.suffix == ".npz":
        from terraloc.search.hierarchical import HierarchicalIndex

        idx = HierarchicalIndex.load(path, embeddings, **options)
    else:
        idx = FaissIndex.load(path, **options)
    if idx.size != expected_count:
        raise InputError(f"index covers {idx.size} rows but the gallery has {expected_count}", path=path)
    return idx


def cached_index(
    folder: Path, embeddings: np.ndarray, spec: str = "flat", *, cache: bool = True, **options: Any
) -> SearchIndex:
    """An index over ``embeddings`` (the rows of a gallery or reference database stored in ``folder``).

    ``flat`` is built in memory (nothing to save); ``hierarchical`` and FAISS indexes are loaded
    from ``folder/indexes/`` (:func:`index_cache_name`) when saved before, else built (reported to
    :mod:`terraloc.progress` as a task) and, with ``cache``, saved there atomically.
    """
    import contextlib

    from terraloc.progress import task

    file = Path(folder) / INDEX_DIR / index_cache_name(spec, **options)
    if cache and spec != "flat" and file.exists():
        return load_index(file, embeddings, expected_count=len(embeddings), **options)
    what = f"building the {spec} search index" + (" (saved for next time)" if cache else "")
    with task(what) if spec != "flat" else contextlib.nullcontext():
        idx = make_index(spec, embeddings, **options)
        if cache and spec != "flat":
            idx.save(file)
    return idx
