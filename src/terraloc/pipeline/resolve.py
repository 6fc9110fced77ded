"""One resolution of the prediction options for every front end.

``terraloc predict``, ``terraloc serve``, ``terraloc bench predict`` and
``Geolocator.from_pretrained`` all call :func:`resolve_config`, so the same options give the same
geolocator everywhere. Rules, in order:

1. ``model``: a saved geolocator folder (``config.json`` from ``save_pretrained``) or a preset
   name is the starting point; without it, the defaults of :class:`GeolocatorConfig`.
2. Options given explicitly (not ``None``) override it.
3. Without ``model`` and ``head``, the head follows from what was given: ``--fusion`` →
   ``geosurge+fusion``, ``--checkpoint`` → ``geosurge``, ``--db`` → ``refdb``, else ``geoclip``;
   ``--head geosurge --fusion F`` means ``geosurge+fusion``.
4. Without ``model`` and ``backbone``, the backbone is the one the head's file records (the
   database manifest, the checkpoint's ``backbone`` entry), else ``clip-vit-large-patch14``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from terraloc.config import DEFAULT_BACKBONE
from terraloc.errors import InputError
from terraloc.pipeline.config import CONFIG_FILE, GeolocatorConfig


def resolve_config(model: str | Path | None = None, **options: Any) -> tuple[GeolocatorConfig, Path | None]:
    """Resolve front-end options into a validated :class:`GeolocatorConfig`.

    Args:
        model: a saved geolocator folder (or its ``config.json``), or a preset name
            (``terraloc.pipeline.PRESETS``), or ``None``.
        **options: :class:`GeolocatorConfig` fields; ``None`` means "not given". ``Path`` values
            are turned into strings.

    Returns:
        ``(config, source)``: ``source`` is the ``config.json`` it was read from, or ``None``.

    Raises:
        InputError: an unknown model, or an invalid option (one line naming it).
    """
    from terraloc.pipeline.geolocator import PRESETS

    given = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items() if v is not None}
    if given.get("head") == "geosurge" and given.get("fusion"):
        given["head"] = "geosurge+fusion"
    if model is not None:
        path = Path(model).expanduser()
        if path.is_dir() or (path.name == CONFIG_FILE and path.is_file()):
            source = path / CONFIG_FILE if path.is_dir() else path
            return GeolocatorConfig.load(source).replace(**given), source
        if str(model) in PRESETS:
            return GeolocatorConfig(**{**PRESETS[str(model)], **given}), None
        raise InputError(
            f"'{model}' is neither a saved geolocator folder (with {CONFIG_FILE}) nor a preset ({', '.join(PRESETS)})",
            field="model",
        )
    if "head" not in given:
        given["head"] = default_head(given)
    if "backbone" not in given:
        given["backbone"] = default_backbone(given) or DEFAULT_BACKBONE
    return GeolocatorConfig(**given), None


def default_head(given: dict[str, Any]) -> str:
    """The head implied by the files given (see the module docstring)."""
    if given.get("fusion"):
        return "geosurge+fusion"
    if given.get("checkpoint"):
        return "geosurge"
    if given.get("db"):
        return "refdb"
    return "geoclip"


def default_backbone(given: dict[str, Any]) -> str | None:
    """The backbone id the head's database or checkpoint records, if any."""
    head = given.get("head")
    if head == "refdb" and given.get("db"):
        manifest = Path(given["db"]) / "manifest.json"
        if manifest.is_file():
            try:
                return str(json.loads(manifest.read_text(encoding="utf-8"))["backbone"]["id"])
            except (ValueError, KeyError, TypeError):
                return None  # the head reports the broken manifest with its name
    file = given.get("fusion") if head == "geosurge+fusion" else given.get("checkpoint")
    if head in ("geoclip", "geosurge", "geosurge+fusion") and file and Path(file).is_file():
        from terraloc.models.geosurge_head import recorded_backbone

        try:
            import torch

            payload = torch.load(file, map_location="cpu", weights_only=True)
        except Exception:
            return None  # the head reports an unreadable checkpoint with its name
        rec = recorded_backbone(payload) if isinstance(payload, dict) else None
        if rec and rec.get("id") and _is_available(str(rec["id"])):
            return str(rec["id"])
    return None


def _is_available(spec: str) -> bool:
    """A recorded backbone id is usable as a default when it is a folder that exists or a known name."""
    from terraloc.encoders.image.backbones import resolve_known

    return Path(spec).expanduser().is_dir() or resolve_known(spec) is not None
