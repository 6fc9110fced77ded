"""Load test of ``terraloc serve`` (``terraloc bench serve``).

A bounded asyncio client (httpx) runs in *this* process against a server started as a separate
process on a free loopback port: ``clients`` workers each send one request at a time for
``duration_s`` seconds, so at most ``clients`` requests are in flight. Reported: requests/s,
latency percentiles, status counts (5xx other than deliberate 503s is a failure), the server's
RSS before and after the load, and the per-request overhead of the service compared with calling
the predictor directly in-process on the same photos.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from terraloc.errors import InputError

Payload = tuple[str, bytes]


def _percentiles(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    a = np.asarray(ms, dtype=np.float64)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


def _summary(
    clients: int, elapsed: float, statuses: Counter[str], latencies: list[float], extra: dict[str, int] | None = None
) -> dict[str, Any]:
    """A load run's result: counts by status, ``extra`` counts, requests/s, latency percentiles (ms)."""
    ok = statuses.get("200", 0)
    return {
        "clients": clients,
        "duration_s": round(elapsed, 2),
        "requests": sum(statuses.values()),
        "ok": ok,
        "status_counts": dict(sorted(statuses.items())),
        **(extra or {}),
        "req_per_s": round(ok / elapsed, 2) if elapsed > 0 else None,
        **_percentiles(latencies),
        "_latencies": latencies,
    }


async def _load(
    url: str, payloads: list[Payload], clients: int, duration_s: float, top_k: int, api_key: str | None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    retry_afters: list[int] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    t_start = time.perf_counter()
    deadline = t_start + duration_s
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits, headers=headers) as client:

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < deadline:
                name, data = payloads[i % len(payloads)]
                i += clients
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        f"{url}/v1/predict", params={"top_k": top_k}, files={"file": (name, data, "image/jpeg")}
                    )
                except httpx.HTTPError as exc:
                    statuses[f"error:{type(exc).__name__}"] += 1
                    continue
                dt = (time.perf_counter() - t0) * 1000.0
                statuses[str(r.status_code)] += 1
                if r.status_code == 200:
                    latencies.append(dt)
                elif r.status_code == 503:
                    retry_afters.append(int(r.headers.get("retry-after", "1")))
                    await asyncio.sleep(min(5.0, float(retry_afters[-1])))

        await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - t_start
    other_5xx = sum(n for s, n in statuses.items() if s.isdigit() and s.startswith("5") and s != "503")
    extra = {
        "deliberate_503": statuses.get("503", 0),
        "other_5xx": other_5xx,
        "transport_errors": sum(n for s, n in statuses.items() if s.startswith("error:")),
    }
    return _summary(clients, elapsed, statuses, latencies, extra)


async def _slow_upload(host: str, port: int, path: str, hold_s: float, rate_bps: float) -> str:
    """One slow-loris upload: a multipart head, then body bytes at ``rate_bps``; the outcome."""
    body_len = 100_000
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=slowb\r\n"
        f"Content-Length: {body_len}\r\n\r\n--slowb\r\n"
        'Content-Disposition: form-data; name="file"; filename="slow.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return f"connect:{type(exc).__name__}"
    deadline = time.monotonic() + hold_s
    try:
        writer.write(head)
        await writer.drain()
        while time.monotonic() < deadline:
            try:
                line = await asyncio.wait_for(reader.readline(), 1.0 / rate_bps)
            except TimeoutError:
                writer.write(b"x")
                try:
                    await writer.drain()
                except OSError:
                    return "closed"
                continue
            if not line:
                return "closed"
            parts = line.split()
            return parts[1].decode() if len(parts) > 1 else "closed"
        return "still open"
    except OSError:
        return "closed"
    finally:
        writer.close()


async def _slow_clients(
    url: str, payloads: list[Payload], n_slow: int, hold_s: float, rate_bps: float, top_k: int
) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", int(parts.port or 80)
    slow = [asyncio.create_task(_slow_upload(host, port, "/v1/predict", hold_s, rate_bps)) for _ in range(n_slow)]
    await asyncio.sleep(min(1.0, hold_s / 4))  # let every slow upload start
    fast: Counter[str] = Counter()
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
        i = 0
        while not all(t.done() for t in slow) and i < 10_000:
            name, data = payloads[i % len(payloads)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    f"{url}/v1/predict", params={"top_k": top_k}, files={"file": (name, data, "image/jpeg")}
                )
                fast[str(r.status_code)] += 1
                if r.status_code == 200:
                    latencies.append((time.perf_counter() - t0) * 1000.0)
            except httpx.HTTPError as exc:
                fast[f"error:{type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)
    outcomes = Counter(await asyncio.gather(*slow))
    return {
        "slow_clients": n_slow,
        "slow_rate_bytes_per_s": rate_bps,
        "hold_s": hold_s,
        "slow_outcomes": dict(sorted(outcomes.items())),
        "fast_requests": sum(fast.values()),
        "fast_status_counts": dict(sorted(fast.items())),
        **{f"fast_{k}": v for k, v in _percentiles(latencies).items()},
    }


def run_slow_clients(
    url: str, payloads: list[Payload], n_slow: int = 18, hold_s: float = 30.0, rate_bps: float = 1.0, top_k: int = 5
) -> dict[str, Any]:
    """Open ``n_slow`` uploads that trickle their body at ``rate_bps`` for up to ``hold_s`` seconds,
    while one fast client sends normal requests one after another (0.2 s apart).

    Returns:
        ``slow_outcomes`` (status each slow upload got: ``"408"``, ``"closed"``, ``"still open"``, ...),
        ``fast_status_counts`` and the fast client's latency percentiles (``fast_p50_ms``, ...).
    """
    if not payloads:
        raise InputError("no photos to send", field="images")
    return asyncio.run(_slow_clients(url.rstrip("/"), payloads, n_slow, hold_s, rate_bps, top_k))


async def _raw_post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[str, str]]:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers


async def _load_raw(url: str, payloads: list[Payload], clients: int, duration_s: float, top_k: int) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", int(parts.port or 80)
    requests = []
    for name, data in payloads:
        body = (
            b"--rawb\r\n"
            + f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode()
            + b"Content-Type: image/jpeg\r\n\r\n"
            + data
            + b"\r\n--rawb--\r\n"
        )
        head = (
            f"POST /v1/predict?top_k={top_k} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary=rawb\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    t_start = time.perf_counter()
    deadline = t_start + duration_s

    async def worker(w: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        i = w
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    status, headers = await _raw_post(reader, writer, requests[i % len(requests)])
                except (OSError, asyncio.IncompleteReadError) as exc:
                    statuses[f"error:{type(exc).__name__}"] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                i += clients
                statuses[str(status)] += 1
                if status == 200:
                    latencies.append((time.perf_counter() - t0) * 1000.0)
                elif status == 503:
                    await asyncio.sleep(min(5.0, float(headers.get("retry-after", "1"))))
        finally:
            writer.close()

    await asyncio.gather(*(worker(w) for w in range(clients)))
    return _summary(clients, time.perf_counter() - t_start, statuses, latencies)


def run_load_raw(
    url: str, payloads: list[Payload], clients: int = 8, duration_s: float = 60.0, top_k: int = 5
) -> dict[str, Any]:
    """The same load as :func:`run_load` from an independent client: hand-written HTTP/1.1 over
    asyncio streams (one keep-alive connection per client, no HTTP library), to cross-check
    ``run_load``'s requests/s."""
    if not payloads:
        raise InputError("no photos to send", field="images")
    out = asyncio.run(_load_raw(url.rstrip("/"), payloads, clients, duration_s, top_k))
    out.pop("_latencies")
    return out


def run_load(
    url: str,
    payloads: list[Payload],
    clients: int = 8,
    duration_s: float = 60.0,
    top_k: int = 5,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Run ``clients`` concurrent uploaders against ``url`` for ``duration_s`` seconds.

    Returns:
        ``requests``, ``ok``, ``status_counts``, ``deliberate_503``, ``other_5xx``, ``req_per_s``
        (successful requests per second), ``p50_ms``/``p95_ms``/``p99_ms``/``mean_ms`` (latency of
        successful requests, milliseconds).
    """
    if not payloads:
        raise InputError("no photos to send", field="images")
    out = asyncio.run(_load(url.rstrip("/"), payloads, clients, duration_s, top_k, api_key))
    out.pop("_latencies")
    return out


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several runs of the same client (slices of one load test)."""
    counts: Counter[str] = Counter()
    latencies: list[float] = []
    for p in parts:
        counts.update(p["status_counts"])
        latencies += p["_latencies"]
    elapsed = sum(p["duration_s"] for p in parts)
    out = dict(parts[0])
    out.pop("_latencies")
    for key in ("requests", "ok", "deliberate_503", "other_5xx", "transport_errors"):
        if key in out:
            out[key] = sum(p[key] for p in parts)
    out.update(
        duration_s=round(elapsed, 2),
        status_counts=dict(sorted(counts.items())),
        req_per_s=round(out["ok"] / elapsed, 2) if elapsed > 0 else None,
        slices=len(parts),
        **_percentiles(latencies),
    )
    return out


def run_cross_checked_load(
    url: str, payloads: list[Payload], clients: int, duration_s: float, top_k: int, slices: int = 4
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The load of :func:`run_load` and of the independent :func:`run_load_raw`, each for
    ``duration_s`` seconds in total, taking turns in ``slices`` slices so that changes in machine
    load over time hit both alike. Returns ``(httpx_stats, raw_stats)``."""
    if not payloads:
        raise InputError("no photos to send", field="images")
    url = url.rstrip("/")
    a: list[dict[str, Any]] = []
    b: list[dict[str, Any]] = []
    for _ in range(slices):
        a.append(asyncio.run(_load(url, payloads, clients, duration_s / slices, top_k, None)))
        b.append(asyncio.run(_load_raw(url, payloads, clients, duration_s / slices, top_k)))
    return _merge(a), _merge(b)


def sequential_latencies(url: str, payloads: list[Payload], n: int, top_k: int = 5) -> list[float]:
    """Milliseconds of ``n`` one-at-a-time ``POST /v1/predict`` requests (all must succeed)."""
    out = []
    with httpx.Client(timeout=120.0) as client:
        for i in range(n):
            name, data = payloads[i % len(payloads)]
            t0 = time.perf_counter()
            r = client.post(f"{url}/v1/predict", params={"top_k": top_k}, files={"file": (name, data, "image/jpeg")})
            out.append((time.perf_counter() - t0) * 1000.0)
            if r.status_code != 200:
                raise RuntimeError(f"{name}: HTTP {r.status_code}: {r.text[:200]}")
    return out


def direct_latencies(predictor: Any, payloads: list[Payload], n: int, top_k: int = 5) -> list[float]:
    """Milliseconds of ``n`` in-process decode + ``predictor.predict`` calls (what the service wraps)."""
    from terraloc.serve.images import decode_upload

    out = []
    for i in range(n):
        name, data = payloads[i % len(payloads)]
        t0 = time.perf_counter()
        predictor.predict([decode_upload(data, name)], top_k)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def server_rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB."""
    import psutil

    return round(psutil.Process(pid).memory_info().rss / (1024 * 1024), 1)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 300.0) -> None:
    """Poll ``/readyz`` until 200; raise if the server exits, reports a failed load, or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{url}/readyz", timeout=2.0)
            if r.status_code == 200:
                return
            if r.json().get("status") == "failed":
                raise RuntimeError(f"server failed to load its model: {r.json().get('error')}")
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")


@contextlib.contextmanager
def server_process(args: list[str], env: dict[str, str] | None = None, log_path: Path | None = None) -> Iterator[Any]:
    """Start ``python -m terraloc serve ARGS --port P`` on a free loopback port; yield ``(url, proc)``.

    The server's JSON log goes to ``log_path`` (default: a temporary file). SIGINT stops it.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(log_path, "wb") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    cmd = [sys.executable, "-m", "terraloc", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        wait_ready(url, proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


def default_photos(limit: int = 16) -> list[Payload]:
    """Up to ``limit`` shared street-level photos (``data/photos/osv5m``) as ``(name, bytes)``."""
    from terraloc.config import shared_path

    folder = shared_path("data", "photos", "osv5m")
    return photos_from(folder, limit)


def photos_from(folder: Path, limit: int = 16) -> list[Payload]:
    """Up to ``limit`` JPEG/PNG files from ``folder`` (sorted) as ``(name, bytes)``."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:limit]
    if not files:
        raise InputError("no .jpg/.jpeg/.png photos found", path=folder)
    return [(p.name, p.read_bytes()) for p in files]


def run_bench(
    backbone: str | None = None,
    predictor: str | None = None,
    clients: int = 8,
    duration_s: float = 60.0,
    sequential: int = 40,
    images_dir: Path | None = None,
    top_k: int = 5,
    queue_size: int = 8,
    cross_check: bool = True,
) -> dict[str, Any]:
    """Start a server process, measure direct vs served latency, then load it; return the figures.

    Without ``backbone`` or ``predictor`` the Geolocator uses a tiny random CLIP written to a
    temporary folder (``make_tiny_clip``): the service's own costs dominate, as intended.
    """
    payloads = photos_from(images_dir) if images_dir else default_photos()
    # Two torch processes (this one's direct predictor, the server) share the CPU. OpenMP's default
    # spin-wait keeps a process's threads busy for a while after each call, which starves the other
    # process's next call: on 2 cores the in-process p50 measured 4-8x the served one. The server
    # inherits passive waiting from here; this process only gets it from the environment it was
    # started with (OpenMP reads it once, when first loaded), hence the hint in the table.
    omp_at_start = os.environ.get("OMP_WAIT_POLICY")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with contextlib.ExitStack() as stack:
        if predictor is None and backbone is None:
            from terraloc.encoders.image import make_tiny_clip

            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="terraloc-bench-"))
            backbone = str(make_tiny_clip(Path(tmp) / "tiny_clip"))
            label = "Geolocator(geoclip head, tiny random CLIP from make_tiny_clip)"
        else:
            label = predictor or f"Geolocator(geoclip head, backbone={backbone})"
        return _bench(
            backbone,
            predictor,
            label,
            clients,
            duration_s,
            sequential,
            payloads,
            top_k,
            queue_size,
            cross_check,
            omp_at_start,
        )


def _bench(
    backbone: str | None,
    predictor: str | None,
    model: str,
    clients: int,
    duration_s: float,
    sequential: int,
    payloads: list[Payload],
    top_k: int,
    queue_size: int,
    cross_check: bool = True,
    omp_wait_policy: str | None = None,
) -> dict[str, Any]:
    from terraloc.serve.geolocator import geolocator_loader
    from terraloc.serve.predictor import import_factory

    if predictor:
        server_args = ["--predictor", predictor]
        load = import_factory(predictor)
    else:
        bb = str(backbone)
        server_args = ["--backbone", bb]
        load = geolocator_loader(backbone=bb)
    server_args += ["--queue-size", str(queue_size), "--top-k", str(top_k), "--log-level", "warning"]

    with server_process(server_args) as (url, proc):
        # Overhead: the same photo through the in-process predictor and through the server, in
        # alternating order, so that slow drifts in machine load hit both sides of each pair.
        direct = load()
        direct_latencies(direct, payloads, 3, top_k)  # warm-up
        sequential_latencies(url, payloads, 3, top_k)
        direct_ms: list[float] = []
        served_ms: list[float] = []
        for i in range(sequential):
            one = [payloads[i % len(payloads)]]
            if i % 2:
                served_ms += sequential_latencies(url, one, 1, top_k)
                direct_ms += direct_latencies(direct, one, 1, top_k)
            else:
                direct_ms += direct_latencies(direct, one, 1, top_k)
                served_ms += sequential_latencies(url, one, 1, top_k)
        del direct
        gc.collect()
        rss_before = server_rss_mb(proc.pid)
        raw_stats: dict[str, Any] | None = None
        if cross_check:
            load_stats, raw_stats = run_cross_checked_load(url, payloads, clients, duration_s, top_k)
        else:
            load_stats = run_load(url, payloads, clients, duration_s, top_k)
        rss_after = server_rss_mb(proc.pid)
    diffs = np.asarray(served_ms) - np.asarray(direct_ms)
    return {
        "model": model,
        "photos": len(payloads),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "omp_wait_policy": omp_wait_policy,
        "pairs": sequential,
        "direct_p50_ms": round(float(np.median(direct_ms)), 2),
        "served_sequential_p50_ms": round(float(np.median(served_ms)), 2),
        "overhead_per_request_ms": round(float(np.median(diffs)), 2),
        "overhead_iqr_ms": [round(float(np.percentile(diffs, 25)), 2), round(float(np.percentile(diffs, 75)), 2)],
        "load": load_stats,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_growth_pct": round(100.0 * (rss_after - rss_before) / rss_before, 1),
        "cross_check": raw_stats,
    }


def bench_table(result: dict[str, Any]) -> Any:
    """A Rich table of :func:`run_bench` figures."""
    from rich.table import Table

    ld = result["load"]
    t = Table(title=f"terraloc bench serve — {result['model']}", show_header=True)
    t.add_column("measure")
    t.add_column("value", justify="right")
    rows = [
        ("clients x duration", f"{ld['clients']} x {ld['duration_s']} s"),
        (
            "requests (200 / 503 / other 5xx / transport errors)",
            f"{ld['ok']} / {ld['deliberate_503']} / {ld['other_5xx']} / {ld['transport_errors']}",
        ),
        ("throughput", f"{ld['req_per_s']} req/s"),
        *(
            [
                (
                    "throughput, independent raw-HTTP client (same load, taking turns)",
                    f"{result['cross_check']['req_per_s']} req/s (p50 {result['cross_check']['p50_ms']} ms)",
                )
            ]
            if result.get("cross_check")
            else []
        ),
        ("latency p50 / p95 / p99 under load", f"{ld['p50_ms']} / {ld['p95_ms']} / {ld['p99_ms']} ms"),
        ("direct decode+predict p50 (in-process)", f"{result['direct_p50_ms']} ms"),
        ("served p50, one client at a time", f"{result['served_sequential_p50_ms']} ms"),
        (
            "service overhead per request (median of paired differences, IQR)",
            "{} ms ({} .. {})".format(result["overhead_per_request_ms"], *result["overhead_iqr_ms"]),
        ),
        ("machine load average (1 min) at the end", str(result["load_average_1m"])),
        *(
            [("note", "start with OMP_WAIT_POLICY=PASSIVE for a fair direct-vs-served overhead on few cores")]
            if result.get("omp_wait_policy") is None
            else []
        ),
        (
            "server RSS before -> after load",
            f"{result['rss_before_mb']} -> {result['rss_after_mb']} MiB ({result['rss_growth_pct']:+.1f}%)",
        ),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t
