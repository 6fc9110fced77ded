"""GeoCLIP as a head on any image backbone.

``image (N, 3, H, W)`` → backbone features ``(N, 768)`` → GeoCLIP image MLP 768→768→512 →
L2-normalise → cosine similarity with the L2-normalised location embeddings of the GPS gallery
``(G, 512)`` → ``exp(logit_scale) ·`` similarity → softmax over the gallery → top-k.

With ``openai/clip-vit-large-patch14`` and the pretrained MLP / logit scale / 100K gallery from the
``geoclip`` wheel this is GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023); it reproduces the
reference ``GeoCLIP.predict`` (float32 throughout, same operation order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from terraloc.errors import InputError
from terraloc.models.head import BaseHead, Candidates, register_head

if TYPE_CHECKING:
    from terraloc.search.gallery import Gallery


@dataclass(frozen=True)
class TopK:
    """Top-k results for ``N`` queries.

    Attributes:
        coords: ``(N, k, 2)`` float64 ``(lat, lon)`` degrees.
        scores: ``(N, k)`` float64 probabilities (or similarity weights for other heads).
        indices: ``(N, k)`` int64 gallery rows.
    """

    coords: NDArray[np.float64]
    scores: NDArray[np.float64]
    indices: NDArray[np.int64]


def load_geoclip_gallery_coords() -> NDArray[np.float32]:
    """GeoCLIP's 100K GPS gallery as ``(100000, 2)`` float32 ``(lat, lon)`` degrees."""
    import pandas as pd

    from terraloc.encoders.geoclip_assets import geoclip_asset

    df = pd.read_csv(geoclip_asset("gps_gallery"))
    return df[["LAT", "LON"]].to_numpy(dtype=np.float32)


def geoclip_gallery_embeddings(encoder: Any = None) -> tuple[NDArray[np.float32], NDArray[np.float32], dict]:
    """The 100K gallery's coordinates ``(G, 2)`` and normalised float32 embeddings ``(G, 512)``.

    Uses :func:`terraloc.search.gallery.default_gallery` (built once with the GeoCLIP location
    encoder and cached under ``TERRALOC_HOME/galleries/``). Float32 is required, not float16:
    probabilities must match the reference ``GeoCLIP.predict`` to 1e-4. Coordinates are
    returned as float32, the precision GeoCLIP's own gallery tensor has.
    """
    from terraloc.search.gallery import default_gallery

    gal = default_gallery(encoder, dtype="float32")
    coords = np.asarray(gal.coords, dtype=np.float32)
    emb = np.array(gal.embeddings, dtype=np.float32)  # a private, writable copy (the file is memory-mapped)
    return coords, emb, dict(gal.manifest)


class GeoCLIPHead(nn.Module):
    """GeoCLIP's image MLP, logit scale and GPS gallery.

    Args:
        coords: ``(G, 2)`` gallery ``(lat, lon)`` degrees.
        gallery: ``(G, 512)`` L2-normalised location embeddings.
        in_dim: backbone feature width (768 for CLIP ViT-L/14).
    """

    coords: Tensor
    gallery: Tensor
    logit_scale: nn.Parameter

    def __init__(self, coords: NDArray[np.float32], gallery: NDArray[np.float32], in_dim: int = 768) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, 768), nn.ReLU(), nn.Linear(768, 512))
        self.logit_scale = nn.Parameter(torch.ones([]) * float(np.log(1 / 0.07)), requires_grad=False)
        self.register_buffer("coords", torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float32)))
        self.register_buffer("gallery", torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32)))
        self.weights_hash = ""

    @classmethod
    def pretrained(
        cls, coords: NDArray[np.float32] | None = None, gallery: NDArray[np.float32] | None = None
    ) -> GeoCLIPHead:
        """The pretrained GeoCLIP head (MLP + logit scale from the wheel) over a gallery.

        Args:
            coords, gallery: ``(G, 2)`` degrees and ``(G, 512)`` normalised embeddings; default
                GeoCLIP's 100K gallery. ``(0, 2)`` / ``(0, 512)`` for a head that searches an index.
        """
        from terraloc.encoders.geoclip_assets import file_sha256, geoclip_asset

        if coords is None or gallery is None:
            coords, gallery, _ = geoclip_gallery_embeddings()
        head = cls(coords, gallery)
        mlp_path, scale_path = geoclip_asset("image_mlp"), geoclip_asset("logit_scale")
        head.mlp.load_state_dict(torch.load(mlp_path, map_location="cpu", weights_only=True))
        scale = torch.load(scale_path, map_location="cpu", weights_only=True)
        head.logit_scale = nn.Parameter(torch.as_tensor(scale, dtype=torch.float32).reshape([]), requires_grad=False)
        head.weights_hash = file_sha256(mlp_path)
        return head.eval()

    def image_features(self, backbone_features: Tensor) -> Tensor:
        """``(N, in_dim)`` backbone features → ``(N, 512)`` GeoCLIP image features (unnormalised)."""
        return self.mlp(backbone_features)  # type: ignore[no-any-return]

    def logits(self, backbone_features: Tensor) -> Tensor:
        """``(N, in_dim)`` → ``(N, G)`` scaled cosine similarities with the gallery."""
        f = nn.functional.normalize(self.image_features(backbone_features), dim=1)
        return self.logit_scale.exp() * (f @ self.gallery.t())

    @torch.no_grad()
    def topk_from_logits(self, logits: Tensor, k: int) -> TopK:
        """Softmax over the gallery, then the ``k`` most probable locations per image."""
        g = self.gallery.shape[0]
        if not 1 <= k <= g:
            raise InputError(f"top-k must be between 1 and {g}, got {k}", field="top_k")
        probs = logits.softmax(dim=-1)
        top = torch.topk(probs, k, dim=1)
        coords = self.coords[top.indices].double().numpy()
        return TopK(coords, top.values.double().numpy(), top.indices.numpy().astype(np.int64))


class GeoCLIP(nn.Module):
    """Backbone + :class:`GeoCLIPHead`. ``predict_pixels`` mirrors ``GeoCLIP.predict``."""

    def __init__(self, backbone: Any, head: GeoCLIPHead) -> None:
        super().__init__()
        if backbone.dim != head.mlp[0].in_features:
            raise InputError(
                f"backbone '{backbone.model_id}' gives {backbone.dim}-d features but the GeoCLIP head "
                f"expects {head.mlp[0].in_features}-d (use a CLIP ViT-L/14 family backbone)",
                field="backbone",
            )
        self.backbone = backbone
        self.head = head

    @torch.no_grad()
    def logits(self, pixels: Tensor) -> Tensor:
        """``(N, 3, H, W)`` or ten-crop ``(N, 10, 3, H, W)`` → ``(N, G)`` logits (crop logits averaged)."""
        if pixels.ndim == 5:
            n, c = pixels.shape[:2]
            lg = self.head.logits(self.backbone.features(pixels.flatten(0, 1)))
            return lg.view(n, c, -1).mean(dim=1)
        return self.head.logits(self.backbone.features(pixels))

    @torch.no_grad()
    def predict_pixels(self, pixels: Tensor, top_k: int = 5) -> TopK:
        """Top-k gallery locations and probabilities for a batch of pixel tensors."""
        return self.head.topk_from_logits(self.logits(pixels), top_k)

    @torch.no_grad()
    def image_features(self, pixels: Tensor) -> Tensor:
        """``(N, 3, H, W)`` → ``(N, 512)`` GeoCLIP image features (before normalisation)."""
        return self.head.image_features(self.backbone.features(pixels))


def load_geoclip(backbone: str | Path = "clip-vit-large-patch14") -> GeoCLIP:
    """GeoCLIP with the given backbone spec (see :func:`terraloc.encoders.image.load_backbone`)."""
    from terraloc.encoders.image import load_backbone

    return GeoCLIP(load_backbone(backbone), GeoCLIPHead.pretrained()).eval()


# --------------------------------------------------------------------------- the pipeline head

GALLERY_PRESETS = ("geoclip-100k",)
#: galleries larger than this (as float32) are searched flat in streamed blocks, not held in memory
FLAT_IN_MEMORY_MB = 2048
_FLAT_BLOCK_ROWS = 262144

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: building a gallery (rows) or an index (0 of 1, then 1 of 1)."""


def resolve_gallery(spec: str, progress: Progress | None = None) -> Gallery:
    """``geoclip-100k`` (GeoCLIP's MP-16 gallery, embedded once into ``TERRALOC_HOME``) or a gallery
    folder made by ``terraloc gallery build`` (refused when built with another location encoder)."""
    from terraloc.encoders import load_location_encoder
    from terraloc.search.gallery import Gallery, default_gallery

    enc = load_location_encoder("geoclip")
    if spec in GALLERY_PRESETS:
        cb = None if progress is None else (lambda done, total: progress("embedding gallery", done, total))
        return default_gallery(enc, dtype="float32", progress=cb)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise InputError(
            f"unknown gallery '{spec}': neither {', '.join(GALLERY_PRESETS)} nor a gallery folder "
            "(build one with `terraloc gallery build --coords FILE --out DIR`)",
            field="gallery",
        )
    return Gallery.load(path, enc)


@register_head("geoclip")
class GeoCLIPGalleryHead(BaseHead):
    """GeoCLIP on any GPS :class:`~terraloc.search.gallery.Gallery`, searched through a ``SearchIndex``.

    ``features (N, D)`` (or ten-crop ``(N, 10, D)``) → image MLP → L2-normalise → scaled cosine with
    the gallery's location embeddings → probabilities:

    * ``index="flat"``: softmax over the **whole** gallery, exactly the reference ``GeoCLIP.predict``
      (ten-crop averages the crops' logits over the whole gallery);
    * any other index spec (``hierarchical@...``, ``IVF1024,Flat@nprobe=16``, ...; built once and
      cached in ``<gallery>/indexes/``): the index retrieves ``shortlist`` rows per query (per crop),
      their logits are recomputed exactly from the gallery embeddings, and the probabilities are a
      softmax over **that shortlist only** — larger than the full-gallery probabilities, since the
      mass of the rows never retrieved is not in the denominator.

    Evidence per candidate: ``{"gallery_row": int, "similarity": cosine}``.
    """

    input = "features"
    supports_ten_crop = True

    def __init__(
        self,
        gallery: Gallery,
        index: str = "flat",
        shortlist: int = 100,
        gallery_name: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        from terraloc.search.spec import parse_index_spec

        self.gallery = gallery
        self.gallery_name = gallery_name or str(gallery.path)
        self.index_spec = index
        self.shortlist = int(shortlist)
        spec, options = parse_index_spec(index)
        coords = np.asarray(gallery.coords, dtype=np.float64)
        if gallery.manifest.get("source") == "geoclip-100k":
            coords = coords.astype(np.float32).astype(np.float64)  # GeoCLIP's own gallery tensor is float32
        self.coords = coords
        self._index: Any = None
        self._blocked = False
        empty = (np.zeros((0, 2), np.float32), np.zeros((0, gallery.dim), np.float32))
        if spec == "flat":
            self._blocked = len(gallery) * gallery.dim * 4 > FLAT_IN_MEMORY_MB * 2**20
            if self._blocked:
                self.head = GeoCLIPHead.pretrained(*empty)
            else:  # an owned float32 copy (the file is memory-mapped read-only)
                emb = np.array(gallery.embeddings, dtype=np.float32)
                self.head = GeoCLIPHead.pretrained(coords.astype(np.float32), emb)
        else:
            self.head = GeoCLIPHead.pretrained(*empty)
            if progress is not None:
                progress(f"index {index}", 0, 1)
            self._index = gallery.index(spec, **options)
            if progress is not None:
                progress(f"index {index}", 1, 1)
        first, last = self.head.mlp[0], self.head.mlp[-1]
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        out_dim = last.out_features
        if gallery.dim != out_dim:
            raise InputError(
                f"gallery has {gallery.dim}-d embeddings but the GeoCLIP head gives {out_dim}-d", path=gallery.path
            )
        self.input_dim: int | None = first.in_features

    @classmethod
    def from_config(cls, config: Any, backbone: Any, *, progress: Progress | None = None) -> GeoCLIPGalleryHead:
        if getattr(config, "checkpoint", None):
            raise InputError("the geoclip head uses GeoCLIP's pretrained weights; --checkpoint is for geosurge")
        gallery = resolve_gallery(config.gallery, progress)
        return cls(gallery, config.index, config.shortlist, config.gallery, progress)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "geoclip_head_hash": self.head.weights_hash,
            "gallery": self.gallery_name,
            "gallery_size": len(self.gallery),
            "index": self.index_spec,
        }
        if self._index is not None:
            info["shortlist"] = self.shortlist
        return info

    def files(self) -> dict[str, str]:
        from terraloc.encoders.geoclip_assets import geoclip_asset
        from terraloc.search.gallery import MANIFEST

        return {
            "image_mlp": str(geoclip_asset("image_mlp")),
            "logit_scale": str(geoclip_asset("logit_scale")),
            "gallery": str(self.gallery.path / MANIFEST),
        }

    @torch.no_grad()
    def predict(self, x: Tensor, top_k: int) -> Candidates:
        """``(N, D)`` or ten-crop ``(N, C, D)`` backbone features → top-``k`` gallery locations."""
        feats = x.float()
        crops = 1 if feats.ndim == 2 else int(feats.shape[1])
        flat = feats.reshape(-1, feats.shape[-1])
        if self._index is not None:
            return self._shortlist(flat, crops, top_k)
        k = min(top_k, len(self.gallery))
        if self._blocked:
            f = nn.functional.normalize(self.head.image_features(flat), dim=1)
            probs, rows, sims = self._flat_blocked(f, crops, k)
        else:
            lg = self.head.logits(flat)
            lg = lg.view(-1, crops, lg.shape[1]).mean(dim=1)
            top = self.head.topk_from_logits(lg, k)
            probs, rows = top.scores, top.indices
            sims = (lg.gather(1, torch.from_numpy(rows)) / self.head.logit_scale.exp()).double().numpy()
        return self._candidates(rows, probs, sims)

    def _candidates(self, rows: NDArray[np.int64], probs: NDArray[np.float64], sims: NDArray[np.float64]) -> Candidates:
        evidence = [
            [{"gallery_row": int(r), "similarity": round(float(s), 6)} for r, s in zip(rr, ss, strict=True)]
            for rr, ss in zip(rows, sims, strict=True)
        ]
        return Candidates(self.coords[rows], np.asarray(probs, dtype=np.float64), evidence)

    def _flat_blocked(
        self, f: Tensor, crops: int, k: int
    ) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
        """Full-gallery softmax over a gallery streamed in blocks (running log-sum-exp + top-k merge)."""
        scale = self.head.logit_scale.exp()
        n = f.shape[0] // crops
        best_v = torch.full((n, k), -torch.inf)
        best_i = torch.full((n, k), -1, dtype=torch.int64)
        lse = torch.full((n,), -torch.inf)
        emb = self.gallery.embeddings
        for b in range(0, len(self.gallery), _FLAT_BLOCK_ROWS):
            block = torch.from_numpy(np.array(emb[b : b + _FLAT_BLOCK_ROWS], dtype=np.float32))  # owned copy
            lg = (scale * (f @ block.T)).view(n, crops, -1).mean(dim=1)
            lse = torch.logaddexp(lse, torch.logsumexp(lg, dim=1))
            v, i = torch.topk(lg, min(k, lg.shape[1]), dim=1)
            best_v, pos = torch.topk(torch.cat([best_v, v], 1), k, dim=1)
            best_i = torch.gather(torch.cat([best_i, i + b], 1), 1, pos)
        probs = (best_v - lse[:, None]).exp().double().numpy()
        return probs, best_i.numpy(), (best_v / scale).double().numpy()

    def _shortlist(self, flat: Tensor, crops: int, top_k: int) -> Candidates:
        f = nn.functional.normalize(self.head.image_features(flat), dim=1)
        s = min(max(self.shortlist, top_k), len(self.gallery))
        res = self._index.search(f.numpy(), s)
        scale = float(self.head.logit_scale.exp())
        n = f.shape[0] // crops
        per_image = []
        for i in range(n):
            rows = np.unique(res.indices[i * crops : (i + 1) * crops])
            rows = rows[rows >= 0]
            emb = torch.from_numpy(np.asarray(self.gallery.embeddings[rows], dtype=np.float32))
            sims = (f[i * crops : (i + 1) * crops] @ emb.T).mean(dim=0)  # exact rescoring, crops averaged
            p = torch.softmax(scale * sims, dim=0)
            top = torch.topk(p, min(top_k, len(rows)))
            per_image.append(
                [
                    (
                        float(self.coords[rows[j], 0]),
                        float(self.coords[rows[j], 1]),
                        float(v),
                        {"gallery_row": int(rows[j]), "similarity": round(float(sims[j]), 6)},
                    )
                    for v, j in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                ]
            )
        return Candidates.from_rows(per_image, min(top_k, s))
