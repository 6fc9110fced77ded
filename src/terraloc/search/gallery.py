"""GPS galleries on disk: coordinates, their normalised location embeddings and a manifest.

A gallery is a directory::

    <dir>/manifest.json     format, encoder_id, weights_hash, dim, dtype, count, created, files
    <dir>/coords.npy        (N, 2) float64 (lat, lon) degrees
    <dir>/embeddings.npy    (N, D) float16 or float32, each row L2-normalised
    <dir>/indexes/          search indexes built over this gallery (see :meth:`Gallery.index`)

Loading memory-maps the embeddings (nothing is re-encoded) and refuses a gallery whose manifest
does not match the encoder in use, a missing manifest, and a truncated or foreign embeddings file.

Building is atomic and resumable: rows are embedded into ``<dir>.partial/`` in chunks, progress
is recorded after each chunk, and the finished folder is renamed to ``<dir>`` only when complete,
so an interrupted build never leaves a gallery that loads; running the build again resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from terraloc.errors import InputError, MissingResourceError
from terraloc.io import atomic_write_text, read_tagged_json

if TYPE_CHECKING:
    from terraloc.encoders.location import LocationEncoder
    from terraloc.search.index import SearchIndex

GALLERY_FORMAT = "terraloc-gallery"
GALLERY_VERSION = 1
MANIFEST = "manifest.json"
COORDS_FILE = "coords.npy"
EMBEDDINGS_FILE = "embeddings.npy"
DTYPES = ("float16", "float32")
#: rows whose norm is checked on load (catches foreign files of the right shape)
_NORM_CHECK_ROWS = 1024
_NORM_TOL = {"float16": 5e-3, "float32": 1e-4}

ProgressFn = Callable[[int, int], None]
"""``progress(done_rows, total_rows)`` called after each embedded chunk."""


@dataclass
class Gallery:
    """A loaded GPS gallery.

    Attributes:
        coords: ``(N, 2)`` float64 ``(lat, lon)`` degrees.
        embeddings: ``(N, D)`` L2-normalised float16/float32, memory-mapped read-only.
        manifest: the parsed ``manifest.json``.
        path: the gallery directory.
    """

    coords: NDArray[np.float64]
    embeddings: np.ndarray
    manifest: dict[str, Any]
    path: Path
    _indexes: dict[str, SearchIndex] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.embeddings.shape[1])

    @property
    def encoder_id(self) -> str:
        return str(self.manifest["encoder_id"])

    @property
    def weights_hash(self) -> str:
        return str(self.manifest["weights_hash"])

    @classmethod
    def load(cls, path: str | Path, encoder: LocationEncoder | None = None) -> Gallery:
        """Load a gallery directory, memory-mapping its embeddings.

        Args:
            path: the gallery directory.
            encoder: when given, the manifest must name this encoder (``encoder_id`` and
                ``weights_hash``), otherwise the gallery is refused.

        Raises:
            MissingResourceError: the directory, manifest or a data file is missing.
            InputError: the manifest is malformed or does not match ``encoder``, or a data file is
                truncated, of the wrong shape/dtype, or not a gallery file.
        """
        path = Path(path)
        if not path.is_dir():
            hint = " (an interrupted build left a .partial folder; rerun the build)" if _partial(path).exists() else ""
            raise MissingResourceError(f"{path}: gallery folder not found{hint}")
        manifest = read_manifest(path)
        if encoder is not None:
            check_encoder(manifest, encoder, path)
        count, dim, dtype = manifest["count"], manifest["dim"], manifest["dtype"]
        coords = _load_npy(path / manifest.get("coords_file", COORDS_FILE), (count, 2), "float64", mmap=False)
        emb = _load_npy(path / manifest.get("embeddings_file", EMBEDDINGS_FILE), (count, dim), dtype, mmap=True)
        _check_normalised(emb, path / EMBEDDINGS_FILE, dtype)
        return cls(coords=coords, embeddings=emb, manifest=manifest, path=path)

    def index(self, spec: str = "flat", *, cache: bool = True, **options: Any) -> SearchIndex:
        """A search index over this gallery, loaded from ``indexes/`` when saved before.

        ``flat`` is built in memory (nothing to save); ``hierarchical`` and FAISS indexes are built
        once and saved under ``<gallery>/indexes/`` (atomically) when ``cache`` is true.
        """
        from terraloc.search.index import cached_index

        key = json.dumps([spec, sorted(options.items())], default=str)
        if key not in self._indexes:
            self._indexes[key] = cached_index(self.path, self.embeddings, spec, cache=cache, **options)
        return self._indexes[key]


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and validate ``<path>/manifest.json``."""
    mpath = path / MANIFEST
    if not mpath.exists():
        raise MissingResourceError(f"{mpath}: gallery manifest missing; rebuild with `terraloc gallery build`")
    manifest = read_tagged_json(mpath, GALLERY_FORMAT, "gallery manifest", "gallery manifest is not valid JSON")
    for key, typ in (("encoder_id", str), ("weights_hash", str), ("dim", int), ("count", int), ("dtype", str)):
        if not isinstance(manifest.get(key), typ):
            raise InputError(f"missing or invalid '{key}'", path=mpath, field=key)
    if manifest["dtype"] not in DTYPES:
        raise InputError(f"dtype '{manifest['dtype']}' is not one of {', '.join(DTYPES)}", path=mpath, field="dtype")
    if manifest["count"] < 1 or manifest["dim"] < 1:
        raise InputError("count and dim must be positive", path=mpath, field="count")
    return manifest


def check_encoder(manifest: dict[str, Any], encoder: LocationEncoder, path: Path) -> None:
    """Refuse a gallery built with another encoder (id or weights)."""
    want = (encoder.encoder_id, encoder.weights_hash)
    have = (manifest["encoder_id"], manifest["weights_hash"])
    if want != have:
        raise InputError(
            f"gallery was built with encoder {have[0]} (weights {have[1]}) but the encoder in use is "
            f"{want[0]} (weights {want[1]}); rebuild it with `terraloc gallery build`",
            path=path / MANIFEST,
        )


def _load_npy(file: Path, shape: tuple[int, int], dtype: str, *, mmap: bool) -> np.ndarray:
    if not file.exists():
        raise MissingResourceError(f"{file}: gallery data file missing")
    try:
        with open(file, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            hshape, fortran, hdtype = reader(fh)
            offset = fh.tell()
    except (ValueError, OSError) as exc:
        raise InputError(f"not a NumPy .npy file ({str(exc).splitlines()[0]})", path=file) from None
    if tuple(hshape) != shape or np.dtype(hdtype) != np.dtype(dtype) or fortran:
        raise InputError(
            f"holds a {np.dtype(hdtype).name} array of shape {tuple(hshape)}, the manifest says {dtype} {shape}",
            path=file,
        )
    expected = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = file.stat().st_size
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise InputError(f"file is {what} ({size} bytes, expected {expected})", path=file)
    if mmap:
        return np.load(file, mmap_mode="r")
    return np.load(file)


def _check_normalised(emb: np.ndarray, file: Path, dtype: str) -> None:
    n = min(len(emb), _NORM_CHECK_ROWS)
    rows = np.asarray(emb[:n], dtype=np.float32)
    if not np.isfinite(rows).all():
        raise InputError("embeddings contain non-finite values", path=file)
    norms = np.linalg.norm(rows, axis=1)
    if np.abs(norms - 1).max() > _NORM_TOL[dtype]:
        raise InputError("embeddings are not L2-normalised (not a terraloc gallery file?)", path=file)


def read_coords_file(path: str | Path) -> NDArray[np.float64]:
    """Read ``(N, 2)`` coordinates from a CSV (columns lat/lon, any case) or an ``(N, 2)`` ``.npy``.

    Raises:
        InputError: naming the file, line and field of the first bad value.
    """
    from terraloc.geo.coords import validate_latlon
    from terraloc.table import parse_float_column, read_csv

    path = Path(path)
    if path.suffix == ".npy":
        if not path.exists():
            raise MissingResourceError(f"{path}: file not found")
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"cannot read .npy ({exc})", path=path) from None
        return validate_latlon(arr, source=str(path))
    df = read_csv(path)
    cols = {c.lower(): c for c in df.columns if c != "_line"}
    names = []
    for want, alts in (("lat", ("lat", "latitude")), ("lon", ("lon", "lng", "longitude"))):
        hit = next((cols[a] for a in alts if a in cols), None)
        if hit is None:
            raise InputError(f"missing column '{want}'; found {', '.join(cols.values()) or 'none'}", path=path)
        names.append(hit)
    if len(df) == 0:
        raise InputError("no coordinate rows", path=path)
    lat = parse_float_column(df, names[0], path).values
    lon = parse_float_column(df, names[1], path).values
    return validate_latlon(np.stack([lat, lon], axis=1), source=str(path), rows=df["_line"].to_numpy())


def geoclip_gallery_coords() -> NDArray[np.float64]:
    """GeoCLIP's 100K MP-16 GPS gallery: ``(100000, 2)`` float64 ``(lat, lon)`` degrees.

    The one reader of ``coordinates_100K.csv`` from the ``geoclip`` wheel (galleries, the search
    benchmark, geocell partitions and the synthetic training world all use it).
    """
    from terraloc.encoders.geoclip_assets import geoclip_asset

    return read_coords_file(geoclip_asset("gps_gallery"))


def coords_fingerprint(coords: NDArray[np.float64]) -> str:
    """SHA-256 prefix of the float64 coordinate bytes (identifies a gallery's points)."""
    return hashlib.sha256(np.ascontiguousarray(coords, dtype=np.float64).tobytes()).hexdigest()[:16]


def build_gallery(
    coords: NDArray[np.float64],
    encoder: LocationEncoder,
    out_dir: str | Path,
    *,
    dtype: str = "float32",
    batch_size: int = 8192,
    chunk_rows: int = 65536,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    extra: dict[str, Any] | None = None,
    reuse_existing: bool = False,
    prefix_embeddings: np.ndarray | None = None,
) -> Gallery:
    """Embed ``coords`` with ``encoder`` and write a gallery directory atomically (resumable).

    Args:
        coords: ``(N, 2)`` ``(lat, lon)`` degrees (validated).
        encoder: the location encoder; its ``encoder_id``/``weights_hash`` go into the manifest.
        out_dir: the gallery directory to create.
        dtype: ``float32`` or ``float16`` embeddings on disk (normalised in float32 first).
        batch_size: rows per encoder forward pass.
        chunk_rows: rows embedded between progress records (the resume granularity).
        overwrite: replace an existing gallery at ``out_dir``.
        progress: called with ``(done, total)`` rows after each chunk.
        extra: additional manifest entries (e.g. how the coordinates were made).
        reuse_existing: load a complete gallery already at ``out_dir`` instead of failing.
        prefix_embeddings: ``(M, D)`` normalised embeddings of ``coords[:M]`` already computed with
            the same encoder (e.g. a smaller gallery whose points these extend); copied, not re-encoded.

    Returns:
        The loaded gallery.
    """
    from terraloc.geo.coords import validate_latlon

    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got '{dtype}'", field="dtype")
    coords = validate_latlon(coords, source="coords")
    if len(coords) == 0:
        raise InputError("no coordinates to embed", field="coords")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(out_dir):
        if reuse_existing and (out_dir / MANIFEST).exists():
            return Gallery.load(out_dir, encoder)
        if out_dir.exists() and not overwrite:
            raise InputError("already exists (use --overwrite to replace it)", path=out_dir)
        return _build_locked(
            coords, encoder, out_dir, dtype, batch_size, chunk_rows, progress, extra, prefix_embeddings
        )


@contextlib.contextmanager
def _build_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive lock so two processes never build the same gallery at once (the second waits)."""
    import fcntl

    with open(out_dir.with_name(out_dir.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _build_locked(
    coords: NDArray[np.float64],
    encoder: LocationEncoder,
    out_dir: Path,
    dtype: str,
    batch_size: int,
    chunk_rows: int,
    progress: ProgressFn | None,
    extra: dict[str, Any] | None,
    prefix: np.ndarray | None = None,
) -> Gallery:
    import torch

    n = len(coords)
    dim = int(getattr(encoder, "out_dim", 512))
    fp = coords_fingerprint(coords)
    tmp = _partial(out_dir)
    state_file = tmp / "progress.json"
    state = {"encoder_id": encoder.encoder_id, "weights_hash": encoder.weights_hash, "dtype": dtype,
             "count": n, "dim": dim, "coords_sha256": fp, "done": 0}  # fmt: skip
    done = 0
    if state_file.exists():
        with contextlib.suppress(ValueError, OSError):
            old = json.loads(state_file.read_text(encoding="utf-8"))
            if {k: old.get(k) for k in state if k != "done"} == {k: v for k, v in state.items() if k != "done"}:
                done = int(old["done"])
    if done == 0 and tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    emb_file = tmp / EMBEDDINGS_FILE
    if done == 0:
        np.save(tmp / COORDS_FILE, coords)
        emb = np.lib.format.open_memmap(emb_file, mode="w+", dtype=np.dtype(dtype), shape=(n, dim))
    else:
        emb = np.lib.format.open_memmap(emb_file, mode="r+")
    if prefix is not None and done < len(prefix):
        if prefix.shape[1] != dim or len(prefix) > n:
            raise InputError(f"prefix embeddings of shape {prefix.shape} do not fit {n} x {dim}")
        for b in range(done, len(prefix), chunk_rows):
            end = min(b + chunk_rows, len(prefix))
            emb[b:end] = np.asarray(prefix[b:end]).astype(dtype)
        emb.flush()
        done = len(prefix)
        state["done"] = done
        atomic_write_text(state_file, json.dumps(state))
    if progress:
        progress(done, n)
    coords_t = torch.from_numpy(coords.astype(np.float32))
    with torch.inference_mode():
        while done < n:
            stop = min(n, done + chunk_rows)
            e = encoder.encode(coords_t[done:stop], batch_size=batch_size, normalize=True)
            emb[done:stop] = e.numpy().astype(dtype)
            emb.flush()
            done = stop
            state["done"] = done
            atomic_write_text(state_file, json.dumps(state))
            if progress:
                progress(done, n)
    del emb
    manifest = {
        "format": GALLERY_FORMAT,
        "version": GALLERY_VERSION,
        "encoder_id": encoder.encoder_id,
        "weights_hash": encoder.weights_hash,
        "dim": dim,
        "dtype": dtype,
        "count": n,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "coords_file": COORDS_FILE,
        "embeddings_file": EMBEDDINGS_FILE,
        "coords_sha256": fp,
        **(extra or {}),
    }
    state_file.unlink()
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2))
    _fsync_dir(tmp)
    if out_dir.exists():
        old_dir = out_dir.with_name(out_dir.name + f".old-{os.getpid()}")
        os.replace(out_dir, old_dir)
        os.replace(tmp, out_dir)
        shutil.rmtree(old_dir, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    return Gallery.load(out_dir, encoder)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def galleries_dir() -> Path:
    """``home_dir()/galleries``, where default and benchmark galleries are cached."""
    from terraloc.config import home_dir

    path = home_dir() / "galleries"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_gallery(
    encoder: LocationEncoder | None = None, *, dtype: str = "float32", progress: ProgressFn | None = None
) -> Gallery:
    """GeoCLIP's 100K MP-16 GPS gallery embedded with ``encoder`` (default: GeoCLIP's).

    Built once (about a minute on two cores) and cached under ``home_dir()/galleries/``; later
    calls only memory-map it.
    """
    if encoder is None:
        from terraloc.encoders import load_location_encoder

        encoder = load_location_encoder("geoclip")
    out = galleries_dir() / f"geoclip-100k-{encoder.encoder_id}-{encoder.weights_hash}-{dtype}"
    if (out / MANIFEST).exists():
        return Gallery.load(out, encoder)
    from terraloc.progress import callback, finish

    coords = geoclip_gallery_coords()
    what = "building the GeoCLIP gallery cache (first use only)"
    try:
        return build_gallery(
            coords,
            encoder,
            out,
            dtype=dtype,
            progress=progress or callback(what),
            reuse_existing=True,
            overwrite=True,
            extra={"source": "geoclip-100k"},
        )
    finally:
        finish(what)
