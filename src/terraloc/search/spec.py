"""Index specs as one string: ``flat``, ``hierarchical@OPTIONS`` or ``<FAISS factory string>@PARAMS``.

Used by ``terraloc predict --index``, ``GeolocatorConfig.index`` and ``terraloc bench search
--backends`` so every front end reads the same vocabulary::

    flat
    hierarchical@spill=0.06,routing=learned,leaf_beam=16,parent_weight=0.015
    IVF1024,Flat@nprobe=16            # FAISS factory string, then its search parameters
    HNSW32                            # FAISS default search parameters below apply

FAISS specs without ``@PARAMS`` get :data:`DEFAULT_FAISS_PARAMS` (``nprobe=16`` for IVF,
``efSearch=64`` for HNSW), because FAISS's own defaults (``nprobe=1``) are rarely what is meant.
"""

from __future__ import annotations

from typing import Any

from terraloc.errors import InputError

#: search-time parameters used unless a FAISS spec gives its own with ``SPEC@params``
DEFAULT_FAISS_PARAMS = {"IVF": "nprobe=16", "HNSW": "efSearch=64"}
#: hierarchical options whose values are words, not numbers (``hierarchical@routing=learned``)
TEXT_OPTIONS = frozenset({"routing"})


def parse_index_spec(text: str, *, field: str = "index") -> tuple[str, dict[str, Any]]:
    """``"SPEC@OPTIONS"`` → ``(spec, options)`` for :func:`terraloc.search.make_index` / ``Gallery.index``.

    ``flat`` and ``hierarchical`` take ``key=value`` options (numbers, or words for
    :data:`TEXT_OPTIONS`); anything else is a FAISS factory string whose ``@`` part is a FAISS
    ParameterSpace string passed as ``params``.

    Raises:
        InputError: empty spec, or a malformed ``key=value`` option (naming ``field``).
    """
    spec, _, params = text.strip().partition("@")
    spec = spec.strip()
    if not spec:
        raise InputError(f"empty index spec '{text}'", field=field)
    if spec.lower() in ("flat", "hierarchical"):
        opts: dict[str, Any] = {}
        for kv in filter(None, (p.strip() for p in params.split(","))):
            key, _, value = kv.partition("=")
            if not value.strip() or not key.strip():
                raise InputError(f"expected key=value in '{text}', got '{kv}'", field=field)
            key = key.strip()
            opts[key] = value.strip() if key in TEXT_OPTIONS else _number(value.strip(), text, field)
        return spec.lower(), opts
    if not params:
        params = next((v for k, v in DEFAULT_FAISS_PARAMS.items() if k in spec), "")
    return spec, ({"params": params} if params else {})


def format_index_spec(spec: str, options: dict[str, Any]) -> str:
    """The inverse of :func:`parse_index_spec` (``IVF1024,Flat@nprobe=16``)."""
    if not options:
        return spec
    if set(options) == {"params"}:
        return f"{spec}@{options['params']}"
    return f"{spec}@" + ",".join(f"{k}={v}" for k, v in options.items())


def _number(value: str, text: str, field: str) -> Any:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            raise InputError(f"option value '{value}' in '{text}' is not a number", field=field) from None
