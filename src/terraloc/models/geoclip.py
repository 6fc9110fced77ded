"""GeoCLIP as a head on any image backbone.

``image (N, 3, H, W)`` → backbone features ``(N, 768)`` → GeoCLIP image MLP 768→768→512 →
L2-normalise → cosine similarity with the L2-normalised location embeddings of the GPS gallery
``(G, 512)`` → ``exp(logit_scale) ·`` similarity → softmax over the gallery → top-k.

With ``openai/clip-vit-large-patch14`` and the pretrained MLP / logit scale / 100K gallery from the
``geoclip`` wheel this is GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023); it reproduces the
reference ``GeoCLIP.predict`` (float32 throughout, same operation order).
"""

from __future__ import annotations

import json
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

#: ``format`` of the checkpoints ``terraloc train geoclip`` writes (``best.pt`` / ``last.pt``).
CHECKPOINT_FORMAT = "terraloc-geoclip-train-v1"


def geoclip_image_mlp(in_dim: int = 768) -> nn.Sequential:
    """GeoCLIP's image MLP ``in_dim → 768 → ReLU → 512``, the one definition used for training and prediction.

    Its state-dict keys (``0.weight``, ``0.bias``, ``2.weight``, ``2.bias``) are those of the
    pretrained ``image_encoder_mlp_weights.pth`` in the ``geoclip`` wheel.
    """
    return nn.Sequential(nn.Linear(in_dim, 768), nn.ReLU(), nn.Linear(768, 512))


def load_pretrained_image_mlp(mlp: nn.Module) -> str:
    """Load GeoCLIP's published image-MLP weights into ``mlp`` (768-d input); returns their file hash."""
    from terraloc.encoders.geoclip_assets import file_sha256, geoclip_asset

    path = geoclip_asset("image_mlp")
    mlp.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return file_sha256(path)


def pretrained_logit_scale() -> Tensor:
    """GeoCLIP's published logit scale (a scalar; ``exp`` of it multiplies the cosines)."""
    from terraloc.encoders.geoclip_assets import geoclip_asset

    scale = torch.load(geoclip_asset("logit_scale"), map_location="cpu", weights_only=True)
    return torch.as_tensor(scale, dtype=torch.float32).reshape([])


class GeoClipModel(nn.Module):
    """GeoCLIP's trainable parts: image MLP (:func:`geoclip_image_mlp`), location encoder, logit scale.

    State-dict keys: ``mlp.*`` (as :class:`GeoCLIPHead`'s), ``location.*``, ``logit_scale``.

    Args:
        input_dim: backbone embedding width ``D_in``.
        pretrained: start from GeoCLIP's published weights (needs ``input_dim == 768``).
    """

    def __init__(self, input_dim: int = 768, pretrained: bool = False) -> None:
        super().__init__()
        from terraloc.encoders.location import LocationEncoder

        self.input_dim = input_dim
        self.mlp = geoclip_image_mlp(input_dim)
        self.location = LocationEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        if pretrained:
            self.load_pretrained()

    def load_pretrained(self) -> None:
        """Initialise from GeoCLIP's published weights (image MLP needs ``input_dim == 768``)."""
        from terraloc.encoders.location import load_location_encoder

        if self.input_dim != 768:
            raise InputError(f"GeoCLIP's pretrained image MLP takes 768-d inputs, shards have {self.input_dim}")
        load_pretrained_image_mlp(self.mlp)
        self.location.load_state_dict(load_location_encoder("geoclip").state_dict())
        with torch.no_grad():
            self.logit_scale.copy_(pretrained_logit_scale())

    def image_features(self, x: Tensor) -> Tensor:
        """``(N, D_in)`` → ``(N, 512)`` L2-normalised image features."""
        return nn.functional.normalize(self.mlp(x), dim=-1)

    def gps_features(self, latlon: Tensor) -> Tensor:
        """``(N, 2)`` degrees → ``(N, 512)`` L2-normalised location features."""
        return nn.functional.normalize(self.location(latlon), dim=-1)


def upgrade_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Rename the ``image_mlp.*`` keys of checkpoints written before :class:`GeoClipModel` used ``mlp.*``."""
    return {("mlp." + k[len("image_mlp.") :] if k.startswith("image_mlp.") else k): v for k, v in state.items()}


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
        self.mlp = geoclip_image_mlp(in_dim)
        self.logit_scale = nn.Parameter(torch.ones([]) * float(np.log(1 / 0.07)), requires_grad=False)
        self.register_buffer("coords", torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float32)))
        self.register_buffer("gallery", torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32)))
        self.weights_hash = ""
        #: the trained checkpoint this head was loaded from (``None``: GeoCLIP's published weights)
        self.checkpoint: Path | None = None
        #: ``{"id", "hash", "dim"}`` of the backbone the checkpoint was trained on (``None``: GeoCLIP's
        #: published head, which takes any CLIP ViT-L/14-family backbone, or an unrecorded checkpoint)
        self.required_backbone: dict[str, Any] | None = None

    @classmethod
    def pretrained(
        cls, coords: NDArray[np.float32] | None = None, gallery: NDArray[np.float32] | None = None
    ) -> GeoCLIPHead:
        """The pretrained GeoCLIP head (MLP + logit scale from the wheel) over a gallery.

        Args:
            coords, gallery: ``(G, 2)`` degrees and ``(G, 512)`` normalised embeddings; default
                GeoCLIP's 100K gallery. ``(0, 2)`` / ``(0, 512)`` for a head that searches an index.
        """
        if coords is None or gallery is None:
            coords, gallery, _ = geoclip_gallery_embeddings()
        head = cls(coords, gallery)
        head.weights_hash = load_pretrained_image_mlp(head.mlp)
        head.logit_scale = nn.Parameter(pretrained_logit_scale(), requires_grad=False)
        return head.eval()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        coords: NDArray[np.float32] | None = None,
        gallery: NDArray[np.float32] | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> GeoCLIPHead:
        """The head trained by ``terraloc train geoclip`` (``best.pt`` / ``last.pt``) over a gallery.

        Args:
            path: the training checkpoint.
            coords, gallery: ``(G, 2)`` degrees and ``(G, 512)`` normalised embeddings made with the
                checkpoint's location encoder (:func:`trained_location_encoder`); default GeoCLIP's
                100K gallery embedded with it: when it equals GeoCLIP's published encoder
                (``--pretrained --freeze-location``) the cached default gallery is reused, otherwise
                it is embedded once (about a minute on two cores; ``progress(done, total)``) and
                cached under ``TERRALOC_HOME/galleries/`` by the encoder's weight hash.

        Raises:
            MissingResourceError: no such file.
            InputError: not a GeoCLIP training checkpoint, or its weights do not fit.
        """
        from terraloc.encoders.geoclip_assets import file_sha256
        from terraloc.models.provenance import backbone_record
        from terraloc.search.gallery import default_gallery

        model, payload = load_geoclip_checkpoint(path)
        if coords is None or gallery is None:
            gal = default_gallery(_gallery_encoder(model.location), dtype="float32", progress=progress)
            coords, gallery = np.asarray(gal.coords, dtype=np.float32), np.array(gal.embeddings, dtype=np.float32)
        head = cls(coords, gallery, model.input_dim)
        head.mlp.load_state_dict(model.mlp.state_dict())
        head.logit_scale = nn.Parameter(model.logit_scale.detach().clone().reshape([]), requires_grad=False)
        head.weights_hash = file_sha256(path)
        head.checkpoint = Path(path)
        head.required_backbone = backbone_record(payload.get("backbone"))
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
        from terraloc.models.head import check_backbone

        check_backbone(head.required_backbone, backbone, what="the GeoCLIP checkpoint", source=str(head.checkpoint))
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


def load_geoclip_checkpoint(path: str | Path) -> tuple[GeoClipModel, dict[str, Any]]:
    """``(model, raw payload)`` of a ``terraloc train geoclip`` checkpoint (float32, eval mode).

    Raises:
        MissingResourceError: no such file.
        InputError: not a GeoCLIP training checkpoint, or its weights do not fit.
    """
    from terraloc.io import read_checkpoint

    payload = read_checkpoint(path, CHECKPOINT_FORMAT, "GeoCLIP checkpoint", "train one with `terraloc train geoclip`")
    try:
        model = GeoClipModel(int(json.loads(payload["identity"])["input_dim"]))
        model.load_state_dict(upgrade_state_dict(payload["model"]), strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"weights do not match a GeoCLIP model ({msg})", path=path) from None
    return model.float().eval(), payload


def trained_location_encoder(path: str | Path) -> Any:
    """The location encoder of a ``terraloc train geoclip`` checkpoint, to embed galleries with.

    GeoCLIP's published encoder (same id and hash, so its cached galleries are reused) when the
    checkpoint's equals it, else the trained one with ``encoder_id`` ``geoclip-location-trained``
    and a hash of its weights.
    """
    model, _ = load_geoclip_checkpoint(path)
    return _gallery_encoder(model.location)


def _gallery_encoder(location: nn.Module) -> Any:
    """The location encoder to embed a gallery with: GeoCLIP's published one when ``location`` equals it
    (so its cached gallery is reused), else ``location`` with an id and a hash of its weights."""
    import hashlib

    from terraloc.encoders.location import load_location_encoder

    published = load_location_encoder("geoclip")
    mine, theirs = location.state_dict(), published.state_dict()
    if mine.keys() == theirs.keys() and all(torch.equal(mine[k].float(), theirs[k].float()) for k in mine):
        return published
    h = hashlib.sha256()
    for k in sorted(mine):
        h.update(k.encode())
        h.update(mine[k].detach().float().contiguous().numpy().tobytes())
    location.encoder_id = "geoclip-location-trained"  # type: ignore[assignment]
    location.weights_hash = h.hexdigest()[:16]  # type: ignore[assignment]
    return location.eval()


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


def resolve_gallery(spec: str, progress: Progress | None = None, encoder: Any = None) -> Gallery:
    """``geoclip-100k`` (GeoCLIP's MP-16 gallery, embedded once into ``TERRALOC_HOME``) or a gallery
    folder made by ``terraloc gallery build`` (refused when built with another location encoder).

    ``encoder``: the location encoder the gallery must be embedded with (default GeoCLIP's; a trained
    checkpoint's comes from :func:`trained_location_encoder`).
    """
    from terraloc.encoders import load_location_encoder
    from terraloc.search.gallery import Gallery, default_gallery

    enc = encoder if encoder is not None else load_location_encoder("geoclip")
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

    With ``checkpoint`` (``terraloc train geoclip``'s ``best.pt``) the trained image MLP and logit
    scale replace the published ones, the gallery must be embedded with the checkpoint's location
    encoder (:func:`trained_location_encoder`; :meth:`from_config` does it), and the backbone the
    training embeddings came from is required (``required_backbone``).
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
        checkpoint: str | Path | None = None,
    ) -> None:
        from terraloc.search.spec import parse_index_spec

        self.checkpoint = Path(checkpoint) if checkpoint is not None else None

        def make_head(coords: NDArray[np.float32], emb: NDArray[np.float32]) -> GeoCLIPHead:
            if self.checkpoint is None:
                return GeoCLIPHead.pretrained(coords, emb)
            return GeoCLIPHead.from_checkpoint(self.checkpoint, coords, emb)

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
                self.head = make_head(*empty)
            else:  # an owned float32 copy (the file is memory-mapped read-only)
                emb = np.array(gallery.embeddings, dtype=np.float32)
                self.head = make_head(coords.astype(np.float32), emb)
        else:
            self.head = make_head(*empty)
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
        self.required_backbone = self.head.required_backbone

    @classmethod
    def from_config(cls, config: Any, backbone: Any, *, progress: Progress | None = None) -> GeoCLIPGalleryHead:
        checkpoint = getattr(config, "checkpoint", None)
        encoder = trained_location_encoder(checkpoint) if checkpoint else None
        gallery = resolve_gallery(config.gallery, progress, encoder)
        return cls(gallery, config.index, config.shortlist, config.gallery, progress, checkpoint)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "geoclip_head_hash": self.head.weights_hash,
            "gallery": self.gallery_name,
            "gallery_size": len(self.gallery),
            "index": self.index_spec,
        }
        if self.checkpoint is not None:
            info["checkpoint"] = str(self.checkpoint)
        if self._index is not None:
            info["shortlist"] = self.shortlist
        return info

    def files(self) -> dict[str, str]:
        from terraloc.encoders.geoclip_assets import geoclip_asset
        from terraloc.search.gallery import MANIFEST

        gallery = str(self.gallery.path / MANIFEST)
        if self.checkpoint is not None:
            return {"checkpoint": str(self.checkpoint), "gallery": gallery}
        return {
            "image_mlp": str(geoclip_asset("image_mlp")),
            "logit_scale": str(geoclip_asset("logit_scale")),
            "gallery": gallery,
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
