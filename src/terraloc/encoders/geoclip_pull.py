"""``terraloc models pull geoclip``: fetch GeoCLIP's weights and gallery without installing its code.

The ``geoclip`` 1.3.0 wheel is downloaded by the running Python's own pip (``pip download --no-deps``,
so whatever index, proxy or find-links the user configured applies) into a temporary folder; only
the four asset files are read out of it, each checked against its pinned SHA-256, written to a
temporary folder beside the target and renamed into ``$TERRALOC_HOME/models/geoclip/`` in one step.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from terraloc.encoders.geoclip_assets import ASSETS, GEOCLIP_VERSION, SHA256, _rel, pulled_dir
from terraloc.errors import InputError, MissingResourceError


def _pip_download(dest: Path, pip_args: Sequence[str]) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", "-d", str(dest), *pip_args, f"geoclip=={GEOCLIP_VERSION}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip().startswith("ERROR")]
        why = lines[-1] if lines else f"pip exited with status {proc.returncode}"
        raise MissingResourceError(f"could not download geoclip=={GEOCLIP_VERSION} with pip ({why})")
    wheels = sorted(dest.glob(f"geoclip-{GEOCLIP_VERSION}-*.whl"))
    if not wheels:
        raise MissingResourceError(f"pip download did not produce a geoclip {GEOCLIP_VERSION} wheel in {dest}")
    return wheels[0]


def extract_assets(wheel: Path, target: Path) -> None:
    """Copy the four assets out of ``wheel`` into ``target`` (atomically), checking each SHA-256.

    Raises:
        InputError: the wheel is not a zip, lacks an asset, or an asset's hash differs.
    """
    staging = Path(tempfile.mkdtemp(prefix=".geoclip-", dir=target.parent))
    staging.chmod(0o755)
    try:
        try:
            zf = zipfile.ZipFile(wheel)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"not a wheel ({exc})", path=wheel) from None
        with zf:
            names = set(zf.namelist())
            for name, rel in ASSETS.items():
                if rel not in names:
                    raise InputError(f"the wheel has no {rel}", path=wheel)
                out = staging / _rel(name)
                out.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with zf.open(rel) as src, open(out, "wb") as dst:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        dst.write(chunk)
                if h.hexdigest() != SHA256[name]:
                    raise InputError(
                        f"{rel}: SHA-256 {h.hexdigest()[:16]}… differs from geoclip {GEOCLIP_VERSION}'s "
                        f"{SHA256[name][:16]}…; nothing was installed",
                        path=wheel,
                    )
        (staging / "SOURCE").write_text(f"geoclip=={GEOCLIP_VERSION} ({wheel.name})\n")
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def pulled_complete(folder: Path | None = None) -> bool:
    """Whether ``folder`` (default the pull target) holds all four assets."""
    folder = pulled_dir() if folder is None else folder
    return all((folder / _rel(n)).is_file() for n in ASSETS)


def pull_geoclip(
    *,
    wheel: str | Path | None = None,
    pip_args: Sequence[str] = (),
    force: bool = False,
    on_status: Callable[[str], None] | None = None,
) -> Path:
    """Fetch the GeoCLIP assets into ``$TERRALOC_HOME/models/geoclip`` and return that folder.

    Args:
        wheel: a local geoclip wheel file to read instead of downloading one.
        pip_args: extra ``pip download`` arguments (e.g. ``["--no-index", "--find-links", DIR]``).
        force: fetch again even when the folder is complete.
        on_status: receives one-line progress messages.
    """
    say = on_status or (lambda _msg: None)
    target = pulled_dir()
    if not force and pulled_complete(target):
        say(f"GeoCLIP assets already on disk: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file():
            raise InputError("file not found", path=wheel, field="--wheel")
        say(f"reading {wheel}")
        extract_assets(wheel, target)
    else:
        with tempfile.TemporaryDirectory(prefix="geoclip-wheel-") as tmp:
            say(f"downloading geoclip=={GEOCLIP_VERSION} with pip (40 MB; its code is not installed)")
            extract_assets(_pip_download(Path(tmp), pip_args), target)
    say(f"saved GeoCLIP's weights and 100K gallery to {target}")
    return target
