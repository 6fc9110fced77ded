"""Training the fused visual encoder from photos (backbone in the loop), and the fusion ablation.

The data path: photo -> (CLIP pixels, segmentation map with the same crop) -> CLIP tokens (all
blocks frozen but the last) -> semantic fusion -> 768-d feature -> a geocell head -> loss.
Segmentation maps come from a :class:`~terraloc.encoders.segmentation.SegmentationCache`, so
each photo is segmented once.

The head is any module mapping ``(B, 768)`` to ``(B, n_cells)`` logits. Without the GeoSURGE
hierarchy head this module uses :class:`GeocellClassifier` (one linear layer over geocells
labelled by nearest cell centre), which is enough to exercise and time the data path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from terraloc.models.fused_encoder import FusedImageEncoder


class GeocellClassifier(nn.Module):
    """``(B, D)`` feature -> ``(B, n_cells)`` logits, plus nearest-centre labels and decoding.

    Args:
        centres: ``(n_cells, 2)`` cell centres, degrees ``(lat, lon)``.
        dim: input feature width.
    """

    def __init__(self, centres: np.ndarray, dim: int = 768) -> None:
        super().__init__()
        self.register_buffer("centres", torch.as_tensor(np.asarray(centres, dtype=np.float64)))
        self.linear: nn.Linear = nn.Linear(dim, len(centres))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)  # type: ignore[no-any-return]

    def labels(self, latlon: np.ndarray) -> torch.Tensor:
        """Index of the nearest cell centre for each ``(lat, lon)`` row (great-circle distance)."""
        from terraloc.geo import to_unit_vectors

        a = to_unit_vectors(np.asarray(latlon, dtype=np.float64))
        centres: torch.Tensor = self.centres  # type: ignore[assignment]
        b = to_unit_vectors(centres.cpu().numpy())
        return torch.as_tensor((a @ b.T).argmax(1), dtype=torch.long)

    def decode(self, logits: torch.Tensor) -> np.ndarray:
        """``(B, n_cells)`` logits -> ``(B, 2)`` centre of the best cell, degrees."""
        centres: torch.Tensor = self.centres  # type: ignore[assignment]
        return centres[logits.argmax(1).cpu()].numpy()


def load_cell_centres(name: str = "cells_50_5000") -> np.ndarray:
    """``(n, 2)`` ``(latitude_mean, longitude_mean)`` of a shared GeoEstimation partition."""
    import pandas as pd

    from terraloc.config import shared_path

    path = shared_path("data", "geocells", f"{name}.csv")
    df = pd.read_csv(path, skiprows=2)
    return df[["latitude_mean", "longitude_mean"]].to_numpy(dtype=np.float64)


@dataclass
class StepStats:
    """One training step: seconds, loss, and peak resident memory above the pre-step level (MiB)."""

    seconds: float
    loss: float
    peak_rss_delta_mib: float
    peak_rss_mib: float


class PeakRSS:
    """Samples this process's resident set size in a thread; ``.peak`` in bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.start_rss = self._proc.memory_info().rss
        self.peak = self.start_rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def train_step(
    encoder: FusedImageEncoder,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    pixels: torch.Tensor,
    seg: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> StepStats:
    """One optimisation step on a batch (``pixels (B,3,S,S)``, ``seg (B,S,S)``, ``labels (B,)``).

    Inputs are moved to the encoder's device (CPU, or a GPU after ``encoder.to("cuda")``).
    The memory figures are host resident memory (not GPU memory).
    """
    dev = next(encoder.parameters()).device
    pixels, seg, labels = pixels.to(dev), seg.to(dev), labels.to(dev)
    encoder.train()
    head.train()
    loss_fn = loss_fn or nn.functional.cross_entropy
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(head(encoder(pixels, seg)), labels)
        loss.backward()
        optimizer.step()
        dt = time.perf_counter() - t0
    return StepStats(dt, float(loss.detach()), (mem.peak - mem.start_rss) / 2**20, mem.peak / 2**20)


def make_optimizer(encoder: FusedImageEncoder, head: nn.Module, lr: float = 1e-4) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (last CLIP block, fusion, head)."""
    params = encoder.trainable_parameters() + [p for p in head.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)


@dataclass
class PhotoSet:
    """Photos with ground truth: ``paths``, ``coords (N, 2)`` degrees and their maps (``(H, W)`` each)."""

    paths: list[Path]
    coords: np.ndarray
    maps: list[np.ndarray]


def load_photo_set(
    folder: str | Path | Sequence[str | Path],
    metadata: Path | None = None,
    segmenter_spec: str = "tflite",
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PhotoSet:
    """Photos with ground truth and their cached segmentation maps.

    ``folder`` is anything :func:`terraloc.inputs.read_photo_inputs` reads with coordinates; a
    folder holding a ``metadata.csv`` (``IMG_ID,LAT,LON``, the shared photo sets) is read through
    that manifest, and ``metadata`` names another manifest. Photos that fail to load are skipped.
    """
    from terraloc.encoders.segmentation import SegmentationCache, load_image, load_segmenter
    from terraloc.errors import TerralocError
    from terraloc.inputs import read_photo_inputs

    spec: str | Path | Sequence[str | Path] = folder
    if metadata is not None:
        spec = metadata
    elif isinstance(folder, str | Path) and Path(folder).is_dir() and (Path(folder) / "metadata.csv").is_file():
        spec = Path(folder) / "metadata.csv"
    inp = read_photo_inputs(spec, require_coords=True)
    assert inp.coords is not None
    n = len(inp.paths) if not limit else min(limit, len(inp.paths))
    cache = SegmentationCache(load_segmenter(segmenter_spec))
    paths, coords, maps = [], [], []
    for i in range(n):
        p = Path(inp.paths[i])
        try:
            maps.append(cache.get(p, load_image(p))[0])
            paths.append(p)
            coords.append(inp.coords[i])
        except TerralocError:
            pass
        if progress:
            progress(i + 1, n)
    return PhotoSet(paths, np.asarray(coords, dtype=np.float64).reshape(-1, 2), maps)


def run_ablation(
    make_encoder: Callable[[int], FusedImageEncoder],
    photos: PhotoSet,
    blocks: Sequence[int],
    epochs: int = 2,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    cells: str = "cells_50_5000",
    on_step: Callable[[int, int, float], None] | None = None,
) -> list[dict[str, Any]]:
    """Train one encoder per block count on 80 % of the photos, evaluate on the other 20 %.

    Returns:
        One dict per block count: ``blocks``, ``train_loss``, ``seconds_per_step``, and the eval JSON
        (accuracy at 1/25/200/750/2500 km) of the held-out photos.
    """
    from terraloc.encoders.segmentation import load_image
    from terraloc.evaluate import GroundTruth, Predictions, evaluate

    n = len(photos.paths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_test = max(1, n // 5)
    test, train = order[:n_test], order[n_test:]
    images = [load_image(p) for p in photos.paths]
    centres = load_cell_centres(cells)
    results = []
    for nb in blocks:
        torch.manual_seed(seed)
        enc = make_encoder(nb)
        head = GeocellClassifier(centres, enc.fusion.cfg.out_dim)
        labels = head.labels(photos.coords)
        opt = make_optimizer(enc, head, lr)
        losses, times = [], []
        steps = epochs * max(1, -(-len(train) // batch_size))
        step = 0
        for _ in range(epochs):
            perm = rng.permutation(train)
            for s in range(0, len(perm), batch_size):
                idx = perm[s : s + batch_size]
                px, seg = enc.prepare([images[i] for i in idx], [photos.maps[i] for i in idx])
                st = train_step(enc, head, opt, px, seg, labels[idx])
                losses.append(st.loss)
                times.append(st.seconds)
                step += 1
                if on_step:
                    on_step(step, steps, st.loss)
        enc.eval()
        head.eval()
        preds = []
        with torch.no_grad():
            for s in range(0, len(test), batch_size):
                idx = test[s : s + batch_size]
                px, seg = enc.prepare([images[i] for i in idx], [photos.maps[i] for i in idx])
                preds.append(head.decode(head(enc(px, seg))))
        coords = np.concatenate(preds)
        ids = [photos.paths[i].name for i in test]
        gt = GroundTruth("held-out photos", ids, photos.coords[test], photos.paths[0].parent)
        res = evaluate(gt, Predictions(ids, coords, Path("ablation"), "terraloc"), n_boot=100)
        results.append(
            {
                "blocks": nb,
                "train_images": len(train),
                "test_images": len(test),
                "train_loss_last": float(np.mean(losses[-max(1, len(losses) // 4) :])),
                "seconds_per_step": float(np.median(times)),
                "eval": res.to_json(),
            }
        )
    return results


def train_fused_geosurge(
    encoder: FusedImageEncoder,
    photos: PhotoSet,
    tau_max: Sequence[int] = (100, 40, 15),
    tau_min: int = 1,
    epochs: int = 2,
    batch_size: int = 8,
    lr: float = 1e-3,
    loss_mode: str = "full",
    seed: int = 0,
    on_step: Callable[[int, int, float], None] | None = None,
    device: str = "cpu",
) -> tuple[Any, Any, list[float]]:
    """Train the fused encoder jointly with a GeoSURGE geocell hierarchy head (backbone in the loop).

    The partition is built from the photos' coordinates (``tau_max`` per level, coarse to fine);
    the head's input is the fused 768-d feature. Trained: the last CLIP block, the fusion module
    and the head.

    Returns:
        ``(GeoSurge model, S2Partition, per-step losses)``.
    """
    from terraloc.encoders.segmentation import load_image
    from terraloc.geo.s2partition import S2Partition
    from terraloc.models.geosurge import GeoSurge, GeoSurgeConfig

    partition = S2Partition.build(photos.coords, tau_max, tau_min, source="fusion training photos")
    torch.manual_seed(seed)
    model = GeoSurge(GeoSurgeConfig(input_dim=encoder.fusion.cfg.out_dim, level_sizes=tuple(partition.sizes)))
    encoder.to(device)
    model.to(device)
    labels = torch.as_tensor(partition.assign(photos.coords), dtype=torch.long, device=device)
    images = [load_image(p) for p in photos.paths]
    opt = make_optimizer(encoder, model, lr)
    rng = np.random.default_rng(seed)
    n = len(photos.paths)
    steps = epochs * max(1, -(-n // batch_size))
    losses: list[float] = []
    step = 0

    def loss_fn(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        total, _ = model.loss(features, labels[idx], mode=loss_mode)
        return total

    encoder.train()
    model.train()
    for _ in range(epochs):
        perm = rng.permutation(n)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            px, seg = encoder.prepare([images[i] for i in idx], [photos.maps[i] for i in idx])
            st = train_step(encoder, nn.Identity(), opt, px, seg, torch.as_tensor(idx), loss_fn)
            losses.append(st.loss)
            step += 1
            if on_step:
                on_step(step, steps, st.loss)
    encoder.cpu().eval()
    model.cpu().eval()
    return model, partition, losses


def save_fused_run(
    out: Path,
    encoder: FusedImageEncoder,
    model: Any,
    partition: Any,
    losses: Sequence[float],
    n_photos: int,
    spec: dict[str, Any],
) -> dict[str, Any]:
    """Write a fused training run: ``fusion.pt``, ``geosurge.pt`` and ``metrics.json`` under ``out``.

    Both checkpoints record the backbone (``{"id", "hash", "dim"}``) whose tokens were fused, so
    prediction refuses another one. Returns the metrics written.
    """
    import json

    from terraloc.io import atomic_write_text
    from terraloc.models.fused_encoder import save_fused_checkpoint
    from terraloc.models.geosurge import save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    backbone = {**encoder.backbone_info, "dim": None}
    save_fused_checkpoint(out / "fusion.pt", encoder, {"run": json.dumps(spec)})
    save_checkpoint(out / "geosurge.pt", model, partition, {"fusion": "fusion.pt", "backbone": json.dumps(backbone)})
    metrics = {
        "photos": n_photos,
        "steps": len(losses),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "partition_sizes": partition.sizes,
        **spec,
        "fusion": encoder.fusion.cfg.to_json(),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics
