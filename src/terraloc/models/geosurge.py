"""GeoSURGE: learned geocell embeddings over nested S2 partitions.

A visual feature ``x`` (``(N, D_in)``, e.g. a CLIP image embedding) is projected to 768-d and
L2-normalised; each level ``l`` of an :class:`~terraloc.geo.s2partition.S2Partition` has a table
of ``C_l`` learned 768-d cell embeddings (normalised when used) and a temperature ``T_l``
(initialised to 0.07). The level-``l`` logits are ``cos(f, e_c) / T_l``.

Training: InfoNCE per level, summed over levels, either over **all** cells of the level
(``"full"``) or over the cells present in the batch (``"inbatch"``; duplicate cells collapse to
one candidate, so two images of one cell are never each other's negatives).

Inference (:meth:`GeoSurgeHead.leaf_log_scores`): each finest cell (leaf) scores
``sum_l log p_l(ancestor_l(leaf))``; the top leaves' spherical-mean centres are returned,
optionally refined inside the winning cell.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from terraloc.errors import InputError
from terraloc.geo.s2partition import S2Partition
from terraloc.io import read_checkpoint

CHECKPOINT_FORMAT = "terraloc-geosurge-v1"


@dataclass(frozen=True)
class GeoSurgeConfig:
    """Model hyper-parameters (the partition's level sizes are part of the identity)."""

    input_dim: int
    level_sizes: tuple[int, ...]
    embed_dim: int = 768
    proj_hidden: int = 0  # 0: a single linear projection; >0: Linear-GELU-Linear
    temperature_init: float = 0.07

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["level_sizes"] = list(self.level_sizes)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GeoSurgeConfig:
        d = dict(d)
        d["level_sizes"] = tuple(d["level_sizes"])
        return cls(**d)


class GeoSurge(nn.Module):
    """Visual projection + per-level cell embedding tables and temperatures."""

    def __init__(self, cfg: GeoSurgeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.proj_hidden > 0:
            self.proj: nn.Module = nn.Sequential(
                nn.Linear(cfg.input_dim, cfg.proj_hidden), nn.GELU(), nn.Linear(cfg.proj_hidden, cfg.embed_dim)
            )
        else:
            self.proj = nn.Linear(cfg.input_dim, cfg.embed_dim)
        self.cells = nn.ParameterList(
            [nn.Parameter(torch.randn(c, cfg.embed_dim) / math.sqrt(cfg.embed_dim)) for c in cfg.level_sizes]
        )
        self.log_temperature = nn.Parameter(torch.full((len(cfg.level_sizes),), math.log(cfg.temperature_init)))
        #: In-batch loss gives the tables sparse gradients (rows of the batch's cells only); set by
        #: the trainer for the opt-in lazy AdamW, never by default.
        self.sparse_tables = False

    @property
    def n_levels(self) -> int:
        return len(self.cfg.level_sizes)

    def features(self, x: Tensor) -> Tensor:
        """``(B, D_in)`` → ``(B, 768)`` L2-normalised visual features."""
        return F.normalize(self.proj(x), dim=-1)

    def temperature(self, level: int) -> Tensor:
        """Temperature of one level (clamped to at least 0.005)."""
        return self.log_temperature[level].exp().clamp(min=0.005)

    def level_logits(self, f: Tensor, level: int, cells: Tensor | None = None) -> Tensor:
        """``(B, C)`` logits of normalised features against all (or the given) cells of a level."""
        table = self.cells[level] if cells is None else self.cells[level][cells]
        return f @ F.normalize(table, dim=-1).T / self.temperature(level)

    def loss(
        self,
        x: Tensor,
        labels: Tensor,
        mode: str = "full",
        candidate_labels: Tensor | None = None,
    ) -> tuple[Tensor, list[float]]:
        """Sum over levels of the per-level InfoNCE.

        All levels' candidate cells (normalised, each divided by its level's temperature) are
        stacked into one ``(sum_l U_l, 768)`` matrix so that the logits of every level come from a
        single ``(B, 768) @ (768, sum_l U_l)`` product (one large matmul is faster on a CPU than
        seven small ones; dividing the ``U`` rows by ``T_l`` is cheaper than dividing the
        ``B x U`` logits). Mathematically this is ``cos(f, e_c) / T_l`` per level, as before.

        Args:
            x: ``(B, D_in)`` visual embeddings.
            labels: ``(B, L)`` int64 cell index per level, ``-1`` where the sample has no cell
                at that level (ignored there).
            mode: ``"full"`` (softmax over all cells of a level) or ``"inbatch"`` (over the
                distinct cells present in ``candidate_labels``).
            candidate_labels: ``(B', L)`` labels whose cells are the in-batch candidates (in DDP the
                labels of the whole global batch); default ``labels``.

        Returns:
            ``(total loss, per-level loss values)``.
        """
        if mode not in ("full", "inbatch"):
            raise ValueError(f"unknown InfoNCE mode '{mode}'")
        f = self.features(x)
        total = f.new_zeros(())
        cand = labels if candidate_labels is None else candidate_labels
        blocks: list[Tensor] = []
        # (level, kept rows or None for all, target columns, width of the level's block)
        plan: list[tuple[int, Tensor | None, Tensor, int]] = []
        for lv in range(self.n_levels):
            y = labels[:, lv]
            keep = y >= 0
            if not bool(keep.any()):
                total = total + 0.0 * self.cells[lv].sum()  # keep every table in the graph (DDP)
                continue
            rows, yl = (None, y) if bool(keep.all()) else (keep, y[keep])
            if mode == "full":
                table = self.cells[lv]
                target = yl
            else:
                c = cand[:, lv]
                uniq = torch.unique(torch.cat([c[c >= 0], yl]))  # sorted distinct cells
                # sparse=True gives the table a sparse (touched rows only) gradient; only the
                # opt-in lazy AdamW (terraloc.train.optim.LazyAdamW) asks for it.
                table = F.embedding(uniq, self.cells[lv], sparse=self.sparse_tables)
                target = torch.searchsorted(uniq, yl.contiguous())
            blocks.append(F.normalize(table, dim=-1) / self.temperature(lv))
            plan.append((lv, rows, target, table.shape[0]))
        per_level = [float("nan")] * self.n_levels
        if not blocks:
            return total, per_level
        logits = f @ torch.cat(blocks).T  # (B, sum of the levels' candidate counts)
        # split (not slicing): its backward is one concatenation, where slicing would zero-fill a
        # full (B, sum U) gradient per level.
        parts = logits.split([w for *_, w in plan], dim=1)
        for (lv, rows, target, _), lg in zip(plan, parts, strict=True):
            if rows is not None:
                lg = lg[rows]
            # Mean over the samples that have a cell at this level, counted over the *global*
            # batch: with DDP each rank holds len(labels)/len(cand) of it, and the mean of the
            # ranks' losses then equals the single-process loss of the global batch.
            kept_global = int((cand[:, lv] >= 0).sum())
            denom = kept_global * len(labels) / len(cand)
            li = F.cross_entropy(lg, target, reduction="sum") / denom
            total = total + li
            per_level[lv] = float(li.detach())
        return total, per_level


class Refiner:
    """Refinement inside the winning cell from reference points.

    With reference ``embeddings`` (``(M, D_in)``, same space as the queries) the reference in the
    winning leaf most similar (cosine) to the query gives the location; without embeddings
    (a plain GPS gallery) the gallery point nearest the cell's centre does. A leaf without
    references keeps its centre.
    """

    def __init__(
        self, partition: S2Partition, coords: NDArray[np.float64], embeddings: NDArray[np.float32] | None = None
    ) -> None:
        from terraloc.geo.distance import haversine_km

        self.coords = np.asarray(coords, dtype=np.float64)
        leaf = partition.assign(self.coords)[:, -1]
        idx = np.flatnonzero(leaf >= 0)
        order = np.argsort(leaf[idx], kind="stable")
        self.sorted_idx = idx[order]
        sorted_leaf = leaf[self.sorted_idx]
        n_leaf = partition.sizes[-1]
        self.start = np.searchsorted(sorted_leaf, np.arange(n_leaf))
        self.end = np.searchsorted(sorted_leaf, np.arange(n_leaf), side="right")
        self.emb: NDArray[np.float32] | None = None
        if embeddings is not None:
            e = np.asarray(embeddings, dtype=np.float32)
            self.emb = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        centers = partition.centers[-1]
        self.nearest = np.full(n_leaf, -1, dtype=np.int64)
        for c in np.flatnonzero(self.end > self.start):
            members = self.sorted_idx[self.start[c] : self.end[c]]
            d = haversine_km(np.repeat(centers[c][None], len(members), 0), self.coords[members])
            self.nearest[c] = members[int(np.argmin(d))]

    def refine(
        self, queries: NDArray[np.float32], leaves: NDArray[np.int64], default: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """``(N,)`` winning leaves → ``(N, 2)`` refined coordinates (``default`` where no reference)."""
        out = np.array(default, dtype=np.float64, copy=True)
        q = np.asarray(queries, dtype=np.float32)
        for i, c in enumerate(leaves):
            s, e = self.start[c], self.end[c]
            if e <= s:
                continue
            if self.emb is None:
                out[i] = self.coords[self.nearest[c]]
            else:
                members = self.sorted_idx[s:e]
                out[i] = self.coords[members[int(np.argmax(self.emb[members] @ q[i]))]]
        return out


class GeoSurgeHead:
    """A trained GeoSURGE model + its partition, usable as a ``Geolocator`` head.

    ``predict(embeddings (N, D_in), top_k) -> (latlon (N, k, 2) degrees, probs (N, k))``.
    """

    def __init__(self, model: GeoSurge, partition: S2Partition, refiner: Refiner | None = None) -> None:
        if list(model.cfg.level_sizes) != partition.sizes:
            raise InputError(
                f"model has level sizes {list(model.cfg.level_sizes)} but the partition has {partition.sizes}"
            )
        self.model = model.eval()
        self.partition = partition
        self.ancestry = torch.as_tensor(partition.ancestry, dtype=torch.int64)
        self.refiner = refiner
        self.model_id = "geosurge"
        #: the checkpoint this head was loaded from, ``{"id", "hash", "dim"}`` of the backbone its training
        #: embeddings came from (``None``: not recorded; see :mod:`terraloc.models.provenance`), and the
        #: fusion checkpoint whose fused features it scores (``None``: backbone embeddings)
        self.checkpoint: Path | None = None
        self.required_backbone: dict[str, Any] | None = None
        self.fusion: str | None = None
        # Inference tables: all levels' normalised cell embeddings divided by their temperature,
        # stacked into one (768, sum C_l) matrix so that scoring is a single matmul.
        with torch.no_grad():
            m = self.model
            self._table = torch.cat(
                [F.normalize(m.cells[lv], dim=-1) / m.temperature(lv) for lv in range(m.n_levels)]
            ).T.contiguous()
        self._offsets = np.cumsum([0, *partition.sizes])
        self._flat_anc = (self.ancestry + torch.as_tensor(self._offsets[:-1])).contiguous()

    @torch.no_grad()
    def leaf_log_scores(self, x: Tensor, levels: Sequence[int] | None = None) -> Tensor:
        """``(N, D_in)`` → ``(N, C_leaf)`` hierarchical scores ``sum_l log p_l(ancestor_l(leaf))``.

        The one scoring path of GeoSURGE (prediction, validation and the ablation's diagnostics):
        ``levels`` restricts the sum to some levels (default: all). ``log_softmax(z)[a] = z[a] -
        logsumexp(z)``: the raw logits are gathered along the ancestry and each level's
        log-normaliser subtracted once, instead of writing every level's full log-softmax (~67K
        values per image on MP-16-sized partitions) and then gathering.
        """
        use = range(len(self._offsets) - 1) if levels is None else list(levels)
        logits = self.model.features(x) @ self._table
        lse = torch.stack(
            [torch.logsumexp(logits[:, self._offsets[lv] : self._offsets[lv + 1]], dim=-1) for lv in use], dim=1
        ).sum(1, keepdim=True)
        score: Tensor | None = None
        for lv in use:
            g = logits.index_select(1, self._flat_anc[:, lv])
            score = g if score is None else score.add_(g)
        assert score is not None, "no levels to score"
        return score.sub_(lse)

    @property
    def input_dim(self) -> int:
        return self.model.cfg.input_dim

    @classmethod
    def from_checkpoint(cls, path: str | Path, refiner: Refiner | None = None) -> GeoSurgeHead:
        """Load a checkpoint written by :func:`save_checkpoint` (or the trainer's ``best.pt``).

        ``required_backbone`` is the backbone its training embeddings came from, as recorded.
        """
        from terraloc.models.provenance import backbone_record

        model, partition, payload = load_checkpoint(path)
        head = cls(model, partition, refiner)
        head.checkpoint = Path(path)
        head.required_backbone = backbone_record(payload.get("backbone"))
        head.fusion = str(payload["fusion"]) if payload.get("fusion") else None
        return head

    def predict(
        self,
        embeddings: Tensor | NDArray[np.float32],
        top_k: int = 5,
        refine: bool = True,
        batch_size: int = 1024,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """:meth:`predict_leaves` without the leaf indices."""
        latlon, probs, _ = self.predict_leaves(embeddings, top_k, refine, batch_size)
        return latlon, probs

    def predict_leaves(
        self,
        embeddings: Tensor | NDArray[np.float32],
        top_k: int = 5,
        refine: bool = True,
        batch_size: int = 1024,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
        """Top-k leaf locations and probabilities (softmax over the leaves' hierarchical scores).

        Args:
            embeddings: ``(N, D_in)`` visual embeddings.
            top_k: candidates per image (at most the number of leaves).
            refine: refine the rank-1 location inside its cell when a refiner is attached.

        Returns:
            ``latlon`` ``(N, k, 2)`` degrees, ``probs`` ``(N, k)`` (each row sums to <= 1) and the
            leaf (finest-level cell) indices ``(N, k)``.
        """
        arr = embeddings.detach().cpu().numpy() if isinstance(embeddings, Tensor) else embeddings
        x = torch.as_tensor(np.asarray(arr, dtype=np.float32)).to(self.model.log_temperature.dtype)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise InputError(f"expected (N, {self.input_dim}) embeddings, got shape {tuple(x.shape)}")
        k = min(top_k, self.partition.sizes[-1])
        centers = self.partition.centers[-1]
        out_ll = np.zeros((x.shape[0], k, 2))
        out_p = np.zeros((x.shape[0], k))
        out_leaf = np.zeros((x.shape[0], k), dtype=np.int64)
        for s in range(0, x.shape[0], batch_size):
            xb = x[s : s + batch_size]
            scores = self.leaf_log_scores(xb)
            top, idx = scores.topk(k, dim=-1)
            p = (top - torch.logsumexp(scores, dim=-1, keepdim=True)).exp()  # softmax over all leaves
            idx_np = idx.numpy()
            out_ll[s : s + len(xb)] = centers[idx_np]
            out_p[s : s + len(xb)] = p.numpy()
            out_leaf[s : s + len(xb)] = idx_np
            if refine and self.refiner is not None:
                out_ll[s : s + len(xb), 0] = self.refiner.refine(
                    xb.float().numpy(), idx_np[:, 0], centers[idx_np[:, 0]]
                )
        return out_ll, out_p, out_leaf


def _partition_to_tensors(p: S2Partition) -> dict[str, Any]:
    d: dict[str, Any] = {
        "tau_max": list(p.tau_max),
        "tau_min": p.tau_min,
        "meta": json.dumps(p.meta),
        "ancestry": torch.from_numpy(p.ancestry.astype(np.int64)),
    }
    for i in range(p.n_levels):
        d[f"cells_{i}"] = torch.from_numpy(p.cell_ids[i].view(np.int64).copy())
        d[f"counts_{i}"] = torch.from_numpy(p.counts[i].astype(np.int64))
        d[f"centers_{i}"] = torch.from_numpy(p.centers[i].astype(np.float64))
    return d


def _partition_from_tensors(d: dict[str, Any]) -> S2Partition:
    n = len(d["tau_max"])
    return S2Partition(
        [d[f"cells_{i}"].numpy().view(np.uint64).copy() for i in range(n)],
        [d[f"counts_{i}"].numpy() for i in range(n)],
        [d[f"centers_{i}"].numpy() for i in range(n)],
        d["ancestry"].numpy(),
        tuple(d["tau_max"]),
        int(d["tau_min"]),
        json.loads(d["meta"]),
    )


def checkpoint_payload(model: GeoSurge, partition: S2Partition, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dictionary saved by :func:`save_checkpoint` (trainer checkpoints extend it)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(model.cfg.to_json()),
        "model": model.state_dict(),
        "partition": _partition_to_tensors(partition),
        **(extra or {}),
    }


def save_checkpoint(
    path: str | Path, model: GeoSurge, partition: S2Partition, extra: dict[str, Any] | None = None
) -> None:
    """Save model + partition atomically (readable with ``torch.load(weights_only=True)``)."""
    from terraloc.io import atomic_write

    with atomic_write(path, "wb") as fh:
        torch.save(checkpoint_payload(model, partition, extra), fh)


def load_checkpoint(path: str | Path) -> tuple[GeoSurge, S2Partition, dict[str, Any]]:
    """Load ``(model, partition, raw payload)`` from a GeoSURGE checkpoint.

    Raises:
        MissingResourceError: no such file.
        InputError: not a GeoSURGE checkpoint, or its weights do not match its configuration.
    """
    payload = read_checkpoint(path, CHECKPOINT_FORMAT, "GeoSURGE checkpoint")
    cfg = GeoSurgeConfig.from_json(json.loads(payload["config"]))
    model = GeoSurge(cfg)
    try:
        model.load_state_dict(payload["model"], strict=True)
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        raise InputError(f"weights do not match the stored configuration ({msg})", path=path) from None
    partition = _partition_from_tensors(payload["partition"])
    return model.eval(), partition, payload
