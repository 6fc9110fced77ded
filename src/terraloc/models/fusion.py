"""Semantic fusion (GeoSURGE): ADE20K segmentation tokens fused into CLIP vision tokens.

The segmentation map (ADE20K ids, aligned with the CLIP input crop) is cut into ``P x P``
patches (``P = 14``); each patch is linearly projected to a ``D = 128``-d token (a linear map of
the patch's one-hot class vector, computed as an embedding bag), a CLS token and learned
positional embeddings are added. ``N = 3`` fusion blocks follow; in each, the semantic tokens
are the queries and the CLIP vision tokens (CLS + patches, width ``C = 1024`` for ViT-L/14,
before the final projection) are keys and values in a *latent* multi-head cross-attention:
keys and values are computed from a shared low-rank latent ``c = W_down x`` of width
``L = 64`` (``k = W_k c``, ``v = W_v c``), so only ``(T, L)`` per image needs storing. An MLP
follows; residuals and layer norms (pre-norm, as in CLIP) wrap both. The fused CLS token goes
through a layer norm and a linear map to the 768-d visual feature.

Where the description is silent (see docs/fusion.md): each block also has self-attention among
the semantic tokens (without it the CLS query never sees the map); unknown ids and
``255`` share one extra "unlabelled" class; the 0-block ablation is the CLIP CLS token through
the same LayerNorm + Linear head; optional *ignore classes* (e.g. people, vehicles) mask the
CLIP patches and semantic patches they cover from being attended to.

Shapes: ``B`` images, ``S x S`` map pixels, ``G = S / P`` patches per side, ``T`` CLIP tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from terraloc.encoders.segmentation.classes import IGNORE_ID, NUM_CLASSES
from terraloc.errors import InputError

#: Embedding row of "unlabelled" (255, and any id outside 0..149).
UNLABELLED_ROW = NUM_CLASSES


@dataclass
class FusionConfig:
    """Hyper-parameters of :class:`SemanticFusion` (defaults: GeoSURGE with CLIP ViT-L/14-336).

    Attributes:
        num_blocks: fusion blocks in series (0 = no fusion: CLIP CLS -> LayerNorm -> Linear).
        token_dim: width of the semantic tokens (D).
        latent_dim: width of the shared key/value latent (L).
        num_heads: attention heads (``token_dim`` must be divisible by it).
        mlp_ratio: hidden width of the block MLP relative to ``token_dim``.
        patch_size: semantic patch side in map pixels (P).
        map_size: side of the (square) map fed to the module, in pixels (S; the CLIP crop size).
        clip_dim: width of the CLIP vision tokens (C).
        out_dim: width of the output visual feature.
        self_attention: self-attention among semantic tokens in each block.
        ignore_classes: ADE20K ids whose regions are masked from attention (empty = none).
        ignore_threshold: a patch is masked when more than this fraction of its pixels is ignored.
        dropout: dropout in attention outputs and MLPs.
    """

    num_blocks: int = 3
    token_dim: int = 128
    latent_dim: int = 64
    num_heads: int = 4
    mlp_ratio: float = 4.0
    patch_size: int = 14
    map_size: int = 336
    clip_dim: int = 1024
    out_dim: int = 768
    self_attention: bool = True
    ignore_classes: tuple[int, ...] = field(default_factory=tuple)
    ignore_threshold: float = 0.5
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.ignore_classes = tuple(int(c) for c in self.ignore_classes)
        problems = []
        if self.num_blocks < 0:
            problems.append("num_blocks must be >= 0")
        if self.token_dim % self.num_heads:
            problems.append(f"token_dim {self.token_dim} is not divisible by num_heads {self.num_heads}")
        if self.map_size % self.patch_size:
            problems.append(f"map_size {self.map_size} is not a multiple of patch_size {self.patch_size}")
        if min(self.token_dim, self.latent_dim, self.patch_size, self.clip_dim, self.out_dim) < 1:
            problems.append("dimensions must be positive")
        if any(not 0 <= c < NUM_CLASSES for c in self.ignore_classes):
            problems.append("ignore_classes must be ADE20K ids 0..149")
        if not 0.0 <= self.ignore_threshold < 1.0:
            problems.append("ignore_threshold must be in [0, 1)")
        if problems:
            raise InputError("; ".join(problems), field="fusion config")

    @property
    def grid(self) -> int:
        """Semantic patches per side (G)."""
        return self.map_size // self.patch_size

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (stored in checkpoints)."""
        d = asdict(self)
        d["ignore_classes"] = list(self.ignore_classes)
        return d


def sanitize_ids(seg: torch.Tensor) -> torch.Tensor:
    """Map ids outside 0..149 (255 and unknown ones) to :data:`UNLABELLED_ROW`; returns int64."""
    seg = seg.long()
    return torch.where((seg >= 0) & (seg < NUM_CLASSES), seg, torch.full_like(seg, UNLABELLED_ROW))


def ignore_fraction(seg: torch.Tensor, classes: Sequence[int], grid: int) -> torch.Tensor:
    """Fraction of each grid cell's pixels whose class is in ``classes``.

    Args:
        seg: ``(B, S, S)`` integer map.
        classes: ids to count.
        grid: cells per side (``S`` need not be a multiple: adaptive pooling).

    Returns:
        ``(B, grid * grid)`` float tensor in ``[0, 1]``, row-major.
    """
    ind = torch.zeros_like(seg, dtype=torch.float32)
    for c in classes:
        ind = ind + (seg == c).float()
    return F.adaptive_avg_pool2d(ind[:, None], grid).flatten(1)


class SemanticTokenizer(nn.Module):
    """Segmentation map -> ``(B, 1 + G*G, D)`` tokens (CLS first) with positional embeddings.

    A patch's token is ``W vec(onehot(patch)) + b`` with ``W`` of shape ``(D, (150+1) * P * P)``
    — the ViT patch embedding applied to one-hot class channels — computed as a sum of
    embedding rows (:class:`torch.nn.EmbeddingBag`) without materialising the one-hot tensor.
    """

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p2 = cfg.patch_size**2
        self.proj = nn.EmbeddingBag((NUM_CLASSES + 1) * p2, cfg.token_dim, mode="sum")
        nn.init.normal_(self.proj.weight, std=0.02 / math.sqrt(p2))
        self.bias = nn.Parameter(torch.zeros(cfg.token_dim))
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.token_dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1 + cfg.grid**2, cfg.token_dim) * 0.02)
        self.register_buffer("offsets", torch.arange(p2, dtype=torch.long), persistent=False)

    def forward(self, seg: torch.Tensor) -> torch.Tensor:
        """``seg`` ``(B, S, S)`` ids -> ``(B, 1 + G*G, D)`` tokens."""
        cfg = self.cfg
        if seg.ndim != 3 or seg.shape[1:] != (cfg.map_size, cfg.map_size):
            raise InputError(
                f"segmentation maps must be (B, {cfg.map_size}, {cfg.map_size}), got {tuple(seg.shape)}",
                field="seg",
            )
        B, P, G = seg.shape[0], cfg.patch_size, cfg.grid
        ids = sanitize_ids(seg).reshape(B, G, P, G, P).permute(0, 1, 3, 2, 4).reshape(B * G * G, P * P)
        offsets: torch.Tensor = self.offsets  # type: ignore[assignment]
        tokens = self.proj(ids * (P * P) + offsets) + self.bias  # (B*G*G, D)
        tokens = tokens.reshape(B, G * G, -1)
        return torch.cat([self.cls.expand(B, -1, -1), tokens], dim=1) + self.pos


class LatentCrossAttention(nn.Module):
    """Multi-head cross-attention whose keys and values come from a shared low-rank latent.

    ``c = W_down(x)`` ``(B, T, L)``; ``k = W_k c``, ``v = W_v c`` ``(B, T, H*dh)``; queries from
    the semantic tokens. Memory per image for K/V is ``T * L`` instead of ``2 * T * D``, and
    ``W_k`` can be absorbed into the query projection at inference (not done here).
    """

    def __init__(self, query_dim: int, kv_dim: int, latent_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.h, self.dh = num_heads, query_dim // num_heads
        self.q = nn.Linear(query_dim, query_dim)
        self.down = nn.Linear(kv_dim, latent_dim)
        self.k_up = nn.Linear(latent_dim, query_dim)
        self.v_up = nn.Linear(latent_dim, query_dim)
        self.out = nn.Linear(query_dim, query_dim)
        self.dropout = dropout

    def forward(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend.

        Args:
            q: ``(B, Nq, D)`` queries.
            kv: ``(B, T, C)`` key/value tokens.
            key_mask: ``(B, T)`` bool, True = may be attended to (every row needs one True).
            need_weights: also return the ``(B, H, Nq, T)`` attention weights.

        Returns:
            ``((B, Nq, D) output, weights or None)``.
        """
        B, Nq, _ = q.shape
        T = kv.shape[1]
        latent = self.down(kv)  # (B, T, L)
        k = self.k_up(latent).view(B, T, self.h, self.dh).transpose(1, 2)
        v = self.v_up(latent).view(B, T, self.h, self.dh).transpose(1, 2)
        qh = self.q(q).view(B, Nq, self.h, self.dh).transpose(1, 2)
        mask = None if key_mask is None else key_mask[:, None, None, :].to(torch.bool)
        weights = None
        if need_weights:
            scores = qh @ k.transpose(-1, -2) / math.sqrt(self.dh)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(-1)
            attn = F.dropout(weights, self.dropout, self.training) @ v
        else:
            attn = F.scaled_dot_product_attention(
                qh, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
        return self.out(attn.transpose(1, 2).reshape(B, Nq, -1)), weights


class FusionBlock(nn.Module):
    """Pre-norm block: [self-attention over semantic tokens] + latent cross-attention to CLIP + MLP."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        d = cfg.token_dim
        self.self_attn: nn.MultiheadAttention | None = None
        if cfg.self_attention:
            self.ln_self = nn.LayerNorm(d)
            self.self_attn = nn.MultiheadAttention(d, cfg.num_heads, dropout=cfg.dropout, batch_first=True)
        self.ln_q = nn.LayerNorm(d)
        self.ln_kv = nn.LayerNorm(cfg.clip_dim)
        self.cross = LatentCrossAttention(d, cfg.clip_dim, cfg.latent_dim, cfg.num_heads, cfg.dropout)
        self.ln_mlp = nn.LayerNorm(d)
        hidden = max(1, round(d * cfg.mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, d))

    def forward(
        self,
        x: torch.Tensor,
        clip_tokens: torch.Tensor,
        clip_mask: torch.Tensor | None = None,
        sem_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` ``(B, N, D)`` semantic tokens, ``clip_tokens`` ``(B, T, C)``; masks True = attendable."""
        if self.self_attn is not None:
            h = self.ln_self(x)
            pad = None if sem_mask is None else ~sem_mask
            x = x + self.self_attn(h, h, h, key_padding_mask=pad, need_weights=False)[0]
        x = x + self.cross(self.ln_q(x), self.ln_kv(clip_tokens), clip_mask)[0]
        return x + self.mlp(self.ln_mlp(x))


class SemanticFusion(nn.Module):
    """GeoSURGE semantic fusion: ``(seg (B,S,S), CLIP tokens (B,T,C)) -> (B, out_dim)`` visual feature."""

    def __init__(self, cfg: FusionConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = cfg or FusionConfig(**overrides)
        self.cfg = cfg
        if cfg.num_blocks > 0:
            self.tokenizer: SemanticTokenizer | None = SemanticTokenizer(cfg)
            self.blocks = nn.ModuleList(FusionBlock(cfg) for _ in range(cfg.num_blocks))
            self.ln_out = nn.LayerNorm(cfg.token_dim)
            self.proj = nn.Linear(cfg.token_dim, cfg.out_dim)
        else:  # ablation: no semantic tokens; the CLIP CLS token gets the same kind of head
            self.tokenizer = None
            self.blocks = nn.ModuleList()
            self.ln_out = nn.LayerNorm(cfg.clip_dim)
            self.proj = nn.Linear(cfg.clip_dim, cfg.out_dim)

    def masks(
        self, seg: torch.Tensor, n_clip_tokens: int, clip_padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Attention masks (True = attendable) from ignore classes and padding.

        Args:
            seg: ``(B, S, S)`` ids.
            n_clip_tokens: T (1 CLS + a square grid of patches).
            clip_padding_mask: ``(B, T)`` bool, False for padding tokens.

        Returns:
            ``(clip_mask (B, T) | None, sem_mask (B, 1 + G*G) | None)``; CLS tokens are never masked.
        """
        cfg = self.cfg
        clip_mask = None if clip_padding_mask is None else clip_padding_mask.to(torch.bool).clone()
        sem_mask = None
        if cfg.ignore_classes:
            g = math.isqrt(n_clip_tokens - 1)
            if g * g == n_clip_tokens - 1 and g > 0:
                frac = ignore_fraction(seg, cfg.ignore_classes, g)
                keep = torch.cat([torch.ones_like(frac[:, :1], dtype=torch.bool), frac <= cfg.ignore_threshold], 1)
                clip_mask = keep if clip_mask is None else clip_mask & keep
            sfrac = ignore_fraction(seg, cfg.ignore_classes, cfg.grid)
            sem_mask = torch.cat([torch.ones_like(sfrac[:, :1], dtype=torch.bool), sfrac <= cfg.ignore_threshold], 1)
        if clip_mask is not None:
            clip_mask[:, 0] = True
        return clip_mask, sem_mask

    def forward(
        self,
        seg: torch.Tensor,
        clip_tokens: torch.Tensor,
        clip_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fuse.

        Args:
            seg: ``(B, S, S)`` integer ADE20K ids (255 / unknown = unlabelled), ``S = cfg.map_size``.
            clip_tokens: ``(B, T, C)`` CLIP vision tokens, CLS first, before the final projection.
            clip_padding_mask: optional ``(B, T)`` bool, False marks padding tokens.

        Returns:
            ``(B, out_dim)`` visual feature (not normalised).
        """
        if clip_tokens.ndim != 3 or clip_tokens.shape[-1] != self.cfg.clip_dim:
            raise InputError(
                f"CLIP tokens must be (B, T, {self.cfg.clip_dim}), got {tuple(clip_tokens.shape)}", field="tokens"
            )
        if self.tokenizer is None:
            return self.proj(self.ln_out(clip_tokens[:, 0]))
        if seg.shape[0] != clip_tokens.shape[0]:
            raise InputError(f"{seg.shape[0]} maps for {clip_tokens.shape[0]} images", field="seg")
        clip_mask, sem_mask = self.masks(seg, clip_tokens.shape[1], clip_padding_mask)
        x = self.tokenizer(seg)
        for block in self.blocks:
            x = block(x, clip_tokens, clip_mask, sem_mask)
        return self.proj(self.ln_out(x[:, 0]))


def prepare_maps(maps: Sequence[np.ndarray], size: int, crop: int | None = None) -> torch.Tensor:
    """Align maps with a CLIP crop and stack them.

    Each ``(H, W)`` map (the photo's size) is resized by nearest neighbour so its shorter side is
    ``size`` and centre-cropped to ``crop x crop`` — the geometry of CLIP's image processor
    (:func:`~terraloc.encoders.segmentation.base.center_crop_like_clip`). Unknown ids become 255.

    Returns:
        ``(B, crop, crop)`` int64 tensor of ids (``crop`` defaults to ``size``).
    """
    from terraloc.encoders.segmentation.base import center_crop_like_clip
    from terraloc.encoders.segmentation.classes import validate_map

    crop = size if crop is None else crop
    out = [center_crop_like_clip(validate_map(m, sanitize=True), size, crop) for m in maps]
    if not out:
        return torch.zeros((0, crop, crop), dtype=torch.long)
    return torch.from_numpy(np.stack(out).astype(np.int64))


__all__ = [
    "IGNORE_ID",
    "FusionBlock",
    "FusionConfig",
    "LatentCrossAttention",
    "SemanticFusion",
    "SemanticTokenizer",
    "ignore_fraction",
    "prepare_maps",
    "sanitize_ids",
]
