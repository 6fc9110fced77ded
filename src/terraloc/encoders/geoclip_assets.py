"""Pretrained GeoCLIP assets shipped as data files in the ``geoclip`` 1.3.0 wheel (MIT).

Their Python code is never imported (that would pull torchvision); terraloc only reads four files.
They are looked up, in order, in:

1. ``TERRALOC_GEOCLIP_DIR`` (a folder laid out like the wheel's ``geoclip/``), when set;
2. ``$TERRALOC_HOME/models/geoclip/``, written by ``terraloc models pull geoclip``;
3. an installed ``geoclip`` distribution (``pip install --no-deps geoclip==1.3.0``, as ``make`` does).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

from terraloc.config import home_dir
from terraloc.errors import MissingResourceError

GEOCLIP_VERSION = "1.3.0"
ASSETS = {
    "location_encoder": "geoclip/model/weights/location_encoder_weights.pth",
    "image_mlp": "geoclip/model/weights/image_encoder_mlp_weights.pth",
    "logit_scale": "geoclip/model/weights/logit_scale_weights.pth",
    "gps_gallery": "geoclip/model/gps_gallery/coordinates_100K.csv",
}
#: SHA-256 of each asset in the geoclip 1.3.0 wheel (checked by ``terraloc models pull geoclip``).
SHA256 = {
    "location_encoder": "94b80ae3af89fca78539e129dd2929d321247f5ceeeb0a31bc2c31041a253394",
    "image_mlp": "5342c391eec961796d04d02f2bd670bfa97b34ce32c656d0e0676581103c2c14",
    "logit_scale": "9568e2e09dd19083082bf285b2c0c126867e40dbd275a8ee8c621888b861904e",
    "gps_gallery": "3a00b1ba58f13443db726533b6399b39609e292df09d4e58792fa5949d1838b1",
}
PULL_COMMAND = "terraloc models pull geoclip"


def pulled_dir() -> Path:
    """Where ``terraloc models pull geoclip`` puts the assets: ``$TERRALOC_HOME/models/geoclip``."""
    return home_dir() / "models" / "geoclip"


def _rel(name: str) -> Path:
    return Path(ASSETS[name]).relative_to("geoclip")


def geoclip_source() -> Path | None:
    """The folder (laid out like the wheel's ``geoclip/``) holding all four assets, or None."""
    override = os.environ.get("TERRALOC_GEOCLIP_DIR")
    if override:
        return Path(override)
    candidates = [pulled_dir()]
    try:
        dist = importlib.metadata.distribution("geoclip")
        candidates.append(Path(str(dist.locate_file("geoclip"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in candidates:
        if all((folder / _rel(n)).is_file() for n in ASSETS):
            return folder
    return None


def geoclip_asset(name: str) -> Path:
    """Path of one GeoCLIP asset: ``location_encoder``, ``image_mlp``, ``logit_scale``, ``gps_gallery``.

    Raises:
        MissingResourceError: the assets are not on disk (the message names the command to run).
    """
    if name not in ASSETS:
        raise KeyError(f"unknown GeoCLIP asset '{name}'; known: {', '.join(ASSETS)}")
    override = os.environ.get("TERRALOC_GEOCLIP_DIR")
    if override:
        path = Path(override) / _rel(name)
        if path.exists():
            return path
        raise MissingResourceError(
            f"{path}: GeoCLIP asset '{name}' not found under TERRALOC_GEOCLIP_DIR; "
            f"unset it and fetch the assets with: {PULL_COMMAND}"
        )
    folder = geoclip_source()
    if folder is None:
        raise MissingResourceError(
            f"GeoCLIP's pretrained weights and 100K gallery are not on disk; fetch them (40 MB) with: {PULL_COMMAND}"
        )
    return folder / _rel(name)


def file_sha256(path: str | Path, length: int = 16) -> str:
    """Hex SHA-256 prefix of a file, used to record which weights produced a result."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]
