"""What a worker does with one partition: embed photos, or predict where they were taken.

The engine never builds a model itself. It is handed a picklable *worker spec* (a small frozen
dataclass: a backbone name, or a geolocator configuration as a JSON-ready dict, or a zero-argument
callable that returns a geolocator); each worker — the driver's process for the local engine, each
Ray actor for the Ray engine — calls :meth:`WorkerSpec.build` once and then processes partitions.
Photos are decoded inside the worker (``iter_pixel_batches``: decoding threads, per-photo errors).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from terraloc.device import resolve_device
from terraloc.engine.parts import ErrorRow, write_part
from terraloc.geo.places import PLACE_COLUMNS

#: Test hook: ``exit-once:MARKER`` makes the first worker that finishes computing a partition
#: (before writing it) create ``MARKER`` and exit the process at once, as a crash would.
FAULT_ENV = "TERRALOC_ENGINE_FAULT"


@dataclass
class PartInput:
    """A partition's inputs: ``lo`` (position of the first in the input order), ids, ``paths``
    to open (absolute, so workers on other nodes or in other folders find them), ``coords``
    ``(n, 2)`` degrees or ``None``, and ``labels``: the paths as the user gave them (written to
    the output; default ``paths``)."""

    pid: int
    lo: int
    ids: list[str]
    paths: list[str]
    coords: NDArray[np.float64] | None = None
    labels: list[str] | None = None

    @property
    def names(self) -> list[str]:
        return self.labels if self.labels is not None else self.paths


def absolute_if_path(value: Any) -> Any:
    """An existing relative path → absolute (workers may run elsewhere); anything else unchanged."""
    if isinstance(value, str) and value and os.path.exists(value):
        return os.path.abspath(value)
    return value


BatchCallback = Callable[[int], None]
#: Called with a finished partition's stats (:func:`run_partition`'s result).
PartCallback = Callable[[dict[str, Any]], None]


class Worker(Protocol):
    """A built model that turns a partition into rows (``pa.Table``) and per-photo errors."""

    def process(self, part: PartInput, on_batch: BatchCallback | None = None) -> tuple[pa.Table, list[ErrorRow]]: ...

    def model_info(self) -> dict[str, Any]: ...


class WorkerSpec(Protocol):
    """Picklable recipe for a :class:`Worker`; ``describe()`` identifies the job for resuming."""

    @property
    def kind(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def build(self, threads: int, device: str) -> Worker: ...


def _set_threads(threads: int) -> None:
    """This worker's compute threads, and an allocator that keeps batch memory mapped between batches."""
    import torch

    from terraloc.allocator import keep_freed_memory

    keep_freed_memory()
    if threads > 0:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- embedding


def embedding_array(emb: NDArray[np.float32]) -> pa.FixedSizeListArray:
    """``(n, D)`` float32 → Arrow ``fixed_size_list<float32>[D]`` (the shard format's column)."""
    d = int(emb.shape[1])
    flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, d)


def _ll_columns(coords: NDArray[np.float64] | None, rows: list[int], n: int) -> tuple[pa.Array, pa.Array]:
    if coords is None:
        return pa.nulls(n, pa.float64()), pa.nulls(n, pa.float64())
    c = coords[rows] if rows else np.zeros((0, 2))
    return pa.array(c[:, 0], pa.float64()), pa.array(c[:, 1], pa.float64())


class EmbedWorker:
    """Backbone embeddings: rows ``index, id, path, lat, lon, embedding`` (L2-normalised float32)."""

    def __init__(self, backbone: Any, batch_size: int, decode_threads: int, device: str) -> None:
        self.backbone = backbone
        self.batch_size = batch_size
        self.decode_threads = decode_threads
        self.device = device

    def model_info(self) -> dict[str, Any]:
        return {"backbone": self.backbone.describe()}

    def process(self, part: PartInput, on_batch: BatchCallback | None = None) -> tuple[pa.Table, list[ErrorRow]]:
        import torch

        from terraloc.encoders.image.batching import iter_pixel_batches

        dim = int(self.backbone.dim)
        keep: list[int] = []
        vecs: list[NDArray[np.float32]] = []
        errors: list[ErrorRow] = []
        for b in iter_pixel_batches(
            part.paths, self.backbone.preprocess, batch_size=self.batch_size, workers=self.decode_threads
        ):
            for i, msg in sorted(b.errors.items()):
                errors.append(ErrorRow(part.lo + i, part.ids[i], part.names[i], msg))
            if b.indices:
                with torch.no_grad():
                    v = self.backbone.embed_pixels(b.pixels.to(self.device))
                vecs.append(v.detach().cpu().numpy().astype(np.float32))
                keep.extend(b.indices)
            if on_batch is not None:
                on_batch(len(b.indices) + len(b.errors))
        emb = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
        lat, lon = _ll_columns(part.coords, keep, len(keep))
        table = pa.table(
            {
                "index": pa.array([part.lo + i for i in keep], pa.int64()),
                "id": pa.array([part.ids[i] for i in keep], pa.string()),
                "path": pa.array([part.names[i] for i in keep], pa.string()),
                "lat": lat,
                "lon": lon,
                "embedding": embedding_array(emb),
            }
        )
        return table, errors


@dataclass(frozen=True)
class EmbedSpec:
    """Embed photos with the image backbone ``backbone`` (a spec for ``load_backbone``)."""

    backbone: str
    batch_size: int = 32
    decode_threads: int = 1
    kind: str = field(default="embed", init=False)

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.backbone}

    def build(self, threads: int, device: str) -> Worker:
        from terraloc.encoders.image import load_backbone

        _set_threads(threads)
        dev = resolve_device(device)
        bb = load_backbone(absolute_if_path(self.backbone))
        bb.eval()
        if dev != "cpu":
            bb.to(dev)
        return EmbedWorker(bb, self.batch_size, self.decode_threads, dev)


# --------------------------------------------------------------------------- prediction

PREDICTION_COLUMNS = (
    "index",
    "id",
    "image",
    *PLACE_COLUMNS,
    "width",
    "height",
    "confidence",
    "abstained",
    "region",
    "features",
)
#: Arrow types of the prediction rows (strings where not listed).
PREDICTION_TYPES: dict[str, pa.DataType] = {
    "index": pa.int64(),
    "rank": pa.int32(),
    "lat": pa.float64(),
    "lon": pa.float64(),
    "probability": pa.float64(),
    "width": pa.int32(),
    "height": pa.int32(),
    "confidence": pa.map_(pa.string(), pa.float64()),
    "abstained": pa.bool_(),
    "features": pa.map_(pa.string(), pa.float64()),
}


class PredictWorker:
    """Geolocator predictions: one row per candidate (``index, id, image, rank, lat, lon, probability,
    city, admin1, country, country_code, width, height``) with the photo's calibrated ``confidence``
    (``{"25": P(error <= 25 km), ...}``, null without a calibrator), ``abstained``, ``region`` (JSON
    text) and confidence ``features`` repeated on each of its rows. An abstained photo is one row with
    null rank and location (its confidence still given); a failed photo is an errors-table row."""

    def __init__(self, geolocator: Any, top_k: int) -> None:
        self.geo = geolocator
        self.top_k = top_k

    def model_info(self) -> dict[str, Any]:
        return dict(self.geo.model_info)

    def process(self, part: PartInput, on_batch: BatchCallback | None = None) -> tuple[pa.Table, list[ErrorRow]]:
        cols: dict[str, list[Any]] = {c: [] for c in PREDICTION_COLUMNS}
        errors: list[ErrorRow] = []
        for j, r in enumerate(self.geo.predict_iter(part.paths, top_k=self.top_k, labels=part.names)):
            i = part.lo + j
            abstained = bool(getattr(r, "abstained", False))
            if r.error is not None or not (r.candidates or abstained):
                errors.append(ErrorRow(i, part.ids[j], part.names[j], r.error or "no prediction"))
                if on_batch is not None:
                    on_batch(1)
                continue
            conf = getattr(r, "confidence", None)
            region = getattr(r, "region", None)
            feats = getattr(r, "features", None)
            photo = {
                "index": i,
                "id": part.ids[j],
                "image": r.image,
                "width": r.width,
                "height": r.height,
                "confidence": list(conf.items()) if conf is not None else None,
                "abstained": abstained,
                "region": json.dumps(region) if region is not None else None,
                "features": list(feats.items()) if feats is not None else None,
            }
            for c in r.candidates or [None]:  # an abstention: one row without a location
                for name in PLACE_COLUMNS:
                    cols[name].append(getattr(c, name) if c is not None else None)
                for name, v in photo.items():
                    cols[name].append(v)
            if on_batch is not None:
                on_batch(1)
        table = pa.table({c: pa.array(cols[c], PREDICTION_TYPES.get(c, pa.string())) for c in PREDICTION_COLUMNS})
        return table, errors


@dataclass(frozen=True)
class PredictSpec:
    """Predict with a geolocator rebuilt in each worker.

    Attributes:
        config: a geolocator configuration as a JSON-ready dict (``GeolocatorConfig.to_json()``),
            or a picklable zero-argument callable returning an object with ``predict_iter`` and
            ``model_info`` (any way of building the model).
        top_k: candidates per photo.
    """

    config: dict[str, Any] | Callable[[], Any]
    top_k: int = 5
    kind: str = field(default="predict", init=False)

    def describe(self) -> dict[str, Any]:
        if callable(self.config):
            d = getattr(self.config, "describe", None)
            model: Any = d() if callable(d) else f"{type(self.config).__module__}.{type(self.config).__qualname__}"
        else:
            # decoding threads and batch size do not change the answers: resuming with others is fine
            model = {k: v for k, v in self.config.items() if k not in ("workers", "batch_size")}
        return {"model": model, "top_k": self.top_k}

    def build(self, threads: int, device: str) -> Worker:
        _set_threads(threads)
        dev = resolve_device(device)
        if callable(self.config):
            geo = self.config()
        else:
            from terraloc.pipeline import Geolocator, GeolocatorConfig

            geo = Geolocator(GeolocatorConfig(**self.config))
        if dev != "cpu" and callable(getattr(geo, "to", None)):
            geo.to(dev)  # the backbone on the worker's GPU; heads stay on its CPU
        return PredictWorker(geo, self.top_k)


# --------------------------------------------------------------------------- one partition


def run_partition(worker: Worker, out: str, part: PartInput, on_batch: BatchCallback | None = None) -> dict[str, Any]:
    """Process one partition and write its part files (idempotent: an existing part is kept).

    Returns:
        ``{"pid", "photos", "rows", "failed", "seconds", "written"}``.
    """
    from terraloc.engine.parts import is_done

    t0 = time.perf_counter()
    n = len(part.paths)
    if is_done(out, part.pid):  # a retried task whose first attempt had finished writing
        return {"pid": part.pid, "photos": n, "rows": -1, "failed": -1, "seconds": 0.0, "written": False}
    rows, errors = worker.process(part, on_batch)
    _maybe_fault()
    write_part(out, part.pid, rows, errors, worker.model_info())
    return {
        "pid": part.pid,
        "photos": n,
        "rows": rows.num_rows,
        "failed": len(errors),
        "seconds": time.perf_counter() - t0,
        "written": True,
    }


def _maybe_fault() -> None:
    spec = os.environ.get(FAULT_ENV, "")
    if spec.startswith("exit-once:"):
        marker = Path(spec.split(":", 1)[1])
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(17)
