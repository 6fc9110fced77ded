"""The :class:`Geolocator`: one object composed from a :class:`GeolocatorConfig`.

``photo → backbone → head (any registered head, see terraloc.models.head) → Candidates →
[reasoning stage] → top-k predictions → offline place names``. Decoding runs in worker threads,
the backbone in batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from terraloc.errors import InputError
from terraloc.pipeline.config import CONFIG_FILE, FileRecord, GeolocatorConfig
from terraloc.pipeline.types import ImagePrediction, Prediction

PRESETS: dict[str, dict[str, Any]] = {
    "geoclip": {"backbone": "clip-vit-large-patch14", "head": "geoclip"},
    "geoclip-336": {"backbone": "clip-vit-large-patch14-336", "head": "geoclip"},
    "streetclip-geoclip": {"backbone": "streetclip", "head": "geoclip"},
}

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)`` while building a gallery or an index the first time."""


def _label(src: Any, i: int) -> str:
    if isinstance(src, str | Path):
        return str(src)
    if isinstance(src, bytes | bytearray):
        return f"<bytes #{i}>"
    if isinstance(src, np.ndarray):
        return f"<array #{i}>"
    return f"<image #{i}>"


def file_digest(path: str | Path) -> str:
    """SHA-256 prefix (16 hex digits) of a file's bytes, as recorded in ``config.json``."""
    from terraloc.encoders.geoclip_assets import file_sha256

    return file_sha256(path)


def verify_files(config: GeolocatorConfig, source: str | Path | None = None) -> None:
    """Refuse when a file recorded in ``config.files`` is missing or changed (one line naming it)."""
    where = f" (recorded in {source})" if source else ""
    for role, rec in config.files.items():
        p = Path(rec.path)
        if not p.is_file():
            raise InputError(f"{role} file is missing{where}", path=p)
        got = file_digest(p)
        if got != rec.sha256:
            raise InputError(
                f"{role} file changed since the geolocator was saved (sha256 {got}, saved {rec.sha256}){where}",
                path=p,
            )


class Geolocator:
    """Predict where photos were taken.

    Example::

        geo = Geolocator.from_pretrained("geoclip")                 # needs `terraloc models pull`
        geo = Geolocator.from_pretrained("geoclip", backbone="/path/to/clip-folder", index="IVF1024,Flat@nprobe=16")
        geo = Geolocator(GeolocatorConfig(backbone="efficientnet-lite0", head="refdb", db="db/"))
        [pred] = geo.predict("photo.jpg", top_k=5)
        pred.top.lat, pred.top.lon, pred.top.country
        geo.save_pretrained("my-geolocator/")                       # config.json with weight hashes
        geo = Geolocator.from_pretrained("my-geolocator/")          # refuses if a weight file changed

    Args:
        config: the configuration (or pass its fields as keyword arguments).
        backbone: an already loaded backbone to share (else loaded from ``config.backbone``); a
            string or path is a backbone spec (the ``backbone`` config field).
        progress: ``progress(stage, done, total)`` while a gallery or an index is built.
    """

    def __init__(
        self,
        config: GeolocatorConfig | None = None,
        backbone: Any = None,
        *,
        progress: Progress | None = None,
        source: str | Path | None = None,
        **options: Any,
    ) -> None:
        from terraloc.encoders.image import load_backbone
        from terraloc.models.head import build_head

        if isinstance(backbone, str | Path):  # a spec, not a loaded backbone: a config field
            options["backbone"], backbone = str(backbone), None
        if config is None:
            config = GeolocatorConfig(**options)
        elif options:
            config = config.replace(**options)
        self.config = config
        verify_files(config, source)
        self.backbone = backbone if backbone is not None else load_backbone(config.backbone)
        if config.backbone_hash and self.backbone.weights_hash != config.backbone_hash:
            where = f"{source}: " if source else ""
            raise InputError(
                f"{where}backbone '{config.backbone}' has weights {self.backbone.weights_hash} but the geolocator "
                f"was saved with weights {config.backbone_hash}",
                field="backbone",
            )
        self.head = build_head(config, self.backbone, progress)
        self._reasoner: Any = None
        if config.reasoner is not None:
            from terraloc.pipeline.reasoning import RagStage

            self._reasoner = RagStage(config, self.backbone, self.head)
        elif config.llm is not None:
            raise InputError("--llm needs --reasoner rag", field="llm")
        self.model_info = self._describe()
        self._init_confidence()
        self.device = "cpu"

    def to(self, device: str) -> Geolocator:
        """Run the image backbone on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``); returns self.

        The backbone is nearly all of a prediction's compute: it moves, and each batch's features
        come back to the CPU, where the heads, galleries and reasoning stage stay. Like
        ``torch.nn.Module.to``: a property of this object, not of the saved configuration.

        Raises:
            InputError: an unknown or unavailable device, or a backbone that runs on the CPU only.
        """
        from terraloc.device import resolve_device

        dev = resolve_device(device)
        if dev != "cpu" and not isinstance(self.backbone, torch.nn.Module):
            raise InputError(f"backbone '{self.config.backbone}' runs on the CPU only (ONNX)", field="device")
        if isinstance(self.backbone, torch.nn.Module):
            self.backbone.to(dev)
        self.device = dev
        return self

    def _init_confidence(self) -> None:
        """Load the calibrator (refused if fitted for another configuration) and the abstention rule."""
        from terraloc.confidence import Calibrator, parse_min_confidence
        from terraloc.confidence.identity import pipeline_identity

        cfg = self.config
        self.identity = pipeline_identity(self.model_info)
        self.calibrator = None if cfg.calibrator is None else Calibrator.load(cfg.calibrator, self.identity)
        self.min_confidence = parse_min_confidence(cfg.min_confidence)
        if self.min_confidence is not None and self.calibrator is None:
            raise InputError("--min-confidence needs a calibrator (--calibrator FILE)", field="min-confidence")

    # ------------------------------------------------------------------ construction and saving

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "geoclip", **overrides: Any) -> Geolocator:
        """A saved geolocator folder (``config.json``) or a preset name, with config overrides.

        Presets: ``geoclip``, ``geoclip-336``, ``streetclip-geoclip``. A saved folder's recorded
        weight hashes are checked; a changed file is refused with one line naming it.
        """
        from terraloc.pipeline.resolve import resolve_config

        config, source = resolve_config(model=name_or_path, **overrides)
        return cls(config, source=source)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``DIR/config.json``: this configuration with absolute paths, the backbone id and
        weight hash, and the SHA-256 of every file the head reads (gallery, database, checkpoints).

        Returns:
            The path of ``config.json``.
        """
        cfg = self.config
        paths = {}
        for key in ("db", "checkpoint", "fusion"):
            value = getattr(cfg, key)
            paths[key] = str(Path(value).expanduser().resolve()) if value else None
        if Path(cfg.gallery).expanduser().is_dir():
            paths["gallery"] = str(Path(cfg.gallery).expanduser().resolve())
        backbone = cfg.backbone
        if Path(backbone).expanduser().is_dir():
            backbone = str(Path(backbone).expanduser().resolve())
        files = {
            role: FileRecord(path=str(Path(p).resolve()), sha256=file_digest(p))
            for role, p in self.head.files().items()
        }
        data = {**cfg.to_json(), **paths}
        data.update(
            backbone=backbone,
            backbone_hash=self.backbone.weights_hash,
            files={k: v.model_dump() for k, v in files.items()},
        )
        return GeolocatorConfig(**data).save(directory)

    def with_config(self, **changes: Any) -> Geolocator:
        """A new Geolocator sharing this one's backbone, with config changes."""
        return Geolocator(self.config.replace(**changes), backbone=self.backbone).to(self.device)

    def _describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"head": self.config.head, "backbone": self.backbone.describe()}
        info.update(self.head.describe())
        if getattr(self.head, "supports_ten_crop", False):
            info["ten_crop"] = self.config.ten_crop
        if self._reasoner is not None:
            info["reasoner"] = self._reasoner.describe()
        return info

    # ------------------------------------------------------------------ core

    def _transform(self) -> Callable[[Any], NDArray[np.float32]]:
        pre = self.backbone.preprocess
        if self.config.ten_crop:
            return pre.ten_crop  # type: ignore[no-any-return]
        return self.head.transform(pre)  # type: ignore[no-any-return]

    @torch.no_grad()
    def run_batch(self, pixels: torch.Tensor, top_k: int, names: list[str] | None = None) -> Any:
        """One decoded batch through the head (and the reasoning stage): ``Candidates`` for it.

        ``pixels``: ``(B, 3, H, W)``, ``(B, 10, 3, H, W)`` for ten-crop, or what the head's
        ``transform`` stacks (pixel heads).
        """
        if self.head.input == "pixels":
            x = pixels
            features = None
        elif pixels.ndim == 5:
            n, c = pixels.shape[:2]
            features = self.backbone.features(pixels.flatten(0, 1).to(self.device)).float().cpu()
            x = features.view(n, c, -1)
        else:
            x = features = self.backbone.features(pixels.to(self.device)).float().cpu()
        cands = self.head.predict(x, top_k)
        if self._reasoner is not None:
            emb = features.view(pixels.shape[0], -1, features.shape[-1]).mean(1) if features is not None else None
            cands = self._reasoner(names or [f"query-{i}" for i in range(pixels.shape[0])], emb, cands, top_k)
        return cands

    def predict_iter(
        self, images: Iterable[Any], top_k: int = 5, labels: Iterable[str] | None = None
    ) -> Iterator[ImagePrediction]:
        """Predict ``images`` (any iterable, generators too) in order, yielding one
        :class:`ImagePrediction` per input as batches finish.

        Inputs: paths, encoded bytes, PIL images or ``(H, W, 3)`` arrays. A bad image yields a
        prediction with ``error`` set; the others go on.
        """
        from terraloc.encoders.image.batching import iter_pixel_batches

        if top_k < 1:
            raise InputError(f"top-k must be at least 1, got {top_k}", field="top_k")
        names: list[str] = []
        label_iter = iter(labels) if labels is not None else None

        def tagged() -> Iterator[Any]:
            for i, src in enumerate(images):
                names.append(next(label_iter, _label(src, i)) if label_iter is not None else _label(src, i))
                yield src

        for batch in iter_pixel_batches(
            tagged(), self._transform(), batch_size=self.config.batch_size, workers=self.config.workers
        ):
            results: dict[int, ImagePrediction] = {
                i: ImagePrediction(names[i], [], msg, self.model_info) for i, msg in batch.errors.items()
            }
            if batch.indices:
                from terraloc.pipeline.confidence import confidence_stage, raw_k

                # more candidates than top_k: the confidence features read 20, and merging into
                # distinct places needs spares
                cands = self.run_batch(
                    batch.pixels,
                    raw_k(top_k, self.config.distinct_km, self.calibrator is not None),
                    [names[i] for i in batch.indices],
                )
                staged = confidence_stage(
                    cands,
                    top_k,
                    calibrator=self.calibrator,
                    distinct_km=self.config.distinct_km,
                    min_confidence=self.min_confidence,
                )
                rows = [[] if st.abstained else st.places for st in staged]
                places = self._places([(r[0], r[1]) for rs in rows for r in rs])
                pos = 0
                for i, rs, st in zip(batch.indices, rows, staged, strict=True):
                    preds = []
                    for rank, (lat, lon, p, ev) in enumerate(rs, start=1):
                        preds.append(Prediction(rank, lat, lon, p, *places[pos], evidence=ev))
                        pos += 1
                    w, h = batch.sizes.get(i, (None, None))
                    results[i] = ImagePrediction(
                        names[i],
                        preds,
                        None,
                        self.model_info,
                        w,
                        h,
                        confidence=st.confidence,
                        abstained=st.abstained,
                        region=st.region,
                        features=st.features,
                    )
            for i in sorted(results):
                yield results[i]

    def _places(self, latlon: list[tuple[float, float]]) -> list[tuple[str, str, str, str]]:
        if not self.config.places or not latlon:
            return [("", "", "", "")] * len(latlon)
        from terraloc.geo.places import reverse_geocode

        return [(p.city, p.admin1, p.country, p.country_code) for p in reverse_geocode(np.asarray(latlon))]

    def predict(self, images: Any, top_k: int = 5) -> list[ImagePrediction]:
        """Predict one image or any iterable of them: paths, PIL images, encoded bytes or ``(H, W, 3)`` arrays.

        Returns:
            One :class:`ImagePrediction` per input, in order (errors recorded per image).
        """
        from PIL import Image

        single = isinstance(images, str | Path | bytes | bytearray | np.ndarray | Image.Image)
        if single or not isinstance(images, Iterable):
            images = [images]
        return list(self.predict_iter(images, top_k=top_k))


__all__ = ["CONFIG_FILE", "PRESETS", "Geolocator", "GeolocatorConfig", "verify_files"]
