"""GeoCLIP as a head on any image backbone.

``image (N, 3, H, W)`` → backbone features ``(N, 768)`` → GeoCLIP image MLP 768→768→512 →
L2-normalise → cosine similarity with the L2-normalised location embeddings of the GPS gallery
``(G, 512)`` → ``exp(logit_scale) ·`` similarity → softmax over the gallery → top-k.

With ``openai/clip-vit-large-patch14`` and the pretrained MLP / logit scale / 100K gallery from the
``geoclip`` wheel this is GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023); it reproduces the
reference ``GeoCLIP.predict`` (float32 throughout, same operation order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from terraloc.errors import InputError


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
    def pretrained(cls) -> GeoCLIPHead:
        """The pretrained GeoCLIP head (MLP + logit scale from the wheel, 100K gallery)."""
        from terraloc.encoders.geoclip_assets import file_sha256, geoclip_asset

        coords, emb, _ = geoclip_gallery_embeddings()
        head = cls(coords, emb)
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
