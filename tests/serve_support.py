"""Helpers for the serve tests: a free loopback port, a real uvicorn server in a thread, and
``ColourPredictor``, a small but real predictor used as a TEST FIXTURE where a model's speed
must be controlled (it is not a model: it maps an image's mean colour to places)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import uvicorn
from PIL import Image

# (city, admin1, country, lat, lon)
_PLACES = [
    ("Paris", "Ile-de-France", "FR", 48.8566, 2.3522),
    ("Nairobi", "Nairobi Area", "KE", -1.2864, 36.8172),
    ("Lima", "Lima", "PE", -12.0464, -77.0428),
    ("Osaka", "Osaka", "JP", 34.6937, 135.5023),
    ("Reykjavik", "Capital Region", "IS", 64.1466, -21.9426),
    ("Perth", "Western Australia", "AU", -31.9523, 115.8613),
    ("Denver", "Colorado", "US", 39.7392, -104.9903),
    ("Cairo", "Cairo", "EG", 30.0444, 31.2357),
    ("Mumbai", "Maharashtra", "IN", 19.0760, 72.8777),
    ("Santiago", "Santiago Metropolitan", "CL", -33.4489, -70.6693),
]


class ColourPredictor:
    """TEST FIXTURE: deterministic predictions from an image's mean colour.

    Each place has a fixed colour; the softmax of the negative colour distances gives the
    probabilities. ``delay_s`` adds a fixed cost per call and ``gate`` (a ``threading.Event``)
    holds each call until it is set, so tests can fill the service's queue deterministically.
    """

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None, rag: bool = False) -> None:
        rng = np.random.default_rng(0)
        self.colours = rng.uniform(0, 255, size=(len(_PLACES), 3))
        self.delay_s = delay_s
        self.gate = gate
        self.rag = rag  # add retrieval-augmented fields (reason, reference photos) like the RAG stage
        self.calls = 0

    def predict(self, images: list[Image.Image], top_k: int) -> list[dict[str, Any]]:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(30)
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for img in images:
            assert img.mode == "RGB"
            mean = np.asarray(img.resize((32, 32)), dtype=np.float64).reshape(-1, 3).mean(axis=0)
            logits = -np.linalg.norm(self.colours - mean, axis=1) / 20.0
            p = np.exp(logits - logits.max())
            p /= p.sum()
            order = np.argsort(-p)[:top_k]
            cands = [
                {
                    "rank": r + 1,
                    "lat": _PLACES[i][3],
                    "lon": _PLACES[i][4],
                    "probability": float(p[i]),
                    "city": _PLACES[i][0],
                    "admin1": _PLACES[i][1],
                    "country": _PLACES[i][2],
                    "country_code": _PLACES[i][2],
                }
                for r, i in enumerate(order)
            ]
            top = cands[0]
            out.append(
                {
                    "image": "<image>",
                    **{k: top[k] for k in ("lat", "lon", "probability", "city", "admin1", "country")},
                    "candidates": cands,
                    "error": None,
                    "width": img.width,
                    "height": img.height,
                    "model": {"id": "colour-fixture"},
                }
            )
            if self.rag:
                out[-1]["reason"] = f"The palette matches {top['city']} best (fixture reasoning)."
                out[-1]["references"] = [
                    {"id": f"ref-{j}", "lat": top["lat"] + 0.1 * j, "lon": top["lon"], "similarity": 0.9 - 0.1 * j}
                    for j in range(3)
                ]
        return out

    def describe(self) -> dict[str, Any]:
        return {"model": {"id": "colour-fixture"}, "places": len(_PLACES)}


def make_colour_predictor() -> ColourPredictor:
    """Factory for ``terraloc serve --predictor serve_support:make_colour_predictor``."""
    return ColourPredictor()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(app: Any, ready: bool = True, timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free loopback port; yield its base URL."""
    port = free_port()
    from terraloc.serve.server import uvicorn_options

    options = uvicorn_options(app.state.terraloc.settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    path = "/readyz" if ready else "/healthz"
    while True:
        try:
            if httpx.get(base + path, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"server at {base} not {'ready' if ready else 'up'} after {timeout} s")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(15)


def make_broken_predictor() -> ColourPredictor:
    """Factory for ``terraloc serve --predictor serve_support:make_broken_predictor``: fails to load."""
    raise OSError("weights file is truncated (test fixture)")


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (with Content-Length) from ``sock``: status, headers, body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {buf!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(body) < size:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the body")
        body += chunk
    return status, headers, body[:size]
