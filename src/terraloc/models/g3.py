"""G3's trainable projections as a model, a head and a verifier (trained by :mod:`terraloc.train.g3`).

:class:`G3Model`: image projection ``D_i → P`` and text projection ``D_t → P`` (two-layer MLPs), a
GPS encoder (unit vector of ``(lat, lon)`` → random Fourier features at several scales → MLP →
``P``) and one learnt logit scale. :class:`G3Head` (registered as ``g3``) compares the projected
image with the GPS encodings of a coordinate gallery; :class:`G3Verifier` scores candidate places
for the RAG reasoner's ``verify`` selection.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from terraloc.errors import InputError

G3_FORMAT = "terraloc-g3-train-v1"


class G3LocationEncoder(nn.Module):
    """``(N, 2)`` ``(lat, lon)`` degrees → ``(N, P)``: unit vector, Fourier features per sigma, MLP."""

    def __init__(self, out_dim: int, sigmas: tuple[float, ...] = (1.0, 4.0, 16.0), n_freq: int = 64, hidden: int = 256):
        super().__init__()
        self.sigmas = tuple(float(s) for s in sigmas)
        self.b = nn.Parameter(
            torch.randn(len(sigmas), n_freq, 3) * torch.tensor(sigmas)[:, None, None], requires_grad=False
        )
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq * len(sigmas), hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, latlon: Tensor) -> Tensor:
        rad = torch.deg2rad(latlon)
        lat, lon = rad[:, 0], rad[:, 1]
        v = torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], dim=1)
        proj = 2 * math.pi * torch.einsum("nd,sfd->nsf", v, self.b).flatten(1)
        return self.mlp(torch.cat([torch.cos(proj), torch.sin(proj)], dim=1))  # type: ignore[no-any-return]


class G3Model(nn.Module):
    """The trainable G3 projections (see the module docstring)."""

    def __init__(self, image_dim: int, text_dim: int, proj_dim: int = 256, hidden: int = 512) -> None:
        super().__init__()
        self.image_dim, self.text_dim, self.proj_dim = image_dim, text_dim, proj_dim
        self.input_dim = image_dim + text_dim  # the shard width the trainer checks
        self.image_proj = nn.Sequential(nn.Linear(image_dim, hidden), nn.ReLU(), nn.Linear(hidden, proj_dim))
        self.text_proj = nn.Sequential(nn.Linear(text_dim, hidden), nn.ReLU(), nn.Linear(hidden, proj_dim))
        self.location = G3LocationEncoder(proj_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def config(self) -> dict[str, int]:
        return {"image_dim": self.image_dim, "text_dim": self.text_dim, "proj_dim": self.proj_dim}

    def image_features(self, x: Tensor) -> Tensor:
        return F.normalize(self.image_proj(x), dim=-1)

    def text_features(self, t: Tensor) -> Tensor:
        return F.normalize(self.text_proj(t), dim=-1)

    def gps_features(self, latlon: Tensor) -> Tensor:
        return F.normalize(self.location(latlon), dim=-1)


def load_g3_model(path: str | Path) -> G3Model:
    """A trained :class:`G3Model` from a ``terraloc train g3`` checkpoint (``best.pt``/``last.pt``)."""
    from terraloc.io import read_checkpoint

    payload = read_checkpoint(path, G3_FORMAT, "G3 checkpoint", "train one with: terraloc train g3")
    cfg = json.loads(payload["model_config"])
    model = G3Model(int(cfg["image_dim"]), int(cfg["text_dim"]), int(cfg["proj_dim"]))
    model.load_state_dict({k: v.float() for k, v in payload["model"].items()}, strict=True)
    return model.float().eval()


class G3Verifier:
    """Scores candidate places for an image with a trained G3 model.

    ``score(image_embeddings (N, D_i), coords (N, k, 2)) → (N, k)`` cosine similarity of the projected
    image and the GPS encoding of each candidate; ``score_text(image (N, D_i), text (N, k, D_t))`` the
    same against the candidates' place-description text embeddings.
    """

    def __init__(self, model: G3Model) -> None:
        self.model = model.eval()

    @classmethod
    def load(cls, path: str | Path) -> G3Verifier:
        return cls(load_g3_model(path))

    @torch.no_grad()
    def project_image(self, image: NDArray[np.float32]) -> NDArray[np.float32]:
        """``(N, D_i)`` or ``(D_i,)`` image embeddings → normalised G3 image features (same leading shape)."""
        x = np.asarray(image, dtype=np.float32)
        f = self.model.image_features(torch.as_tensor(x.reshape(-1, x.shape[-1]))).numpy()
        return f.reshape(*x.shape[:-1], f.shape[-1])

    def location_encoder(self) -> Any:
        """The GPS encoder as :func:`terraloc.rag.select.select_verify` takes it (``.encode(latlon, normalize)``).

        With ``image_embedding=verifier.project_image(emb)`` the RAG ``verify`` selection scores
        candidates and LLM answers with the trained G3 alignment.
        """
        model = self.model

        class _Encoder:
            @torch.no_grad()
            def encode(self, latlon: Tensor, normalize: bool = True) -> Tensor:
                f = model.location(latlon.float())
                return F.normalize(f, dim=-1) if normalize else f

        return _Encoder()

    @torch.no_grad()
    def score(self, image: NDArray[np.float32], coords: NDArray[np.float64]) -> NDArray[np.float64]:
        c = np.asarray(coords, dtype=np.float64)
        n, k = c.shape[:2]
        i = self.model.image_features(torch.as_tensor(np.asarray(image, dtype=np.float32)))
        g = self.model.gps_features(torch.as_tensor(c.reshape(-1, 2), dtype=torch.float32)).view(n, k, -1)
        return torch.einsum("nd,nkd->nk", i, g).double().numpy()  # type: ignore[no-any-return]

    @torch.no_grad()
    def score_text(self, image: NDArray[np.float32], text: NDArray[np.float32]) -> NDArray[np.float64]:
        t = torch.as_tensor(np.asarray(text, dtype=np.float32))
        n, k = t.shape[:2]
        i = self.model.image_features(torch.as_tensor(np.asarray(image, dtype=np.float32)))
        tf = self.model.text_features(t.reshape(n * k, -1)).view(n, k, -1)
        return torch.einsum("nd,nkd->nk", i, tf).double().numpy()  # type: ignore[no-any-return]


class G3Head:
    """A trained G3 model as a head: projected image vs GPS encodings of a coordinate gallery.

    Args:
        model: the trained :class:`G3Model`.
        gallery: ``(G, 2)`` candidate coordinates (e.g. the training coordinates or GeoCLIP's 100K).
    """

    name: ClassVar[str] = "g3"
    input: ClassVar[str] = "features"
    supports_ten_crop: ClassVar[bool] = False

    def __init__(self, model: G3Model, gallery: NDArray[np.float64], batch: int = 65536) -> None:
        self.model = model.eval()
        self.coords = np.asarray(gallery, dtype=np.float64)
        self.input_dim: int | None = model.image_dim
        self.required_backbone: dict[str, Any] | None = None
        with torch.no_grad():
            parts = [
                self.model.gps_features(torch.as_tensor(self.coords[s : s + batch], dtype=torch.float32))
                for s in range(0, len(self.coords), batch)
            ]
        self.gallery = torch.cat(parts)

    @classmethod
    def from_config(cls, config: Any, backbone: Any) -> G3Head:
        if not getattr(config, "checkpoint", None):
            raise InputError("the g3 head needs a trained checkpoint (--checkpoint FILE)", field="checkpoint")
        from terraloc.search.gallery import geoclip_gallery_coords

        # float32 values, as GeoCLIP's own gallery tensor holds them
        coords = geoclip_gallery_coords().astype(np.float32).astype(np.float64)
        return cls(load_g3_model(config.checkpoint), coords)

    def transform(self, preprocess: Any) -> Any:
        return preprocess

    @torch.no_grad()
    def predict_arrays(self, features: Any, top_k: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``(N, D_i)`` image embeddings → coords ``(N, k, 2)`` and softmax probabilities ``(N, k)``."""
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        logits = self.model.logit_scale.exp().clamp(max=100.0) * self.model.image_features(x) @ self.gallery.T
        top = torch.topk(logits.softmax(-1), min(top_k, len(self.coords)), dim=1)
        return self.coords[top.indices.numpy()], top.values.double().numpy()

    def predict(self, x: Any, top_k: int) -> Any:
        coords, probs = self.predict_arrays(x.detach().cpu().numpy() if torch.is_tensor(x) else x, top_k)
        from terraloc.models.head import Candidates

        return Candidates(coords, probs)

    def describe(self) -> dict[str, Any]:
        return {"g3": {**self.model.config(), "gallery": len(self.coords)}}

    def files(self) -> dict[str, str]:
        return {}
