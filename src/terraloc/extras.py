"""Optional dependencies: import one, or say in one line which extra installs it.

``pip install terraloc`` (the core) covers predict, eval and serve. The rest lives in extras
(``ray``, ``llm``, ``train``, ``segment``, ``onnx``; ``all`` for everything), imported lazily by
the code that needs them through :func:`require`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from terraloc.errors import MissingResourceError

#: extra name -> what it enables (shown in the error message)
EXTRAS: dict[str, str] = {
    "ray": "the Ray engine (--engine ray)",
    "llm": "local LLM reasoning (llama.cpp)",
    "train": "training logs (TensorBoard; or pass --no-tensorboard)",
    "segment": "semantic segmentation (TFLite runtime)",
    "onnx": "ONNX export and ONNX Runtime inference",
}


def install_hint(extra: str) -> str:
    """The pip command that installs an extra, e.g. ``pip install 'terraloc[ray]'``."""
    return f"pip install 'terraloc[{extra}]'"


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` (a dotted name) or raise a one-line error naming the extra that installs it.

    Raises:
        MissingResourceError: the module (or one of its own dependencies) is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = EXTRAS.get(extra, f"the '{extra}' extra")
        missing = getattr(exc, "name", None) or module
        raise MissingResourceError(
            f"{what} needs the optional package '{missing}', which is not installed; install: {install_hint(extra)}"
        ) from None
