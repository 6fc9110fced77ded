"""G3-style geo-alignment: image, GPS and place-text projections trained with three contrastive losses.

G3 (Jia et al., 2024) aligns an image encoder, a GPS encoder and a text encoder of each training
photo's place description before retrieval. Here the frozen encoders' outputs come from shards
(:mod:`terraloc.train.shards`): the ``embedding`` column of a **G3 shard folder** is the image
embedding ``(D_i,)`` followed by the place description's text embedding ``(D_t,)``, and the
manifest records ``{"g3": {"image_dim": D_i, "text_dim": D_t}}`` (:func:`write_g3_shards`,
:func:`g3_shards_from_image_shards`). The trainable parts (:class:`G3Model`) are

* image projection ``D_i → P`` and text projection ``D_t → P`` (two-layer MLPs),
* a GPS encoder: unit vector of ``(lat, lon)`` → random Fourier features at several scales → MLP → ``P``,
* one learnt logit scale,

and the loss (:class:`G3Objective`) is the sum of the three symmetric InfoNCE losses
image–GPS, image–text and text–GPS over the global batch. Under ``torchrun`` every rank encodes
the whole global batch (the projections are small) and takes the loss of its own rows as anchors,
so the gradient DDP averages equals the single-process gradient. Training reuses
:func:`terraloc.train.trainer.fit` (checkpoints, exact resume, early stopping).

The model, head and verifier live in :mod:`terraloc.models.g3` (re-exported here): the trained
model loads as a head (:class:`G3Head`: image projection vs the GPS encoder over a gallery of
coordinates) and as a verifier (:class:`G3Verifier`: the image–GPS and image–text similarity of
candidate locations, for the RAG reasoner).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from terraloc.errors import InputError
from terraloc.models.g3 import G3_FORMAT, G3Head, G3Model, G3Verifier, load_g3_model
from terraloc.train.distributed import DistInfo, local_slice
from terraloc.train.objectives import ModelOnlyState
from terraloc.train.shards import Batch, ShardSet, ShardWriter


def g3_dims(shards: ShardSet) -> tuple[int, int]:
    """``(image_dim, text_dim)`` of a G3 shard folder.

    Raises:
        InputError: the folder is an ordinary shard folder (no ``g3`` entry in its manifest).
    """
    meta = shards.manifest.get("g3")
    if not isinstance(meta, dict) or "image_dim" not in meta or "text_dim" not in meta:
        raise InputError(
            "not a G3 shard folder (manifest has no g3.image_dim/text_dim); make one with "
            "terraloc.train.g3.g3_shards_from_image_shards",
            path=shards.path,
        )
    di, dt = int(meta["image_dim"]), int(meta["text_dim"])
    if di + dt != shards.dim:
        raise InputError(f"g3 image_dim {di} + text_dim {dt} != embedding width {shards.dim}", path=shards.path)
    return di, dt


def write_g3_shards(
    out_dir: str | Path,
    ids: list[str],
    latlon: NDArray[np.float64],
    image: NDArray[np.float32],
    text: NDArray[np.float32],
    shard_rows: int = 16384,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``(N, D_i)`` image and ``(N, D_t)`` text embeddings with their coordinates as G3 shards."""
    img = np.asarray(image, dtype=np.float32)
    txt = np.asarray(text, dtype=np.float32)
    if img.ndim != 2 or txt.ndim != 2 or len(img) != len(txt):
        raise InputError(f"image {img.shape} and text {txt.shape} embeddings must be (N, D) with the same N")
    di, dt = img.shape[1], txt.shape[1]
    w = ShardWriter(Path(out_dir), di + dt, shard_rows, {**(meta or {}), "g3": {"image_dim": di, "text_dim": dt}})
    w.add(ids, latlon, np.concatenate([img, txt], axis=1))
    return w.close()


def g3_shards_from_image_shards(
    image_shards: str | Path,
    out_dir: str | Path,
    text_tower: Any,
    template: str = "a photo taken in {city}, {state}, {country}.",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Add the place description's text embedding to every row of an image shard folder.

    Each row's coordinate is described offline (:func:`terraloc.geo.describe.describe_coords`);
    each distinct description is embedded once with ``text_tower``
    (:class:`terraloc.encoders.text.TextTower`).
    """
    from terraloc.geo.describe import describe_coords

    src = ShardSet(image_shards)
    writer: ShardWriter | None = None
    for i in range(len(src.shards)):
        b = src.read_shard(i)
        desc = describe_coords(b.latlon, template=template, nearby=0).column("description").combine_chunks()
        codes = desc.indices.to_numpy(zero_copy_only=False)
        dictionary = desc.dictionary.to_pylist()
        used, inv = np.unique(codes, return_inverse=True)  # embed each distinct description once
        txt = text_tower.embed([dictionary[u] for u in used])[inv]
        if writer is None:
            meta = {
                "g3": {"image_dim": src.dim, "text_dim": int(txt.shape[1])},
                "text_template": template,
                "source": str(image_shards),
                **{k: v for k, v in src.manifest.items() if k in ("embedding_model", "synthetic")},
            }
            writer = ShardWriter(Path(out_dir), src.dim + int(txt.shape[1]), max(src.rows), meta)
        writer.add(b.ids, b.latlon, np.concatenate([b.emb, txt], axis=1))
        if progress is not None:
            progress(i + 1, len(src.shards))
    if writer is None:
        raise InputError("no shards to convert", path=src.path)
    return writer.close()


def _pair_loss(a: Tensor, b: Tensor, scale: Tensor, rows: slice) -> Tensor:
    """Symmetric InfoNCE with anchors ``rows`` of ``a`` vs all ``b`` and of ``b`` vs all ``a`` (mean of both)."""
    target = torch.arange(rows.start, rows.stop)
    ab = F.cross_entropy(scale * a[rows] @ b.T, target)
    ba = F.cross_entropy(scale * b[rows] @ a.T, target)
    return (ab + ba) / 2


class G3Objective(ModelOnlyState, nn.Module):
    """Image–GPS + image–text + text–GPS symmetric InfoNCE over the global batch (trainer contract)."""

    kind: ClassVar[str] = "g3"

    def __init__(self, model: G3Model, weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.model = model
        self.weights = tuple(float(w) for w in weights)

    def identity(self) -> dict[str, Any]:
        return {"objective": self.kind, **self.model.config(), "weights": list(self.weights)}

    def prepare(self, batch: Batch, info: DistInfo) -> tuple[Tensor, ...]:
        sl = local_slice(len(batch), info)
        emb = torch.from_numpy(batch.emb)
        di = self.model.image_dim
        return (
            emb[:, :di],
            emb[:, di:],
            torch.from_numpy(batch.latlon),
            torch.tensor(sl.start),
            torch.tensor(sl.stop),
        )

    def losses(self, img: Tensor, txt: Tensor, latlon: Tensor, rows: slice) -> dict[str, Tensor]:
        m = self.model
        i, t, g = m.image_features(img), m.text_features(txt), m.gps_features(latlon)
        s = m.logit_scale.exp().clamp(max=100.0)
        return {
            "image_gps": _pair_loss(i, g, s, rows),
            "image_text": _pair_loss(i, t, s, rows),
            "text_gps": _pair_loss(t, g, s, rows),
        }

    def forward(self, img: Tensor, txt: Tensor, latlon: Tensor, start: Tensor, stop: Tensor) -> Tensor:
        parts = self.losses(img, txt, latlon, slice(int(start), int(stop)))
        w = self.weights
        return w[0] * parts["image_gps"] + w[1] * parts["image_text"] + w[2] * parts["text_gps"]

    @torch.no_grad()
    def validate(self, val: ShardSet, batch_size: int = 256) -> dict[str, float]:
        """Loss and in-batch top-1 retrieval accuracy over ``batch_size`` rows.

        ``val_acc_image_gps`` / ``val_acc_image_text``: share of images whose most similar GPS / text
        row of the batch lies within 25 km of the image's own coordinate (rows of one place share
        descriptions, so "the same row" would undercount).
        """
        from terraloc.geo.distance import haversine_km

        self.model.eval()
        dtype = self.model.logit_scale.dtype
        tot, n, hit_g, hit_t, n_acc = 0.0, 0, 0, 0, 0
        di = self.model.image_dim
        for b in val.batches(batch_size, shuffle=False, drop_last=False):
            e = torch.from_numpy(b.emb).to(dtype)
            ll = torch.from_numpy(b.latlon).to(dtype)
            rows = slice(0, len(b))
            parts = self.losses(e[:, :di], e[:, di:], ll, rows)
            tot += float(sum(parts.values())) * len(b)
            n += len(b)
            i = self.model.image_features(e[:, :di])
            got_g = (i @ self.model.gps_features(ll).T).argmax(1).numpy()
            got_t = (i @ self.model.text_features(e[:, di:]).T).argmax(1).numpy()
            hit_g += int((haversine_km(b.latlon[got_g], b.latlon) <= 25.0).sum())
            hit_t += int((haversine_km(b.latlon[got_t], b.latlon) <= 25.0).sum())
            n_acc += len(b)
        self.model.train()
        return {
            "val_loss": tot / max(n, 1),
            "val_acc_image_gps": hit_g / max(n_acc, 1),
            "val_acc_image_text": hit_t / max(n_acc, 1),
        }

    def payload(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": G3_FORMAT,
            "identity": json.dumps(self.identity()),
            "model_config": json.dumps(self.model.config()),
            "model": self.model.state_dict(),
            **extra,
        }


def build_g3_objective(train: ShardSet, val: ShardSet | None = None, proj_dim: int = 0) -> G3Objective:
    """A fresh objective for G3 shards (seed torch first); ``proj_dim`` 0 = 256."""
    di, dt = g3_dims(train)
    if val is not None and g3_dims(val) != (di, dt):
        raise InputError(f"validation shards have g3 dims {g3_dims(val)}, training shards {(di, dt)}", path=val.path)
    return G3Objective(G3Model(di, dt, proj_dim or 256))


__all__ = [
    "G3_FORMAT",
    "G3Head",
    "G3Model",
    "G3Objective",
    "G3Verifier",
    "build_g3_objective",
    "g3_dims",
    "g3_shards_from_image_shards",
    "load_g3_model",
    "write_g3_shards",
]
