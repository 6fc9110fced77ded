"""CLIP vision backbone + semantic fusion as one trainable image encoder (backbone in the loop).

:class:`CLIPTokenEncoder` runs a Hugging Face ``CLIPVisionModel`` and returns all vision tokens
(CLS first) of the last layer, before ``post_layernorm`` and the final projection. GeoSURGE
fine-tunes only the last transformer block: :meth:`CLIPTokenEncoder.freeze` sets
``requires_grad=False`` on everything else, and the frozen prefix runs under ``torch.no_grad``
so its activations are not kept for backward (the memory of a training step is that of one
block plus the fusion module).

:func:`clip_pixels` is CLIP's preprocessing (shorter side to ``size`` bicubic, centre crop,
CLIP mean/std), the same geometry :func:`terraloc.models.fusion.prepare_maps` applies to maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from terraloc.models.fusion import FusionConfig, SemanticFusion, prepare_maps

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(
    images: Sequence[Image.Image],
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """CLIP preprocessing: ``(B, 3, size, size)`` float32 normalised pixels."""
    out = []
    for img in images:
        rgb = img.convert("RGB")
        scale = size / min(rgb.width, rgb.height)
        w, h = max(size, round(rgb.width * scale)), max(size, round(rgb.height * scale))
        rgb = rgb.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        arr = np.asarray(rgb.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        out.append((arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
    return torch.from_numpy(np.stack(out).transpose(0, 3, 1, 2).copy())


def _vision_model(model: nn.Module) -> nn.Module:
    """The ``CLIPVisionModel`` inside a CLIPModel / CLIPVisionModelWithProjection, or the model itself."""
    for _ in range(3):
        if hasattr(model, "embeddings") and hasattr(model, "encoder"):
            return model
        inner = getattr(model, "vision_model", None)
        if inner is None:
            break
        model = inner
    raise TypeError(f"{type(model).__name__} is not a Hugging Face CLIP vision model")


class CLIPTokenEncoder(nn.Module):
    """Pixels ``(B, 3, S, S)`` -> vision tokens ``(B, 1 + (S/p)^2, W)``, CLS first.

    Args:
        model: a ``CLIPVisionModel``, ``CLIPVisionModelWithProjection`` or ``CLIPModel``.
        trainable_blocks: how many of the last transformer blocks are trained (GeoSURGE: 1).
    """

    def __init__(self, model: nn.Module, trainable_blocks: int = 1) -> None:
        super().__init__()
        self.vision: Any = _vision_model(model)
        cfg: Any = self.vision.config
        self.width = int(cfg.hidden_size)
        self.image_size = int(cfg.image_size)
        self.patch_size = int(cfg.patch_size)
        self.freeze(trainable_blocks)

    @property
    def layers(self) -> nn.ModuleList:
        return self.vision.encoder.layers  # type: ignore[no-any-return]

    def freeze(self, trainable_blocks: int = 1) -> None:
        """Train only the last ``trainable_blocks`` blocks; embeddings, pre-LN and earlier blocks are frozen."""
        n = len(self.layers)
        self.trainable_blocks = max(0, min(int(trainable_blocks), n))
        for p in self.vision.parameters():
            p.requires_grad_(False)
        for layer in list(self.layers)[n - self.trainable_blocks :]:
            for p in layer.parameters():
                p.requires_grad_(True)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, T, W)`` last-layer tokens (no post-LN, no projection)."""
        n_frozen = len(self.layers) - self.trainable_blocks
        with torch.no_grad():  # embeddings, pre-LN and the frozen blocks: no activations kept
            h = self.vision.pre_layrnorm(self.vision.embeddings(pixel_values))
            for layer in list(self.layers)[:n_frozen]:
                h = _layer(layer, h)
        for layer in list(self.layers)[n_frozen:]:
            h = _layer(layer, h)
        return h


def _layer(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    out = layer(h, None)
    return out[0] if isinstance(out, tuple) else out


class FusedImageEncoder(nn.Module):
    """Photo + segmentation map -> GeoSURGE visual feature ``(B, out_dim)``, trainable end to end.

    Args:
        clip: a Hugging Face CLIP (vision) model, or a terraloc ``CLIPBackbone`` (has ``vision_model``).
        fusion: fusion configuration (``clip_dim`` and ``map_size`` are taken from the backbone).
        trainable_blocks: CLIP blocks trained (GeoSURGE: the last one).
        preprocess: object with ``.batch(images) -> (B,3,crop,crop)``, ``.size`` and ``.crop``
            (terraloc's ``Preprocess``); default: :func:`clip_pixels` at the model's image size.
    """

    def __init__(
        self,
        clip: nn.Module,
        fusion: FusionConfig | None = None,
        trainable_blocks: int = 1,
        preprocess: Any = None,
    ) -> None:
        super().__init__()
        if preprocess is None and hasattr(clip, "preprocess") and hasattr(clip, "vision_model"):
            preprocess = clip.preprocess
        #: id and weights hash of the frozen backbone (terraloc backbones carry them).
        self.backbone_info = {
            "id": str(getattr(clip, "model_id", "") or getattr(getattr(clip, "config", None), "_name_or_path", "")),
            "hash": str(getattr(clip, "weights_hash", "")),
        }
        self.backbone = CLIPTokenEncoder(clip, trainable_blocks)
        self.preprocess = preprocess
        self.size = int(getattr(preprocess, "size", self.backbone.image_size))
        self.crop = int(getattr(preprocess, "crop", self.backbone.image_size))
        cfg = fusion or FusionConfig()
        cfg = FusionConfig(**{**cfg.to_json(), "clip_dim": self.backbone.width, "map_size": self.crop})
        self.fusion = SemanticFusion(cfg)

    def forward(self, pixel_values: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` ``(B, 3, S, S)``, ``seg`` ``(B, S, S)`` ids -> ``(B, out_dim)``."""
        return self.fusion(seg, self.backbone(pixel_values))  # type: ignore[no-any-return]

    def prepare(self, images: Sequence[Image.Image], maps: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Photos and their full-size maps -> ``(pixels (B,3,S,S), maps (B,S,S))`` with the same crop."""
        pixels = self.preprocess.batch(list(images)) if self.preprocess is not None else clip_pixels(images, self.crop)
        return pixels, prepare_maps(maps, self.size, self.crop)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def describe(self) -> dict[str, Any]:
        """Parameter counts (total / trainable) of the backbone and the fusion module."""

        def count(m: nn.Module, trainable: bool) -> int:
            return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)

        return {
            "backbone_params": count(self.backbone, False),
            "backbone_trainable": count(self.backbone, True),
            "fusion_params": count(self.fusion, False),
            "fusion": self.fusion.cfg.to_json(),
        }


FUSION_CHECKPOINT_FORMAT = "terraloc-fusion-v1"


def save_fused_checkpoint(path: str | Path, encoder: FusedImageEncoder, extra: dict[str, Any] | None = None) -> None:
    """Save the fusion module and the trained CLIP blocks (not the frozen backbone) atomically.

    The file is a ``torch.save`` dict readable with ``weights_only=True``: ``format``, ``config``
    (fusion JSON), ``trainable_blocks``, ``backbone`` (id and weights hash of the frozen part),
    ``fusion`` (state dict) and ``backbone_trained`` (state dict of the trained blocks).
    """
    import json

    from terraloc.io import atomic_write

    vis = encoder.backbone
    trained = {n: p.detach().cpu() for n, p in vis.named_parameters() if p.requires_grad}
    payload = {
        "format": FUSION_CHECKPOINT_FORMAT,
        "config": json.dumps(encoder.fusion.cfg.to_json()),
        "trainable_blocks": vis.trainable_blocks,
        "backbone": json.dumps(encoder.backbone_info),
        "fusion": {k: v.detach().cpu() for k, v in encoder.fusion.state_dict().items()},
        "backbone_trained": trained,
        **(extra or {}),
    }
    with atomic_write(path, "wb") as fh:
        torch.save(payload, fh)


def load_fused_checkpoint(path: str | Path, clip: nn.Module) -> tuple[FusedImageEncoder, dict[str, Any]]:
    """Rebuild a :class:`FusedImageEncoder` on ``clip`` from :func:`save_fused_checkpoint` output.

    Raises:
        MissingResourceError: no such file.
        InputError: not a fusion checkpoint, or its weights do not fit the backbone / configuration.
    """
    import json

    from terraloc.errors import InputError
    from terraloc.io import read_checkpoint

    payload = read_checkpoint(
        path, FUSION_CHECKPOINT_FORMAT, "terraloc fusion checkpoint", "train one with `terraloc fusion train`"
    )
    cfg = FusionConfig(**json.loads(payload["config"]))
    enc = FusedImageEncoder(clip, cfg, trainable_blocks=int(payload["trainable_blocks"]))
    if enc.fusion.cfg != cfg:
        raise InputError(
            f"checkpoint expects CLIP width {cfg.clip_dim} and crop {cfg.map_size}, the backbone has "
            f"{enc.fusion.cfg.clip_dim} and {enc.fusion.cfg.map_size}",
            path=path,
        )
    try:
        enc.fusion.load_state_dict(payload["fusion"], strict=True)
        missing = enc.backbone.load_state_dict(payload["backbone_trained"], strict=False)
    except RuntimeError as exc:
        raise InputError(f"weights do not match ({str(exc).splitlines()[0]})", path=path) from None
    if missing.unexpected_keys:
        raise InputError(f"unexpected backbone weights {missing.unexpected_keys[:3]}", path=path)
    return enc.eval(), payload


def make_clip(spec: str, seed: int = 0) -> Any:
    r"""A CLIP vision model for fusion from a spec; random ones are seeded with ``seed``.

    ``tiny`` / ``vit-l-14`` / ``vit-l-14-336`` (optionally ``random:``-prefixed) are Hugging Face
    ``CLIPVisionModel``\ s with random weights; anything else goes to
    :func:`terraloc.encoders.image.load_backbone` and must be a CLIP backbone.

    Raises:
        InputError: the backbone is not a CLIP model.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from terraloc.errors import InputError

    low = spec.lower().removeprefix("random:")
    torch.manual_seed(seed)
    if low == "tiny":
        cfg = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=2,
            patch_size=32,
            image_size=224,
        )
        return CLIPVisionModel(cfg).eval()
    if low in ("vit-l-14-336", "vit-l/14-336", "vit-l-14"):
        from terraloc.encoders.image.backbones import vit_l14_config

        return CLIPVisionModel(vit_l14_config(224 if low == "vit-l-14" else 336)).eval()
    from terraloc.encoders.image import load_backbone

    bb = load_backbone(spec)
    if not hasattr(bb, "vision_model"):
        raise InputError(f"backbone {spec!r} is not a CLIP model (fusion needs CLIP vision tokens)", field="--backbone")
    return bb
