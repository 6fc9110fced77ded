"""The built wheel, installed with its core dependencies only into a fresh virtual environment.

``pip install terraloc`` must give predict / eval / serve: the test builds the wheel from a copy of
the sources, installs it (pip's cache and the machine's configured wheel folders are used; nothing
from this checkout is on the path) and, from a folder outside the repository, runs ``terraloc --help``,
``terraloc eval`` on the shared published predictions, and a reference-database build + prediction
with EfficientNet-Lite0 (its weights come from a core pip package). Optional extras are absent, and
a command that needs one says which in one line.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT_S = 900


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src_copy"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in ("src", "docs"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp / "dist"
    r = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        cwd=tmp,
        env=_clean_env(),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = dist.glob("terraloc-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel_env(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the fresh venv's terraloc script, an environment without this checkout on PYTHONPATH)."""
    wheel, env = built_wheel, _clean_env()
    tmp = tmp_path_factory.mktemp("venv")
    venv_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(venv_dir)
    py = venv_dir / "bin" / "python"
    r = _run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        cwd=tmp,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return venv_dir / "bin" / "terraloc", env


def test_wheel_readme_has_no_repository_relative_links(built_wheel: Path) -> None:
    wheel = built_wheel
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        names = set(zf.namelist())
    body = meta.split("\n\n", 1)[1]
    assert "# terraloc" in body and "`terraloc docs predict`" in body
    assert "](docs/" not in body and "](../" not in body
    assert {"terraloc/docs/README.md", "terraloc/docs/predict.md", "terraloc/docs/ARCHITECTURE.md"} <= names
    requires = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    core = [ln for ln in requires if "extra ==" not in ln]
    for optional in ("ray", "tensorboard", "ai-edge-litert", "llama-cpp-python", "pytest", "sse-starlette"):
        assert not any(ln.split()[1].lower().startswith(optional) for ln in core), optional


@pytest.mark.slow
def test_core_wheel_runs_help_eval_and_refdb_predict_outside_the_repo(
    wheel_env: tuple[Path, dict[str, str]], shared: Path, tmp_path: Path
) -> None:
    terraloc, base_env = wheel_env
    env = dict(base_env, TERRALOC_SHARED=str(shared), TERRALOC_HOME=str(tmp_path / "home"), COLUMNS="200")
    work = tmp_path / "outside"
    work.mkdir()
    py = terraloc.parent / "python"

    r = _run([str(py), "-c", "import terraloc, importlib.util as u; print(terraloc.__file__, u.find_spec('ray'))"],
             cwd=work, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    where, ray_spec = r.stdout.split()
    assert Path(where).is_relative_to(terraloc.parents[1]) and ray_spec == "None"

    r = _run([str(terraloc), "--help"], cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    assert "predict" in r.stdout and "eval" in r.stdout and "serve" in r.stdout

    r = _run([str(terraloc), "docs", "predict"], cwd=work, env=env)
    assert r.returncode == 0 and r.stdout.startswith("# "), r.stderr

    preds = shared / "data/predictions/geoestimation_isns_im2gps3k.csv"
    r = _run(
        [str(terraloc), "eval", "--predictions", str(preds), "--benchmark", "im2gps3k", "--json"], cwd=work, env=env
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["n"] == 2997 and res["coverage"] > 99

    # A 24-photo reference database (manifest in the shared metadata.csv form), then one photo.
    photos = shared / "data/photos/im2gps3k_dev"
    with open(photos / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:25]
    manifest = work / "refs.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "lat", "lon"])
        w.writerows([[str(photos / r["IMG_ID"]), r["LAT"], r["LON"]] for r in rows[:24]])
    r = _run(
        [str(terraloc), "db", "build", "--photos", str(manifest), "--backbone", "efficientnet-lite0", "--out", "db"],
        cwd=work,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    query = photos / rows[24]["IMG_ID"]
    r = _run([str(terraloc), "predict", str(query), "--db", "db", "--format", "csv", "--top-k", "3"], cwd=work, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = list(csv.DictReader(r.stdout.splitlines()))
    assert len(out) == 3 and all(-90 <= float(o["lat"]) <= 90 and -180 <= float(o["lon"]) <= 180 for o in out)

    # A command whose extra is not installed says which one, in one line, exit 2.
    r = _run(
        [str(terraloc), "db", "build", "--photos", str(manifest), "--backbone", "efficientnet-lite0",
         "--out", "db_ray", "--engine", "ray"],
        cwd=work,
        env=env,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "pip install 'terraloc[ray]'" in r.stderr and "Traceback" not in r.stderr
