"""Training objectives on embedding shards: GeoSURGE per-level InfoNCE and GeoCLIP's contrastive loss.

An objective owns a model, turns a global :class:`~terraloc.train.shards.Batch` into this rank's
loss, validates, and saves/loads its own checkpoint payload. Both are ``nn.Module`` so that
``DistributedDataParallel`` wraps them (``forward`` returns the loss).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from terraloc.errors import InputError
from terraloc.geo.distance import haversine_km
from terraloc.geo.s2partition import S2Partition
from terraloc.models.geoclip import CHECKPOINT_FORMAT as GEOCLIP_CHECKPOINT_FORMAT
from terraloc.models.geoclip import GeoClipModel, upgrade_state_dict
from terraloc.models.geosurge import GeoSurge, GeoSurgeConfig, GeoSurgeHead, checkpoint_payload
from terraloc.train.distributed import DistInfo, local_slice
from terraloc.train.shards import Batch, ShardSet


def _accuracy(dist_km: np.ndarray) -> dict[str, float]:
    from terraloc.evaluate.metrics import accuracy_table

    return accuracy_table(dist_km)


class _HasModel(Protocol):
    @property
    def model(self) -> nn.Module: ...


class ModelOnlyState:
    """Checkpoint methods of an objective whose whole state is ``self.model``'s weights
    (no queues or counters beside them)."""

    def load_payload(self: _HasModel, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"], strict=True)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


class GeoSurgeObjective(ModelOnlyState, nn.Module):
    """Per-level InfoNCE of :class:`GeoSurge` over an :class:`S2Partition`.

    Args:
        model: the GeoSURGE model (its level sizes must match ``partition``).
        partition: nested cells; labels are assigned from each batch's coordinates.
        mode: ``"full"`` or ``"inbatch"`` (candidates = distinct cells of the *global* batch).
    """

    kind = "geosurge"

    def __init__(self, model: GeoSurge, partition: S2Partition, mode: str = "inbatch") -> None:
        super().__init__()
        if list(model.cfg.level_sizes) != partition.sizes:
            raise InputError(f"model level sizes {list(model.cfg.level_sizes)} != partition sizes {partition.sizes}")
        if mode not in ("full", "inbatch"):
            raise InputError(f"unknown InfoNCE mode '{mode}' (full or inbatch)", field="--loss")
        self.model = model
        self.partition = partition
        self.mode = mode

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed or loaded into this objective."""
        return {
            "objective": self.kind,
            "model": self.model.cfg.to_json(),
            "partition": self.partition.config(),
            "mode": self.mode,
        }

    def prepare(self, batch: Batch, info: DistInfo) -> tuple[Tensor, ...]:
        labels = torch.from_numpy(self.partition.assign(batch.latlon))
        sl = local_slice(len(batch), info)
        return torch.from_numpy(batch.emb[sl]), labels[sl], labels

    def forward(self, x: Tensor, labels: Tensor, global_labels: Tensor) -> Tensor:
        loss, _ = self.model.loss(x, labels, self.mode, candidate_labels=global_labels)
        return loss

    @torch.no_grad()
    def validate(self, val: ShardSet, batch_size: int = 2048) -> dict[str, float]:
        """Full-softmax validation loss (summed over levels) and accuracy of the top leaf centre."""
        self.model.eval()
        tot, n, dists = 0.0, 0, []
        centers = self.partition.centers[-1]
        head = GeoSurgeHead(self.model, self.partition)  # the prediction head's scoring, on the current weights
        for b in val.batches(batch_size, shuffle=False, drop_last=False):
            x = torch.from_numpy(b.emb).to(self.model.log_temperature.dtype)
            labels = torch.from_numpy(self.partition.assign(b.latlon))
            loss, _ = self.model.loss(x, labels, "full")
            tot += float(loss) * len(b)
            n += len(b)
            leaf = head.leaf_log_scores(x).argmax(-1).numpy()
            dists.append(haversine_km(centers[leaf], b.latlon))
        self.model.train()
        acc = _accuracy(np.concatenate(dists)) if dists else {}
        return {"val_loss": tot / max(n, 1), **{f"val_acc_{k}km": v for k, v in acc.items()}}

    def payload(self, extra: dict[str, Any]) -> dict[str, Any]:
        return checkpoint_payload(self.model, self.partition, {"identity": json.dumps(self.identity()), **extra})


class GeoClipObjective(nn.Module):
    """GeoCLIP's objective: images vs the batch's GPS plus a queue of recent training GPS.

    Logits ``exp(logit_scale) * img @ [gps_batch; gps_queue]^T``; the positive of image i is
    its own coordinate. The queue (``queue_size`` coordinates) is filled first-in first-out
    with the real coordinates of past global batches (never random noise); until it is full
    only its filled part is used. With ``freeze_location`` the location encoder is not
    trained (fast fine-tuning of the image MLP only).
    """

    kind = "geoclip"
    queue: Tensor

    def __init__(self, model: GeoClipModel, queue_size: int = 4096, freeze_location: bool = False) -> None:
        super().__init__()
        self.model = model
        self.queue_size = queue_size
        self.freeze_location = freeze_location
        if freeze_location:
            for p in self.model.location.parameters():
                p.requires_grad_(False)
        self.register_buffer("queue", torch.zeros(queue_size, 2, dtype=torch.float32))
        self.queue_filled = 0
        self.queue_ptr = 0
        self._gallery: Tensor | None = None
        self._gallery_coords: np.ndarray | None = None
        self._cache_keys: np.ndarray | None = None
        self._cache_feats: Tensor | None = None

    @staticmethod
    def _keys(latlon: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(latlon, dtype=np.float32)).view(np.int64).reshape(-1)

    def set_location_cache(self, coords: np.ndarray, feats: np.ndarray) -> None:
        """Precomputed normalised location features ``(M, 512)`` of ``(M, 2)`` coordinates.

        Only used with ``freeze_location`` (the features are then a fixed function of the
        coordinate); coordinates missing from the cache are encoded on the fly.
        """
        if not self.freeze_location:
            raise InputError("a location-feature cache needs a frozen location encoder")
        keys = self._keys(coords)
        order = np.argsort(keys)
        self._cache_keys = keys[order]
        self._cache_feats = torch.from_numpy(np.asarray(feats, dtype=np.float32)[order])

    @torch.no_grad()
    def _frozen_gps(self, latlon: Tensor) -> Tensor:
        if self._cache_keys is not None and self._cache_feats is not None:
            keys = self._keys(latlon.numpy())
            pos = np.clip(np.searchsorted(self._cache_keys, keys), 0, len(self._cache_keys) - 1)
            if bool((self._cache_keys[pos] == keys).all()):
                return self._cache_feats[torch.from_numpy(pos)]
        return self.model.gps_features(latlon)

    def identity(self) -> dict[str, Any]:
        return {
            "objective": self.kind,
            "input_dim": self.model.input_dim,
            "queue_size": self.queue_size,
            "freeze_location": self.freeze_location,
        }

    def prepare(self, batch: Batch, info: DistInfo) -> tuple[Tensor, ...]:
        sl = local_slice(len(batch), info)
        gll = torch.from_numpy(batch.latlon.astype(np.float32))
        return torch.from_numpy(batch.emb[sl]), torch.tensor(sl.start), gll

    def forward(self, x: Tensor, offset: Tensor, global_latlon: Tensor) -> Tensor:
        img = self.model.image_features(x)
        q = self.queue[: self.queue_filled]
        gps_in = torch.cat([global_latlon, q]) if self.queue_filled else global_latlon
        gps = self._frozen_gps(gps_in) if self.freeze_location else self.model.gps_features(gps_in)
        logits = self.model.logit_scale.exp() * img @ gps.T
        target = torch.arange(x.shape[0]) + int(offset)
        loss = F.cross_entropy(logits, target)
        self._enqueue(global_latlon)
        return loss

    @torch.no_grad()
    def _enqueue(self, latlon: Tensor) -> None:
        n = min(len(latlon), self.queue_size)
        idx = (torch.arange(n) + self.queue_ptr) % self.queue_size
        self.queue[idx] = latlon[:n]
        self.queue_ptr = int((self.queue_ptr + n) % self.queue_size)
        self.queue_filled = min(self.queue_size, self.queue_filled + n)

    def set_gallery(self, coords: np.ndarray) -> None:
        """GPS gallery ``(G, 2)`` degrees used by :meth:`validate` and :meth:`predict`."""
        self._gallery_coords = np.asarray(coords, dtype=np.float64)
        self._gallery = None

    @torch.no_grad()
    def gallery_features(self) -> Tensor:
        if self._gallery_coords is None:
            raise InputError("no GPS gallery set for GeoCLIP prediction")
        if self._gallery is None:
            self._gallery = self.model.location.encode(torch.from_numpy(self._gallery_coords.astype(np.float32)))
        return self._gallery

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Top-1 gallery coordinate ``(N, 2)`` for ``(N, D_in)`` embeddings."""
        assert self._gallery_coords is not None or self._gallery is None
        g = self.gallery_features()
        out = []
        for s in range(0, len(x), batch_size):
            img = self.model.image_features(torch.from_numpy(np.asarray(x[s : s + batch_size], dtype=np.float32)))
            out.append((img @ g.T).argmax(-1).numpy())
        assert self._gallery_coords is not None
        return self._gallery_coords[np.concatenate(out)]

    @torch.no_grad()
    def validate(self, val: ShardSet, batch_size: int = 2048) -> dict[str, float]:
        """Validation loss (in-batch, no queue) and, with a gallery, top-1 accuracy."""
        self.model.eval()
        self._gallery = None  # weights changed
        tot, n, dists = 0.0, 0, []
        for b in val.batches(batch_size, shuffle=False, drop_last=False):
            x = torch.from_numpy(b.emb).to(self.model.logit_scale.dtype)
            ll = torch.from_numpy(b.latlon).to(self.model.logit_scale.dtype)
            logits = self.model.logit_scale.exp() * self.model.image_features(x) @ self.model.gps_features(ll).T
            tot += float(F.cross_entropy(logits, torch.arange(len(b)))) * len(b)
            n += len(b)
            if self._gallery_coords is not None:
                dists.append(haversine_km(self.predict(b.emb), b.latlon))
        self.model.train()
        acc = _accuracy(np.concatenate(dists)) if dists else {}
        return {"val_loss": tot / max(n, 1), **{f"val_acc_{k}km": v for k, v in acc.items()}}

    def payload(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": GEOCLIP_CHECKPOINT_FORMAT,
            "identity": json.dumps(self.identity()),
            "model": self.model.state_dict(),
            **extra,
        }

    def load_payload(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(upgrade_state_dict(payload["model"]), strict=True)

    def extra_state(self) -> dict[str, Any]:
        return {"queue": self.queue.clone(), "queue_filled": self.queue_filled, "queue_ptr": self.queue_ptr}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.queue.copy_(state["queue"])
        self.queue_filled = int(state["queue_filled"])
        self.queue_ptr = int(state["queue_ptr"])


def build_geosurge_objective(
    partition: S2Partition, input_dim: int, mode: str = "inbatch", proj_hidden: int = 0, embed_dim: int = 768
) -> GeoSurgeObjective:
    """A fresh GeoSURGE objective (seed torch before calling for reproducible initialisation)."""
    cfg = GeoSurgeConfig(
        input_dim=input_dim, level_sizes=tuple(partition.sizes), embed_dim=embed_dim, proj_hidden=proj_hidden
    )
    return GeoSurgeObjective(GeoSurge(cfg), partition, mode)


def build_objective(
    kind: str,
    train: ShardSet,
    *,
    val: ShardSet | None = None,
    seed: int = 0,
    partition: S2Partition | str | Path | None = None,
    tau_max: Sequence[int] | None = None,
    tau_min: int | None = None,
    levels: int = 0,
    loss: str = "inbatch",
    proj_hidden: int = 0,
    queue_size: int = 4096,
    pretrained: bool = False,
    freeze_location: bool = False,
    log: Callable[[str], None] | None = None,
) -> GeoSurgeObjective | GeoClipObjective:
    """The objective ``terraloc train KIND`` trains (``"geosurge"``, ``"geoclip"`` or ``"g3"``), seeded with ``seed``.

    GeoSURGE: the ``partition`` (an :class:`S2Partition` or its ``.npz``), else one built from the
    training coordinates with ``tau_max`` / ``tau_min`` (each defaulting to the paper's MP-16 values
    scaled to the row count; the scaled taus are reported through ``log``); ``levels`` keeps only
    the finest N levels (0 = all). GeoCLIP: the
    image MLP, location encoder and logit scale (``pretrained``: GeoCLIP's published weights;
    ``freeze_location``: the location encoder is not trained), with the training coordinates as
    validation gallery when ``val`` is given. G3: :func:`terraloc.train.g3.build_g3_objective`.

    Raises:
        InputError: unknown kind, or ``levels`` outside ``1..n_levels``.
    """
    from terraloc.geo.s2partition import GEOSURGE_TAU_MAX, GEOSURGE_TAU_MIN, scale_taus

    torch.manual_seed(seed)
    if kind == "geosurge":
        if isinstance(partition, S2Partition):
            part = partition
        elif partition is not None:
            part = S2Partition.load(partition)
        else:
            coords = train.coords()
            scaled_max, scaled_min = scale_taus(len(coords), GEOSURGE_TAU_MAX, GEOSURGE_TAU_MIN)
            tmin = scaled_min if tau_min is None else tau_min
            tmax = scaled_max if tau_max is None else tuple(tau_max)
            if tau_max is None and log is not None:
                log(
                    f"geocells: MP-16 thresholds scaled to {len(coords):,} photos: tau_max {list(tmax)}, "
                    f"tau_min {tmin} (set --tau-max/--tau-min to choose)"
                )
            part = S2Partition.build(coords, tmax, tmin, source=str(train.path))
        if levels:
            if not 1 <= levels <= part.n_levels:
                raise InputError(f"must be in 1..{part.n_levels}", field="--levels")
            part = part.select_levels(range(part.n_levels - levels, part.n_levels))
        torch.manual_seed(seed)
        return build_geosurge_objective(part, train.dim, mode=loss, proj_hidden=proj_hidden)
    if kind == "geoclip":
        obj = GeoClipObjective(GeoClipModel(train.dim, pretrained=pretrained), queue_size, freeze_location)
        if val is not None:
            obj.set_gallery(train.coords())
        return obj
    if kind == "g3":
        from terraloc.train.g3 import build_g3_objective

        return build_g3_objective(train, val)  # type: ignore[return-value]
    raise InputError(f"unknown objective '{kind}' (geosurge, geoclip or g3)", field="OBJECTIVE")
