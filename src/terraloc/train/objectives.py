"""Training objectives on embedding shards: GeoSURGE per-level InfoNCE and GeoCLIP's contrastive loss.

An objective owns a model, turns a global :class:`~terraloc.train.shards.Batch` into this rank's
loss, validates, and saves/loads its own checkpoint payload. Both are ``nn.Module`` so that
``DistributedDataParallel`` wraps them (``forward`` returns the loss).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from terraloc.errors import InputError
from terraloc.geo.distance import haversine_km
from terraloc.geo.s2partition import S2Partition
from terraloc.models.geosurge import GeoSurge, GeoSurgeConfig, checkpoint_payload
from terraloc.train.distributed import DistInfo, local_slice
from terraloc.train.shards import Batch, ShardSet


def _accuracy(dist_km: np.ndarray) -> dict[str, float]:
    from terraloc.evaluate.metrics import accuracy_table

    return accuracy_table(dist_km)


class GeoSurgeObjective(nn.Module):
    """Per-level InfoNCE of :class:`GeoSurge` over an :class:`S2Partition`.

    Args:
        model: the GeoSURGE model (its level sizes must match ``partition``).
        partition: nested cells; labels are assigned from each batch's coordinates.
        mode: ``"full"`` or ``"inbatch"`` (candidates = distinct cells of the *global* batch).
    """

    kind = "geosurge"
    ancestry: Tensor

    def __init__(self, model: GeoSurge, partition: S2Partition, mode: str = "inbatch") -> None:
        super().__init__()
        if list(model.cfg.level_sizes) != partition.sizes:
            raise InputError(f"model level sizes {list(model.cfg.level_sizes)} != partition sizes {partition.sizes}")
        if mode not in ("full", "inbatch"):
            raise InputError(f"unknown InfoNCE mode '{mode}' (full or inbatch)", field="--loss")
        self.model = model
        self.partition = partition
        self.mode = mode
        self.register_buffer("ancestry", torch.as_tensor(partition.ancestry, dtype=torch.int64), persistent=False)

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
        for b in val.batches(batch_size, shuffle=False, drop_last=False):
            x = torch.from_numpy(b.emb).to(self.model.log_temperature.dtype)
            labels = torch.from_numpy(self.partition.assign(b.latlon))
            loss, _ = self.model.loss(x, labels, "full")
            tot += float(loss) * len(b)
            n += len(b)
            leaf = self.model.leaf_log_scores(x, self.ancestry).argmax(-1).numpy()
            dists.append(haversine_km(centers[leaf], b.latlon))
        self.model.train()
        acc = _accuracy(np.concatenate(dists)) if dists else {}
        return {"val_loss": tot / max(n, 1), **{f"val_acc_{k}km": v for k, v in acc.items()}}

    def payload(self, extra: dict[str, Any]) -> dict[str, Any]:
        return checkpoint_payload(self.model, self.partition, {"identity": json.dumps(self.identity()), **extra})

    def load_payload(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"], strict=True)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


class GeoClipModel(nn.Module):
    """GeoCLIP's trainable parts: image MLP (D_in→768→512), location encoder, logit scale."""

    def __init__(self, input_dim: int = 768, pretrained: bool = False) -> None:
        super().__init__()
        from terraloc.encoders.location import LocationEncoder

        self.input_dim = input_dim
        self.image_mlp = nn.Sequential(nn.Linear(input_dim, 768), nn.ReLU(), nn.Linear(768, 512))
        self.location = LocationEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if pretrained:
            self.load_pretrained()

    def load_pretrained(self) -> None:
        """Initialise from GeoCLIP's published weights (image MLP needs ``input_dim == 768``)."""
        from terraloc.encoders.geoclip_assets import geoclip_asset

        if self.input_dim != 768:
            raise InputError(f"GeoCLIP's pretrained image MLP takes 768-d inputs, shards have {self.input_dim}")
        self.image_mlp.load_state_dict(torch.load(geoclip_asset("image_mlp"), map_location="cpu", weights_only=True))
        self.location.load_state_dict(
            torch.load(geoclip_asset("location_encoder"), map_location="cpu", weights_only=True)
        )
        with torch.no_grad():
            self.logit_scale.copy_(torch.load(geoclip_asset("logit_scale"), map_location="cpu", weights_only=True))

    def image_features(self, x: Tensor) -> Tensor:
        return F.normalize(self.image_mlp(x), dim=-1)

    def gps_features(self, latlon: Tensor) -> Tensor:
        return F.normalize(self.location(latlon), dim=-1)


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
            "format": "terraloc-geoclip-train-v1",
            "identity": json.dumps(self.identity()),
            "model": self.model.state_dict(),
            **extra,
        }

    def load_payload(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"], strict=True)

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
