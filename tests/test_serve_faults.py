"""Fault injection against a real uvicorn server: slow clients, malformed bodies, odd names,
leaking paths, a model that cannot load. Behaviour is asserted, never wall-clock time."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from serve_support import ColourPredictor, read_response, running_server
from terraloc.serve import ServeSettings, create_app
from terraloc.serve.server import GuardedH11Protocol


def _jpeg(colour: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _multipart(boundary: str, name: str = "a.jpg") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + _jpeg()
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _request(path: str, ctype: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


# grace long enough that all 18 slow uploads are open together even on a loaded machine
SLOW = ServeSettings(min_upload_rate=1000, upload_grace_s=6.0, body_idle_timeout_s=8.0, max_uploads=32)


@pytest.fixture(scope="module")
def base() -> Any:
    with running_server(create_app(SLOW, ColourPredictor())) as url:
        yield url


def _trickle(port: int, outcome: list[str], stop: threading.Event) -> None:
    """A slow-loris upload: a valid multipart head, then one body byte every 0.1 s."""
    s = socket.create_connection(("127.0.0.1", port), timeout=0.1)
    head = _request("/v1/predict", "multipart/form-data; boundary=bb", b"")
    head = head.replace(b"Content-Length: 0", b"Content-Length: 100000")
    part = b'--bb\r\nContent-Disposition: form-data; name="file"; filename="s.jpg"\r\n'
    s.sendall(head + part + b"Content-Type: image/jpeg\r\n\r\n")
    result = "still open"
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and not stop.is_set():
            try:
                data = s.recv(4096)
            except TimeoutError:
                s.sendall(b"x")
                continue
            result = data.split(b" ", 2)[1].decode() if data else "closed"
            break
    except OSError:
        result = "closed"
    finally:
        s.close()
    outcome.append(result)


def test_slow_uploads_never_make_a_fast_client_wait(base: str) -> None:
    """18 uploads trickling bytes (what starved the service before) while a fast client predicts:
    the fast requests get 200, the trickling ones are cut off with 408 (or a closed socket)."""
    port = int(base.rsplit(":", 1)[1])
    outcomes: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_trickle, args=(port, outcomes, stop)) for _ in range(18)]
    for t in threads:
        t.start()
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(100):  # wait until all 18 bodies are being read
            if c.get("/readyz").json()["uploads"]["in_progress"] == 18:
                break
            time.sleep(0.05)
        assert c.get("/readyz").json()["uploads"]["in_progress"] == 18
        for colour in [(200, 30, 30), (30, 200, 30), (30, 30, 200)]:
            r = c.post("/v1/predict", files={"file": ("fast.jpg", _jpeg(colour), "image/jpeg")})
            assert r.status_code == 200, r.text
            assert r.json()["candidates"]
        for t in threads:
            t.join(30)
        stop.set()
        assert outcomes and set(outcomes) <= {"408", "closed"}, outcomes
        assert outcomes.count("408") >= 1
        assert c.get("/readyz").json()["uploads"]["in_progress"] == 0


def test_slow_request_head_is_closed(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that never finishes its request head is disconnected (uvicorn alone would wait forever)."""
    monkeypatch.setattr(GuardedH11Protocol, "header_timeout_s", 0.5)
    with running_server(create_app(ServeSettings(), ColourPredictor())) as url:
        port = int(url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\n")
        closed = False
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                s.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.1)
                s.settimeout(0.01)
                try:
                    if s.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
        except OSError:
            closed = True  # reset: closed too
        finally:
            s.close()
        assert closed
        assert httpx.get(url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    ("ctype", "body", "words"),
    [
        ("application/json", b"[" * 100_000, "nested deeper"),
        ("application/json", b'{"image": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "nested deeper"),
        ("multipart/form-data; boundary=" + "b" * 300, _multipart("b" * 300), "boundary"),
        ("multipart/form-data; boundary=bb", b"--bb\r\ngarbage without headers end", "multipart"),
        ("application/json", b'{"image": "\xff\xfe"}', "JSON"),
    ],
)
def test_malformed_bodies_get_json_4xx_and_the_connection_stays_usable(
    base: str, ctype: str, body: bytes, words: str
) -> None:
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(_request("/v1/predict", ctype, body))
        status, headers, payload = read_response(s)
        assert 400 <= status < 500, (status, payload[:200])
        assert headers["content-type"] == "application/json"
        assert words.lower() in json.loads(payload)["detail"].lower()
        # the same keep-alive connection answers the next request
        s.sendall(_request("/v1/predict", "multipart/form-data; boundary=ok", _multipart("ok")))
        status, _, payload = read_response(s)
        assert status == 200, payload[:300]
        assert json.loads(payload)["image"] == "a.jpg"


def test_echoed_names_are_truncated(base: str) -> None:
    image = base64.b64encode(_jpeg()).decode()
    r = httpx.post(base + "/v1/predict", json={"image": image, "name": "n" * 100_000}, timeout=30)
    assert r.status_code == 200 and 0 < len(r.json()["image"]) <= 200
    r = httpx.post(base + "/v1/predict/batch", json={"images": [{"image": "!!", "name": "q" * 100_000}]}, timeout=30)
    assert len(r.text) < 5000
    # other client text echoed in messages is cut too
    r = httpx.post(base + "/v1/predict", files={"file": ("a.jpg", _jpeg())}, data={"top_k": "9" * 60_000}, timeout=30)
    assert r.status_code == 422 and len(r.text) < 1000
    body = (
        b'--bb\r\nContent-Disposition: form-data; name="'
        + b"f" * 50_000
        + b'"\r\n\r\n'
        + b"v" * 70_000
        + b"\r\n--bb--\r\n"
    )
    r = httpx.post(
        base + "/v1/predict", content=body, headers={"content-type": "multipart/form-data; boundary=bb"}, timeout=30
    )
    assert 400 <= r.status_code < 500 and len(r.text) < 1000


class _PathPredictor(ColourPredictor):
    def __init__(self, home: Path) -> None:
        super().__init__()
        self.home = home

    def describe(self) -> dict[str, Any]:
        return {
            "model": {"id": "colour", "backbone": {"id": str(self.home / "models" / "tiny")}},
            "config": {"refdb": "/srv/secret/place/db", "note": "not a /path"},
        }

    def predict(self, images: list[Image.Image], top_k: int) -> list[dict[str, Any]]:
        out = super().predict(images, top_k)
        for o in out:
            o["model"] = self.describe()["model"]
        return out


def test_no_absolute_server_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path))
    with running_server(create_app(ServeSettings(), _PathPredictor(tmp_path))) as url:
        models = httpx.get(url + "/v1/models").json()["models"][0]
        assert models["model"]["backbone"]["id"] == "models/tiny"
        assert models["config"] == {"refdb": "db", "note": "not a /path"}
        r = httpx.post(url + "/v1/predict", files={"file": ("a.jpg", _jpeg(), "image/jpeg")}, timeout=30)
        assert r.status_code == 200 and r.json()["model"]["backbone"]["id"] == "models/tiny"
        assert str(tmp_path) not in r.text and "/srv/secret" not in httpx.get(url + "/v1/models").text


def test_serve_refuses_to_start_when_the_model_cannot_load(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("serve", "--port", "0", "--predictor", "serve_support:make_broken_predictor")
    assert r.code == 2
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot load the model" in lines[0] and "truncated" in lines[0]
    assert "Traceback" not in r.err
