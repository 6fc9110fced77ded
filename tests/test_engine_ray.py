"""The Ray engine on a real local cluster (one per module): same answers as the local engine,
kill-and-resume, and a worker that dies mid-run.

The cluster is started with ``ray start --head --block`` on loopback in its own process group and
its own temp folder, joined by address, and stopped by terminating that process (not ``ray stop``,
which would stop every Ray process on a shared machine).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

TINY = "data/reference/geoclip_predict/tiny_clip"
SRC = Path(__file__).resolve().parents[1] / "src"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[misc]
    import tempfile

    gcs, nm, om, agent, rt, metrics = _free_ports(6)
    temp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths must stay short
    # A test cluster on this machine only: no token (~/.ray/auth_token is shared by every Ray user of
    # the machine, and another cluster starting may replace it); the driver and the CLI runs inherit it.
    saved_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    cmd = [ray_bin, "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
           "--include-dashboard=false", f"--temp-dir={temp}", f"--node-manager-port={nm}",
           f"--object-manager-port={om}", f"--dashboard-agent-listen-port={agent}",
           f"--runtime-env-agent-port={rt}", f"--metrics-export-port={metrics}",
           "--object-store-memory=200000000", "--disable-usage-stats"]  # fmt: skip
    log = open(Path(temp) / "ray-start.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{gcs}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited: {(Path(temp) / 'ray-start.log').read_text()[-2000:]}")
            if "block forever" in (Path(temp) / "ray-start.log").read_text():
                break
            if time.time() > deadline:
                pytest.fail("ray start did not come up in 120 s")
            time.sleep(0.5)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group this fixture started
        if saved_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_auth
        log.close()


@pytest.fixture(scope="module")
def inputs(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared photos (30 Im2GPS3k + 20 OSV-5M) with two broken files in between."""
    d = tmp_path_factory.mktemp("ray-inputs")
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes((shared / "data/photos/osv5m/1105240373293389.jpg").read_bytes()[:300])
    photos = [str(p) for p in sorted((shared / "data/photos/im2gps3k_dev").glob("*.jpg"))[:30]]
    photos += [str(p) for p in sorted((shared / "data/photos/osv5m").glob("*.jpg"))[:20]]
    photos.insert(13, str(d / "empty.jpg"))
    photos.insert(40, str(d / "truncated.jpg"))
    pd.DataFrame({"path": photos}).to_csv(d / "photos.csv", index=False)
    return d / "photos.csv"


def _rows(out: Path) -> pd.DataFrame:
    man = json.loads((out / "manifest.json").read_text())
    df = pd.concat([pq.read_table(out / p["file"]).to_pandas() for p in man["parts"]], ignore_index=True)
    return df.sort_values(["index"] + (["rank"] if "rank" in df else [])).reset_index(drop=True)


def _errors(out: Path) -> list[dict[str, str]]:
    with open(out / "errors.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def local_embeddings(shared: Path, inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from terraloc.engine import EmbedSpec, make_engine, read_work_items, run_job

    out = tmp_path_factory.mktemp("local") / "emb"
    run_job(EmbedSpec(str(shared / TINY), batch_size=8), read_work_items(inputs), out, make_engine("local"),
            part_size=10)  # fmt: skip
    return out


def _same_embeddings(a: Path, b: Path) -> None:
    ra, rb = _rows(a), _rows(b)
    assert ra["index"].is_unique and rb["index"].is_unique
    pd.testing.assert_frame_equal(ra[["index", "id", "path"]], rb[["index", "id", "path"]])
    np.testing.assert_allclose(np.stack(ra["embedding"]), np.stack(rb["embedding"]), atol=1e-5)
    assert _errors(a) == _errors(b)


def test_ray_equals_local_embeddings_and_a_dead_worker_is_retried(
    shared: Path, inputs: Path, cluster: str, local_embeddings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from terraloc.engine import EmbedSpec, make_engine, read_work_items, run_job

    items = read_work_items(inputs)
    spec = EmbedSpec(str(shared / TINY), batch_size=8)
    out = tmp_path / "ray"
    s = run_job(spec, items, out, make_engine("ray", workers=2, ray_address=cluster), part_size=10)
    assert (s.done, s.failed, s.engine, s.parts_written) == (50, 2, "ray", 6)
    _same_embeddings(local_embeddings, out)
    errs = _errors(out)
    assert [e["path"].rsplit("/", 1)[-1] for e in errs] == ["empty.jpg", "truncated.jpg"]
    assert [e["index"] for e in errs] == ["13", "40"] and all(e["reason"] for e in errs)

    # a worker process that dies after computing a partition (before writing it): Ray restarts the
    # actor and runs the partition again; nothing lost, nothing twice
    marker = tmp_path / "crashed"
    monkeypatch.setenv("TERRALOC_ENGINE_FAULT", f"exit-once:{marker}")
    out2 = tmp_path / "ray-crash"
    s2 = run_job(spec, items, out2, make_engine("ray", workers=2, ray_address=cluster), part_size=10)
    assert marker.exists() and int(marker.read_text()) > 0  # a worker really exited
    assert s2.done == 50 and s2.parts_written == 6
    _same_embeddings(local_embeddings, out2)


def test_ray_equals_local_predictions(shared: Path, inputs: Path, cluster: str, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from terraloc.engine.predictions import iter_predictions

    db = tmp_path / "db"
    r = cli("db", "build", "--photos", shared / "data/photos/osv5m/osv5m_photos.csv", "--backbone", shared / TINY,
            "--out", db, "--engine", "ray", "--ray-address", cluster, "--workers", "2", "--no-progress")  # fmt: skip
    assert r.code == 0, r.err
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / f"preds-{engine}.csv"
        r = cli("predict", "--db", db, inputs, "--engine", engine, "--out", outs[engine], "--top-k", "3",
                "--part-size", "16", *(["--ray-address", cluster] if engine == "ray" else []))  # fmt: skip
        assert r.code == 2 and "50 done" in r.err and "2 failed" in r.err, r.err
    a = list(iter_predictions(tmp_path / "preds-local.csv.parts"))
    b = list(iter_predictions(tmp_path / "preds-ray.csv.parts"))
    assert len(a) == len(b) == 52
    for x, y in zip(a, b, strict=True):
        assert (x.image, x.error) == (y.image, y.error)
        assert len(x.candidates) == len(y.candidates)
        for c, d in zip(x.candidates, y.candidates, strict=True):
            assert (c.rank, c.city) == (d.rank, d.city)
            assert abs(c.lat - d.lat) < 1e-5 and abs(c.lon - d.lon) < 1e-5 and abs(c.probability - d.probability) < 1e-5
    assert _errors(tmp_path / "preds-local.csv.parts") == _errors(tmp_path / "preds-ray.csv.parts")
    # the merged files hold the same rows (numbers can differ in the last printed digit: thread counts)
    la, lb = outs["local"].read_text().splitlines(), outs["ray"].read_text().splitlines()
    assert len(la) == len(lb) and [r.split(",")[0] for r in la] == [r.split(",")[0] for r in lb]


def test_killed_driver_resumes_to_the_same_output(
    shared: Path, inputs: Path, cluster: str, local_embeddings: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "terraloc", "embed", "--photos", str(inputs), "--out", str(out), "--backbone",
           str(shared / TINY), "--batch-size", "8", "--engine", "ray", "--ray-address", cluster, "--workers", "2",
           "--part-size", "10", "--no-progress", "--no-coords"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while len(list((out / "parts").glob("part-*.parquet"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.time() < deadline, "no part written in 180 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list((out / "parts").glob("part-*.parquet")))
    assert not (out / "manifest.json").exists() and finished < 6
    r = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["skipped"] >= 20 and summary["skipped"] + summary["done"] + summary["failed"] >= 52
    _same_embeddings(local_embeddings, out)
