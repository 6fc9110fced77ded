"""Pretrained GeoCLIP assets shipped as data files in the ``geoclip`` 1.3.0 wheel (MIT).

The wheel is installed with ``pip install --no-deps geoclip==1.3.0`` by ``make`` set-up; its Python
code is never imported (that would pull torchvision). Files are located through the installed
distribution's metadata, or in a folder given by ``TERRALOC_GEOCLIP_DIR``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

from terraloc.errors import MissingResourceError

ASSETS = {
    "location_encoder": "geoclip/model/weights/location_encoder_weights.pth",
    "image_mlp": "geoclip/model/weights/image_encoder_mlp_weights.pth",
    "logit_scale": "geoclip/model/weights/logit_scale_weights.pth",
    "gps_gallery": "geoclip/model/gps_gallery/coordinates_100K.csv",
}
_FETCH = "pip install --no-deps geoclip==1.3.0 (run by `make install`)"


def geoclip_asset(name: str) -> Path:
    """Path of one GeoCLIP asset: ``location_encoder``, ``image_mlp``, ``logit_scale``, ``gps_gallery``.

    Raises:
        MissingResourceError: the geoclip package files are not installed.
    """
    if name not in ASSETS:
        raise KeyError(f"unknown GeoCLIP asset '{name}'; known: {', '.join(ASSETS)}")
    rel = ASSETS[name]
    override = os.environ.get("TERRALOC_GEOCLIP_DIR")
    if override:
        path = Path(override) / Path(rel).relative_to("geoclip")
        if path.exists():
            return path
        raise MissingResourceError(f"{path}: GeoCLIP asset '{name}' not found under TERRALOC_GEOCLIP_DIR")
    try:
        dist = importlib.metadata.distribution("geoclip")
    except importlib.metadata.PackageNotFoundError:
        raise MissingResourceError(
            f"GeoCLIP weights (package 'geoclip') are not installed; fetch with: {_FETCH}"
        ) from None
    path = Path(str(dist.locate_file(rel)))
    if not path.exists():
        raise MissingResourceError(f"{path}: GeoCLIP asset '{name}' missing; reinstall with: {_FETCH}")
    return path


def file_sha256(path: str | Path, length: int = 16) -> str:
    """Hex SHA-256 prefix of a file, used to record which weights produced a result."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]
