"""What the service needs from a model: the :class:`Predictor` protocol and its adapters.

The service depends on two methods only, so that any geolocator can be served:

- ``predict(images, top_k)`` takes decoded RGB ``PIL.Image`` objects (the service sniffs, checks
  and decodes uploads itself) and returns one JSON-ready dict per image, exactly the objects
  ``terraloc predict --format json`` writes;
- ``describe()`` returns a JSON-ready dict for ``GET /v1/models`` (model ids, weight hashes,
  configuration).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from terraloc.errors import InputError


@runtime_checkable
class Predictor(Protocol):
    """An object the service can serve."""

    def predict(self, images: list[Image.Image], top_k: int) -> list[dict[str, Any]]:
        """One JSON-ready prediction dict per image, in order."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the loaded model(s)."""
        ...


def import_factory(spec: str) -> Callable[[], Predictor]:
    """Resolve ``"package.module:callable"`` to a zero-argument factory returning a :class:`Predictor`.

    Raises:
        InputError: the spec is malformed, or the module or attribute does not exist.
    """
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise InputError("expected MODULE:CALLABLE", field="--predictor")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InputError(f"cannot import module '{mod_name}': {exc}", field="--predictor") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"'{attr}' is not a callable in module '{mod_name}'", field="--predictor")
    return factory  # type: ignore[no-any-return]
