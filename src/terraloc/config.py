"""Locations of shared data and the model cache.

``TERRALOC_SHARED`` points at the read-only shared data folder (default ``../shared`` relative
to the current directory, then relative to the repository). ``TERRALOC_HOME`` is the one cache
directory for downloaded models and built artefacts (default ``~/.cache/terraloc``).
"""

from __future__ import annotations

import os
from pathlib import Path

from terraloc.errors import MissingResourceError

_REPO_ROOT = Path(__file__).resolve().parents[2]

#: The image backbone `predict` uses with its default (GeoCLIP) head; `embed` defaults to it too.
DEFAULT_BACKBONE = "clip-vit-large-patch14"


def shared_dir(required: bool = True) -> Path:
    """Return the shared data folder.

    Args:
        required: raise :class:`MissingResourceError` when the folder does not exist.

    Returns:
        The folder path (it may not exist when ``required`` is False).
    """
    env = os.environ.get("TERRALOC_SHARED")
    candidates = [Path(env)] if env else [Path("../shared"), _REPO_ROOT.parent / "shared"]
    for cand in candidates:
        if cand.is_dir():
            return cand.resolve()
    if required:
        raise MissingResourceError(
            f"shared data folder not found (tried {', '.join(str(c) for c in candidates)}); "
            "set TERRALOC_SHARED to its path"
        )
    return candidates[0]


def shared_path(*parts: str) -> Path:
    """Return a path inside the shared folder, raising a clear error when it is missing."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        raise MissingResourceError(f"{path}: not found in the shared data folder")
    return path


def home_dir() -> Path:
    """Return ``TERRALOC_HOME`` (created on demand), the cache for models and galleries."""
    path = Path(os.environ.get("TERRALOC_HOME", Path.home() / ".cache" / "terraloc"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_data(*parts: str) -> Path:
    """Return a path to a data file shipped inside the package (``terraloc/data``)."""
    return Path(__file__).resolve().parent.joinpath("data", *parts)
