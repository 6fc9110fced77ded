"""Hierarchical gallery search: a k-means tree over the embeddings, searched by beam search.

Build (FAISS spherical k-means at every level):

1. cluster all ``N`` gallery embeddings into ``top`` groups (default 200);
2. split every group into up to ``branching`` sub-groups, and those again, for ``depth`` centroid
   levels in all (``depth=2`` gives 800 groups → ~6,400 sub-groups → points). A node with fewer than
   ``2 * branching`` points gets fewer children (``n // 2``, at least one), so leaves are never split
   into single points for nothing;
3. the gallery rows are reordered so that every deepest node owns one contiguous run of rows.

Spill (``spill=δ``, default 0): a row whose second-best top-level centroid scores within ``δ`` of its
own also joins that second group (and is subdivided with it), so a query whose beam misses one of
the two groups can still reach the row. Spilled rows are stored and scored twice where both copies
are reached (each copy counts as a comparison); results are de-duplicated, so the top-k rows are
always distinct.

Nodes of a level are stored contiguously with CSR offsets into the next level, so the whole tree is a
handful of flat arrays (saved as one ``.npz`` beside the gallery).

Search (batched, vectorised over queries): score the query against all top-level centroids, keep the
best ``beam`` nodes, score their children, keep the best ``beam`` again, ..., and finally score the
gallery rows of the ``leaf_beam`` best deepest nodes exactly and return the top-k (defaults: ``beam``
32, ``leaf_beam`` 24; ``leaf_beam=None`` means ``beam``).
Every centroid and row scored is counted in ``comparisons_per_query``.

Path scores (``parent_weight=w``, default 0, a search-time option): below the top level a node is
ranked by its routing score plus ``w`` times its parent's beam score (which already holds ``w`` times
the grandparent's, and so on), so a deep node under a well-matched branch can outrank a slightly
better-looking node under a weak one. It costs no comparisons. Learned routing scores are logits
(~20x cosines), so ``w`` ~0.015 suits them; centroid scores are cosines (``w`` ~0.5).

Learned routing (``routing="learned"``; default ``"centroid"``): a centroid is the best single vector to
compare a *clean* query with, but under noise the centroid of a large, diverse cluster ranks the
cluster that holds the best row too low (on the 100K gallery at noise 0.2 the winner's top-level
group was often 30th–70th of 200 while its leaf was 1st of 12,000). After clustering, every level
with at most ``route_max_nodes`` nodes gets a routing vector and a bias per node, trained by
softmax cross-entropy to name the node of the gallery row a noisy query came from. Training queries
are the gallery's own embeddings plus isotropic Gaussian noise (sigma drawn from ``route_noise``),
or, via :meth:`HierarchicalIndex.fit_routing`, real query embeddings with the gallery row each
should reach. Routing vectors replace centroids one for one, so comparisons are unchanged; rows
are always scored exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraloc.errors import InputError
from terraloc.io import atomic_write
from terraloc.search.index import SearchIndex, SearchResult, check_options

FORMAT = "terraloc-hierarchical-v1"
#: options of :meth:`HierarchicalIndex.build` that shape the tree
BUILD_OPTIONS = frozenset(
    {"top", "branching", "depth", "leaf_size", "niter", "seed", "spill", "routing", "route_steps", "route_noise",
     "route_max_nodes"}
)  # fmt: skip
#: options that only change how a built tree is searched
SEARCH_OPTIONS = frozenset({"beam", "leaf_beam", "parent_weight", "query_batch", "max_memory_mb"})
ROUTE_NOISE = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
# Routing vectors start as centroids scaled by this inverse temperature (cosines span ~[-1, 1]).
ROUTE_INIT_SCALE = 20.0


def _kmeans(x: NDArray[np.float32], k: int, *, niter: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Spherical k-means with FAISS: ``(n, D)`` → centroids ``(k', D)`` normalised, labels ``(n,)``.

    Empty clusters are dropped (``k' <= k``) and labels renumbered.
    """
    import faiss

    n, d = x.shape
    if k <= 1 or n <= 1:
        c = x.mean(axis=0, keepdims=True)
        return _normalise(c), np.zeros(n, dtype=np.int64)
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=seed,
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, (n + k - 1) // k),
    )
    km.train(x)
    _, labels = km.index.search(x, 1)
    lab = labels[:, 0].astype(np.int64)
    used = np.unique(lab)
    remap = np.full(k, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    # Recompute centroids as normalised means of their members (FAISS's are for the last iteration).
    lab = remap[lab]
    sums = np.zeros((len(used), d), dtype=np.float64)
    np.add.at(sums, lab, x)
    return _normalise(sums.astype(np.float32)), lab


def _normalise(x: NDArray[np.float32]) -> NDArray[np.float32]:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def _expand(
    starts: NDArray[np.int64], lens: NDArray[np.int64], *, slots: bool = False
) -> tuple[NDArray[np.int64], NDArray[np.int64] | None]:
    """Concatenate per-query ranges: ``(Q, B)`` starts/lengths → ``(Q, M)`` indices, ``-1`` padded.

    With ``slots``, also the column ``0..B-1`` of the range each output cell came from (``-1``
    padded), so a value per range (a parent's beam score) can follow its children; else ``None``.
    """
    q, b = starts.shape
    lens_f = lens.ravel()
    total = int(lens_f.sum())
    per_q = lens.sum(axis=1)
    out = np.full((q, int(per_q.max()) if q else 0), -1, dtype=np.int64)
    slot = out.copy() if slots else None
    if total == 0:
        return out, slot
    seg_start = np.cumsum(lens_f) - lens_f
    within = np.arange(total) - np.repeat(seg_start, lens_f)
    values = np.repeat(starts.ravel(), lens_f) + within
    rows = np.repeat(np.repeat(np.arange(q), b), lens_f)
    q_start = np.cumsum(per_q) - per_q
    cols = np.arange(total) - np.repeat(q_start, per_q)
    out[rows, cols] = values
    if slot is not None:
        slot[rows, cols] = np.repeat(np.tile(np.arange(b), q), lens_f)
    return out, slot


def _children(
    offsets: NDArray[np.int64], beam: NDArray[np.int64], *, slots: bool = False
) -> tuple[NDArray[np.int64], NDArray[np.int64] | None]:
    """Children ``(Q, M)`` of the ``(Q, B)`` beam nodes (``-1`` ignored) through CSR ``offsets``,
    ``-1`` padded; with ``slots``, also each child's beam column (see :func:`_expand`)."""
    valid = beam >= 0
    b = np.where(valid, beam, 0)
    return _expand(offsets[b], np.where(valid, offsets[b + 1] - offsets[b], 0), slots=slots)


def _score(q: NDArray[np.float32], table: NDArray[Any], idx: NDArray[np.int64]) -> NDArray[np.float32]:
    """Cosine scores of ``(Q, D)`` queries with rows ``table[idx]`` ``(Q, M)``; ``-inf`` at ``-1``."""
    valid = idx >= 0
    vecs = np.asarray(table[np.where(valid, idx, 0)], dtype=np.float32)  # (Q, M, D)
    s = np.matmul(vecs, q[:, :, None])[:, :, 0]
    return np.where(valid, s, -np.inf).astype(np.float32)


def _topk(scores: NDArray[np.float32], idx: NDArray[np.int64], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Best ``k`` columns per row, sorted, ``(-inf, -1)`` where fewer than ``k`` are valid."""
    m = scores.shape[1]
    if m < k:
        pad = k - m
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        m = k
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < m else np.arange(m)[None, :].repeat(len(scores), 0)
    s = np.take_along_axis(scores, part, 1)
    order = np.argsort(-s, axis=1, kind="stable")
    part = np.take_along_axis(part, order, 1)
    s = np.take_along_axis(scores, part, 1)
    i = np.take_along_axis(idx, part, 1)
    return s, np.where(np.isfinite(s), i, -1)


class HierarchicalIndex(SearchIndex):
    """k-means tree with beam search (see the module docstring).

    Attributes:
        centroids: per level, ``(n_l, D)`` float32 normalised centroids.
        offsets: per level, ``(n_l + 1,)`` int64 CSR offsets of each node's children in the next
            level (for the deepest level: into ``perm``).
        perm: ``(P,)`` int64 gallery row of each position in leaf order (``P = N`` plus the spilled
            copies; every row appears once or, when spilled, twice).
        params: build parameters (``top``, ``branching``, ``depth``, ``niter``, ``seed``, routing).
        routes: per level, ``None`` (route by centroid) or learned ``(W (n_l, D), b (n_l,))``:
            a node's routing score is ``q @ W[node] + b[node]``.
        beam: nodes kept per level at search time; ``leaf_beam``: deepest nodes whose rows are scored.
        parent_weight: below the top level a node is ranked by its routing score plus
            ``parent_weight`` times its parent's (already weighted) beam score; 0 ranks by the node alone.
    """

    spec = "hierarchical"

    def __init__(
        self,
        centroids: list[NDArray[np.float32]],
        offsets: list[NDArray[np.int64]],
        perm: NDArray[np.int64],
        embeddings: np.ndarray,
        params: dict[str, Any],
        *,
        routes: list[tuple[NDArray[np.float32], NDArray[np.float32]] | None] | None = None,
        beam: int = 32,
        leaf_beam: int | None = 24,
        parent_weight: float = 0.0,
        query_batch: int = 64,
        max_memory_mb: float = 2048,
    ) -> None:
        super().__init__(int(embeddings.shape[1]), int(embeddings.shape[0]))
        if len(perm) < self.size or (len(perm) > self.size and np.unique(perm).size != self.size):
            raise InputError(f"tree covers {np.unique(perm).size} rows but the gallery has {self.size}")
        # Top-k must be over distinct rows; only a spilled tree can reach a row twice.
        self._spilled = len(perm) > self.size
        if beam < 1 or (leaf_beam is not None and leaf_beam < 1):
            raise InputError("beam must be at least 1", field="beam")
        if not (np.isfinite(parent_weight) and parent_weight >= 0):
            raise InputError(f"parent_weight must be a finite number >= 0, got {parent_weight}", field="parent_weight")
        self.centroids = centroids
        self.offsets = offsets
        self.perm = perm
        self.params = params
        self.routes = list(routes) if routes is not None else [None] * len(centroids)
        self.beam = int(beam)
        self.leaf_beam = int(leaf_beam) if leaf_beam is not None else self.beam
        self.parent_weight = float(parent_weight)
        self.query_batch = query_batch
        fits = len(perm) * self.dim * 4 <= max_memory_mb * 2**20
        # Rows in leaf order, so a leaf's rows are one contiguous block (fast gathers).
        self._rows: np.ndarray = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32)[perm]) if fits else None  # type: ignore[assignment]
        self._source = embeddings

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        *,
        top: int = 200,
        branching: int = 8,
        depth: int | None = None,
        leaf_size: int = 16,
        niter: int = 20,
        seed: int = 0,
        spill: float = 0.0,
        routing: str = "centroid",
        route_steps: int = 3000,
        route_noise: Sequence[float] = ROUTE_NOISE,
        route_max_nodes: int = 4096,
        **options: Any,
    ) -> HierarchicalIndex:
        """Cluster ``(N, D)`` normalised embeddings into a tree (see the module docstring).

        Args:
            top: top-level clusters (capped at ``N``).
            branching: maximum children per node below the top level.
            depth: centroid levels (1 = top level only, then rows); default: the fewest levels
                (at least 2) whose deepest nodes hold about ``leaf_size`` rows or fewer.
            leaf_size: target rows per deepest node when ``depth`` is not given.
            niter: k-means iterations per clustering.
            seed: k-means seed (builds are deterministic for a given seed).
            spill: cosine margin δ: a row whose second-best top-level centroid scores at least its
                best minus ``δ`` is stored in both groups (0: no spill; 0.06 spills ~18% of the 100K
                gallery).
            routing: ``"centroid"`` (route by normalised centroids) or ``"learned"`` (train
                routing vectors, see the module docstring; minutes on 100K rows).
            route_steps: optimisation steps per routed level (batches of 2,048 noisy rows).
            route_noise: per-dimension noise sigmas of the synthetic training queries.
            route_max_nodes: levels with more nodes keep centroid routing (a softmax over
                tens of thousands of nodes costs more to train than it gains).
            **options: search options (``beam`` 32, ``leaf_beam`` 24, ``parent_weight`` 0,
                ``query_batch`` 64, ``max_memory_mb`` 2048).

        Raises:
            InputError: an unknown option (one line listing the known ones) or an invalid value.
        """
        import faiss

        check_options(options, SEARCH_OPTIONS | BUILD_OPTIONS, "hierarchical index")  # build ones are bound above

        n = int(embeddings.shape[0])
        if depth is None:
            depth = 2
            while depth < 6 and n / (top * branching ** (depth - 1)) > leaf_size:
                depth += 1
        if top < 1 or branching < 1 or depth < 1:
            raise InputError("top, branching and depth must be at least 1", field="hierarchical")
        if not 0.0 <= spill <= 2.0:
            raise InputError(f"spill must be a cosine margin in [0, 2], got {spill}", field="spill")
        if routing not in ("learned", "centroid"):
            raise InputError(f"routing must be 'learned' or 'centroid', got {routing!r}", field="routing")
        t0 = time.perf_counter()
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        # Each level is a list of nodes; a node is an array of gallery rows (in current order).
        c0, lab = _kmeans(x, min(top, n), niter=niter, seed=seed)
        rows = np.arange(n)
        if spill > 0 and len(c0) > 1:
            second, spilled = _second_choice(x, c0, lab, spill)
            rows, lab = np.concatenate([rows, spilled]), np.concatenate([lab, second])
        groups = _split(rows, lab, len(c0))
        centroids = [c0]
        # Thousands of small clusterings: one thread each (OpenMP start-up would dominate).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            groups, centroids, offsets = _subdivide(x, groups, centroids, depth, branching, niter, seed)
        finally:
            faiss.omp_set_num_threads(threads)
        sizes = np.array([len(g) for g in groups], dtype=np.int64)
        offsets.append(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        perm = np.concatenate(groups).astype(np.int64)
        params = {"top": top, "branching": branching, "depth": depth, "niter": niter, "seed": seed, "spill": spill}
        idx = cls(centroids, offsets, perm, embeddings, params, **options)
        if routing == "learned":
            idx.fit_routing(steps=route_steps, noise=route_noise, max_nodes=route_max_nodes, seed=seed)
        idx.build_s = time.perf_counter() - t0
        return idx

    def node_of_position(self, level: int) -> NDArray[np.int64]:
        """``(P,)`` node at ``level`` that holds each position of ``perm``."""
        node = np.searchsorted(self.offsets[-1], np.arange(len(self.perm)), side="right") - 1  # deepest level
        for lv in range(len(self.centroids) - 2, level - 1, -1):
            node = np.searchsorted(self.offsets[lv], node, side="right") - 1
        return node

    def node_of_row(self, level: int) -> NDArray[np.int64]:
        """``(N,)`` node at ``level`` that holds each gallery row (a spilled row: its first copy)."""
        node = np.empty(self.size, dtype=np.int64)
        node[self.perm[::-1]] = self.node_of_position(level)[::-1]
        return node

    def fit_routing(
        self,
        examples: tuple[np.ndarray, np.ndarray] | None = None,
        *,
        steps: int = 3000,
        batch: int = 2048,
        noise: Sequence[float] = ROUTE_NOISE,
        lr: float = 3e-3,
        max_nodes: int = 4096,
        seed: int = 0,
    ) -> None:
        """Learn routing vectors for every level with at most ``max_nodes`` nodes.

        Args:
            examples: optional real training queries ``((M, D) embeddings, (M,) gallery rows)``:
                the row each query should reach (for example the gallery point nearest to a
                photo's true location). Default: gallery rows plus Gaussian noise.
            steps: Adam steps per level; batch: queries per step.
            noise: per-dimension sigmas of the synthetic queries (one drawn per query).
            lr: Adam learning rate; seed: seeds the sampling (deterministic per machine).
        """
        import torch

        if steps < 1 or batch < 1:
            raise InputError("route steps and batch must be at least 1", field="route_steps")
        gen = torch.Generator().manual_seed(seed)
        if examples is not None:
            xq = np.asarray(examples[0], dtype=np.float32)
            rows = np.asarray(examples[1], dtype=np.int64)
            if xq.ndim != 2 or xq.shape[1] != self.dim or rows.shape != (len(xq),) or len(xq) == 0:
                raise InputError(f"routing examples must be (M, {self.dim}) queries and (M,) rows", field="examples")
            if rows.min() < 0 or rows.max() >= self.size:
                raise InputError(f"routing example rows must be in [0, {self.size})", field="examples")
            pool = torch.from_numpy(xq / np.maximum(np.linalg.norm(xq, axis=1, keepdims=True), 1e-12))
            pool_rows = torch.from_numpy(rows)
            sigmas = torch.zeros(1)
        else:
            # One training query per stored copy, labelled with the node of that copy: a spilled
            # row teaches both of its groups.
            stored = self._rows if self._rows is not None else self._source[self.perm]
            pool = torch.from_numpy(np.asarray(stored, np.float32))
            pool_rows = torch.arange(len(self.perm))
            sigmas = torch.tensor([float(v) for v in noise], dtype=torch.float32)
        noisy = bool((sigmas > 0).any())
        routes: list[tuple[NDArray[np.float32], NDArray[np.float32]] | None] = []
        for level, cent in enumerate(self.centroids):
            if len(cent) > max_nodes or len(cent) < 2:
                routes.append(self.routes[level])
                continue
            nodes = self.node_of_row(level) if examples is not None else self.node_of_position(level)
            labels = torch.from_numpy(nodes)[pool_rows]
            w = torch.nn.Parameter(torch.from_numpy(cent * ROUTE_INIT_SCALE))
            b = torch.nn.Parameter(torch.zeros(len(cent)))
            opt = torch.optim.Adam([w, b], lr=lr)
            for _ in range(steps):
                pick = torch.randint(0, len(pool), (batch,), generator=gen)
                x = pool[pick]
                if noisy:
                    s = sigmas[torch.randint(0, len(sigmas), (batch,), generator=gen)][:, None]
                    x = x + s * torch.randn(x.shape, generator=gen)
                    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
                loss = torch.nn.functional.cross_entropy(x @ w.T + b, labels[pick])
                opt.zero_grad()
                loss.backward()
                opt.step()
            routes.append((w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32)))
        self.routes = routes
        self.params = {**self.params, "routing": "learned", "route_steps": steps}

    def _route_table(self, level: int) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """Vectors ``(n_l, D)`` a query is compared with at ``level`` and their biases (or ``None``)."""
        route = self.routes[level]
        return (self.centroids[level], None) if route is None else route

    def _route_scores(self, q: NDArray[np.float32], level: int, cand: NDArray[np.int64]) -> NDArray[np.float32]:
        """Routing scores ``(Q, M)`` of candidate nodes ``cand`` (``-1`` padded → ``-inf``)."""
        vectors, bias = self._route_table(level)
        s = _score(q, vectors, cand)
        if bias is None:
            return s
        return np.where(cand >= 0, s + bias[np.maximum(cand, 0)], -np.inf).astype(np.float32)

    @property
    def memory_bytes(self) -> int:
        tree = sum(c.nbytes for c in self.centroids) + sum(o.nbytes for o in self.offsets) + self.perm.nbytes
        tree += sum(r[0].nbytes + r[1].nbytes for r in self.routes if r is not None)
        return int(tree + (self._rows.nbytes if self._rows is not None else 0))

    def describe(self) -> dict[str, Any]:
        """Level sizes and leaf-size statistics (for docs and the benchmark)."""
        leaf = np.diff(self.offsets[-1])
        return {
            **self.params,
            "beam": self.beam,
            "leaf_beam": self.leaf_beam,
            "parent_weight": self.parent_weight,
            "routed_levels": [i for i, r in enumerate(self.routes) if r is not None],
            "level_sizes": [len(c) for c in self.centroids],
            "stored_rows": len(self.perm),
            "leaf_rows_mean": float(leaf.mean()),
            "leaf_rows_max": int(leaf.max()),
        }

    def _search(self, q: NDArray[np.float32], k: int) -> SearchResult:
        scores = np.empty((len(q), k), dtype=np.float32)
        indices = np.empty((len(q), k), dtype=np.int64)
        comparisons = 0
        for s in range(0, len(q), self.query_batch):
            qb = q[s : s + self.query_batch]
            sc, ix, n_cmp = self._search_batch(qb, k)
            scores[s : s + len(qb)] = sc
            indices[s : s + len(qb)] = ix
            comparisons += n_cmp
        return SearchResult(scores, indices, comparisons / max(len(q), 1))

    def _search_batch(self, q: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64], int]:
        top, bias = self._route_table(0)
        sim = q @ top.T if bias is None else q @ top.T + bias
        comparisons = sim.size
        n_levels = len(self.centroids)
        width = self.leaf_beam if n_levels == 1 else self.beam
        nodes = np.broadcast_to(np.arange(len(top)), sim.shape)
        path, beam = _topk(sim, np.ascontiguousarray(nodes), min(width, len(top)))
        for level in range(1, n_levels):
            cand, slot = _children(self.offsets[level - 1], beam, slots=self.parent_weight > 0)
            s = self._route_scores(q, level, cand)
            if slot is not None:
                # Path score: the parent's beam score carries down (free: no new comparisons).
                parent = np.take_along_axis(path, np.maximum(slot, 0), 1)
                s = np.where(cand >= 0, s + self.parent_weight * parent, -np.inf).astype(np.float32)
            comparisons += int((cand >= 0).sum())
            width = self.leaf_beam if level == n_levels - 1 else self.beam
            path, beam = _topk(s, cand, min(width, cand.shape[1]))
        pos, _ = _children(self.offsets[-1], beam)
        if self._rows is not None:
            s = _score(q, self._rows, pos)
        else:
            rows = np.where(pos >= 0, self.perm[np.maximum(pos, 0)], -1)
            s = _score(q, self._source, rows)
        comparisons += int((pos >= 0).sum())
        # A row is stored at most twice, so the best 2k positions hold at least k distinct rows.
        sc, p = _topk(s, pos, 2 * k if self._spilled else k)
        found = np.where(p >= 0, self.perm[np.maximum(p, 0)], -1)
        if self._spilled:
            sc, found = _distinct_topk(sc, found, k)
        return sc, found, comparisons

    def save(self, path: str | Path) -> None:
        """Write the tree to one ``.npz`` atomically (the gallery rows are not copied)."""
        arrays: dict[str, np.ndarray] = {"perm": self.perm}
        for i, (c, o) in enumerate(zip(self.centroids, self.offsets, strict=True)):
            arrays[f"centroids_{i}"] = c
            arrays[f"offsets_{i}"] = o
        for i, r in enumerate(self.routes):
            if r is not None:
                arrays[f"route_w_{i}"], arrays[f"route_b_{i}"] = r
        meta = {"format": FORMAT, "count": self.size, "dim": self.dim, "levels": len(self.centroids), **self.params}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path, embeddings: np.ndarray, **options: Any) -> HierarchicalIndex:
        """Load a tree saved by :meth:`save` over the same gallery embeddings.

        ``options``: search options (see :meth:`build`); build options are accepted and ignored
        (the saved tree has its own), anything else is refused.
        """
        check_options(options, SEARCH_OPTIONS | BUILD_OPTIONS, "hierarchical index")
        options = {k: v for k, v in options.items() if k in SEARCH_OPTIONS}
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("format") != FORMAT:
                    raise InputError("not a terraloc hierarchical index", path=path)
                levels = int(meta["levels"])
                centroids = [z[f"centroids_{i}"] for i in range(levels)]
                offsets = [z[f"offsets_{i}"] for i in range(levels)]
                perm = z["perm"]
                routes = [
                    (z[f"route_w_{i}"], z[f"route_b_{i}"]) if f"route_w_{i}" in z.files else None for i in range(levels)
                ]
        except (ValueError, KeyError, OSError) as exc:
            raise InputError(f"unreadable hierarchical index ({exc})", path=path) from None
        if meta["dim"] != embeddings.shape[1] or meta["count"] != embeddings.shape[0]:
            raise InputError(
                f"index built for {meta['count']} x {meta['dim']} embeddings, gallery is {embeddings.shape}", path=path
            )
        params = {
            k: meta[k]
            for k in ("top", "branching", "depth", "niter", "seed", "spill", "routing", "route_steps")
            if k in meta
        }
        return cls(centroids, offsets, perm, embeddings, params, routes=routes, **options)


def _subdivide(
    x: NDArray[np.float32],
    groups: list[NDArray[np.int64]],
    centroids: list[NDArray[np.float32]],
    depth: int,
    branching: int,
    niter: int,
    seed: int,
) -> tuple[list[NDArray[np.int64]], list[NDArray[np.float32]], list[NDArray[np.int64]]]:
    """Split every node into up to ``branching`` children, level by level, down to ``depth`` levels."""
    offsets: list[NDArray[np.int64]] = []
    for level in range(1, depth):
        next_groups: list[NDArray[np.int64]] = []
        next_centroids: list[NDArray[np.float32]] = []
        counts = np.zeros(len(groups), dtype=np.int64)
        for gi, rows in enumerate(groups):
            kk = min(branching, max(1, len(rows) // 2))
            if kk == 1:
                cc, sub = centroids[-1][gi : gi + 1], np.zeros(len(rows), dtype=np.int64)
            else:
                cc, sub = _kmeans(x[rows], kk, niter=niter, seed=seed + level * 7919 + gi)
            parts = _split(rows, sub, len(cc))
            next_groups.extend(parts)
            next_centroids.append(cc)
            counts[gi] = len(parts)
        offsets.append(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        centroids.append(np.concatenate(next_centroids).astype(np.float32))
        groups = next_groups
    return groups, centroids, offsets


def _split(rows: NDArray[np.int64], labels: NDArray[np.int64], k: int) -> list[NDArray[np.int64]]:
    """Group ``rows`` by ``labels`` (``0..k-1``), dropping empty groups, keeping label order."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    parts = np.split(rows[order], np.cumsum(counts)[:-1])
    return [p for p in parts if len(p)]


def _second_choice(
    x: NDArray[np.float32], centroids: NDArray[np.float32], labels: NDArray[np.int64], margin: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows whose best other centroid scores within ``margin`` of their own: ``(group, rows)``."""
    second = np.empty(len(x), dtype=np.int64)
    gap = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), 65536):  # bounded memory for 5M-row galleries
        e = min(s + 65536, len(x))
        sc = x[s:e] @ centroids.T
        at = np.arange(e - s)
        own = sc[at, labels[s:e]]
        sc[at, labels[s:e]] = -np.inf
        second[s:e] = sc.argmax(1)
        gap[s:e] = own - sc[at, second[s:e]]
    rows = np.nonzero(gap <= margin)[0]
    return second[rows], rows


def _distinct_topk(
    scores: NDArray[np.float32], rows: NDArray[np.int64], k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Best ``k`` distinct rows per query from ``(Q, M)`` scores sorted best first (``-1`` rows pad)."""
    order = np.argsort(rows, axis=1, kind="stable")  # stable: the better copy of a row comes first
    by_row = np.take_along_axis(rows, order, 1)
    repeat = np.zeros_like(by_row, dtype=bool)
    repeat[:, 1:] = (by_row[:, 1:] == by_row[:, :-1]) & (by_row[:, 1:] >= 0)
    dup = np.empty_like(repeat)
    np.put_along_axis(dup, order, repeat, 1)
    scores = np.where(dup, -np.inf, scores).astype(np.float32)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    sc = np.take_along_axis(scores, best, 1)
    r = np.take_along_axis(rows, best, 1)
    return sc, np.where(np.isfinite(sc), r, -1)
