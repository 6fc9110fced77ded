"""What the service may show of the server's file system: nothing absolute.

Model descriptions name backbones, galleries and databases by the paths they were loaded from.
Before any of that leaves the server (``/v1/models``, the page, each prediction's ``model``),
every absolute path is rewritten: relative to ``TERRALOC_HOME`` when it lies under it
(``models/clip-vit-large-patch14``), otherwise its last component (the model id or folder name).
"""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any


def _home() -> str:
    return os.environ.get("TERRALOC_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "terraloc")


def public_path(value: str, home: str | None = None) -> str:
    """``value`` unchanged unless it is an absolute path; then relative to ``home``
    (default ``TERRALOC_HOME``) or, outside it, its last component."""
    if not value or not (value.startswith("/") or PurePath(value).is_absolute()) or "\n" in value:
        return value
    home = home if home is not None else _home()
    real = os.path.normpath(value)
    for root in (os.path.normpath(home), os.path.realpath(home)):
        try:
            rel = os.path.relpath(real, root)
        except ValueError:
            continue
        if not rel.startswith(".."):
            return rel
    name = PurePath(real).name
    return name or "."


def public_paths(obj: Any, home: str | None = None) -> Any:
    """A copy of a JSON-ready value with every absolute path string rewritten by :func:`public_path`."""
    if isinstance(obj, str):
        return public_path(obj, home)
    if isinstance(obj, dict):
        return {k: public_paths(v, home) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [public_paths(v, home) for v in obj]
    return obj
