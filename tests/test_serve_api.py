"""API tests of ``terraloc serve`` against a real uvicorn server on a free loopback port.

The model here is ``ColourPredictor`` (tests/serve_support.py), a small deterministic test
fixture, so that queue timing can be controlled; the real Geolocator is served in
test_serve_geolocator.py.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from serve_support import ColourPredictor, running_server
from terraloc.serve import ServeSettings, create_app
from terraloc.serve.middleware import JsonFormatter


def _jpeg(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(shared: Path) -> tuple[str, bytes]:
    path = sorted((shared / "data" / "photos" / "osv5m").glob("*.jpg"))[0]
    return path.name, path.read_bytes()


@pytest.fixture(scope="module")
def server() -> str:
    settings = ServeSettings(max_upload_bytes=300_000, max_batch_bytes=900_000, max_pixels=4_000_000)
    with running_server(create_app(settings, ColourPredictor)) as base:
        yield base


@pytest.fixture(scope="module")
def client(server: str) -> httpx.Client:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


# ---------------------------------------------------------------------------- routes


def test_health_ready_models(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    assert r.json()["queue"]["workers"] == 1
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["models"][0]["model"]["id"] == "colour-fixture"
    assert body["limits"]["max_upload_bytes"] == 300_000
    assert "api_key" not in body["limits"]


def test_predict_multipart_and_json_agree(client: httpx.Client) -> None:
    data = _jpeg()
    r = client.post(
        "/v1/predict",
        files={"file": ("../../etc/passwd.jpg", data, "application/octet-stream")},
        params={"top_k": 3},
        headers={"X-Request-ID": "desk-42"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "desk-42"
    assert r.headers["x-content-type-options"] == "nosniff"
    pred = r.json()
    assert pred["image"] == "passwd.jpg"  # a label only: no directories survive
    assert pred["error"] is None
    assert [c["rank"] for c in pred["candidates"]] == [1, 2, 3]
    assert pred["lat"] == pred["candidates"][0]["lat"]
    probs = [c["probability"] for c in pred["candidates"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-9

    r2 = client.post("/v1/predict", json={"image": base64.b64encode(data).decode(), "name": "passwd.jpg", "top_k": 3})
    assert r2.status_code == 200, r2.text
    assert r2.json() == pred
    # A data: URL is accepted too, and the default top_k applies.
    r3 = client.post("/v1/predict", json={"image": "data:image/jpeg;base64," + base64.b64encode(data).decode()})
    assert r3.status_code == 200 and len(r3.json()["candidates"]) == 5


def test_real_photo_with_top_k_form_field(client: httpx.Client, photo: tuple[str, bytes]) -> None:
    name, data = photo
    r = client.post("/v1/predict", files={"file": (name, data, "image/jpeg")}, data={"top_k": "2"})
    assert r.status_code == 200, r.text
    assert r.json()["image"] == name and len(r.json()["candidates"]) == 2


def test_batch_continues_past_bad_items(client: httpx.Client) -> None:
    good, other = _jpeg(colour=(10, 200, 10)), _jpeg(colour=(10, 10, 200))
    files = [
        ("file", ("a.jpg", good, "image/jpeg")),
        ("file", ("notes.txt", b"hello, not an image", "text/plain")),
        ("file", ("cut.jpg", good[: len(good) // 2], "image/jpeg")),
        ("file", ("b.jpg", other, "image/jpeg")),
    ]
    r = client.post("/v1/predict/batch", files=files, params={"top_k": 2})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [o["image"] for o in out] == ["a.jpg", "notes.txt", "cut.jpg", "b.jpg"]
    assert out[0]["error"] is None and len(out[0]["candidates"]) == 2
    assert "not a recognised image" in out[1]["error"] and out[1]["candidates"] == []
    assert "truncated" in out[2]["error"]
    assert out[3]["error"] is None
    single = client.post("/v1/predict", files={"file": ("b.jpg", other, "image/jpeg")}, params={"top_k": 2}).json()
    assert out[3] == single
    # JSON batch: plain base64 strings or {image, name} objects.
    r = client.post(
        "/v1/predict/batch",
        json={"images": [base64.b64encode(good).decode(), {"image": base64.b64encode(other).decode(), "name": "x"}]},
    )
    assert r.status_code == 200 and [o["image"] for o in r.json()] == ["image-1", "x"]


def test_page_docs_and_assets(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert '<div id="map"' in r.text and "/vendor/leaflet/leaflet.js" in r.text
    assert client.get("/vendor/leaflet/leaflet.js").status_code == 200
    assert client.get("/static/app.js").status_code == 200
    geo = client.get("/ui/countries.geojson").json()
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) > 150
    cfg = client.get("/ui/config.json").json()
    assert cfg["api_key_required"] is False and cfg["tile_url"] is None
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text  # offline: no CDN assets
    assert client.get("/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/batch", "/v1/models", "/healthz", "/readyz"} <= set(spec["paths"])
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)


# ---------------------------------------------------------------------------- bad input


def test_oversized_uploads_413(client: httpx.Client) -> None:
    big = b"\xff\xd8\xff" + b"\0" * 500_000  # over the 300 kB limit; declared Content-Length
    r = client.post("/v1/predict", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]
    # Within the body allowance (limit x 4/3 for base64) but the file part itself is too big.
    mid = b"\xff\xd8\xff" + b"\0" * 320_000
    r = client.post("/v1/predict", files={"file": ("mid.jpg", mid, "image/jpeg")})
    assert r.status_code == 413 and "mid.jpg" in r.json()["detail"]
    # Chunked upload without Content-Length: counted while streaming.
    boundary = "xyz"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.jpg"\r\n\r\n'.encode()

    def chunks():  # type: ignore[no-untyped-def]
        yield head
        for _ in range(20):
            yield b"\0" * 50_000

    r = client.post(
        "/v1/predict", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 413
    # JSON base64 over the limit.
    r = client.post("/v1/predict", json={"image": base64.b64encode(mid).decode()})
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        (b"%PDF-1.7\n1 0 obj", 415, "PDF"),
        (b"just some text", 415, "not a recognised image"),
        (b"", 415, "empty"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00", 415, "HEIC"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "SVG"),
    ],
)
def test_non_images_415(client: httpx.Client, payload: bytes, status: int, needle: str) -> None:
    # The file name and declared type claim JPEG: only the content decides.
    r = client.post("/v1/predict", files={"file": ("photo.jpg", payload, "image/jpeg")})
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"] and "photo.jpg" in r.json()["detail"]


def test_truncated_and_corrupt_422(client: httpx.Client) -> None:
    data = _jpeg((256, 256))
    r = client.post("/v1/predict", files={"file": ("cut.jpg", data[: len(data) // 3], "image/jpeg")})
    assert r.status_code == 422 and "truncated" in r.json()["detail"]
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(png, "PNG")
    broken = png.getvalue()[:20]  # signature + partial IHDR
    r = client.post("/v1/predict", files={"file": ("b.png", broken, "image/png")})
    assert r.status_code == 422 and "b.png" in r.json()["detail"]


def test_decompression_bomb_refused(client: httpx.Client, tmp_path: Path) -> None:
    # A real bomb: 1-bit PNG of 3000 x 3000 = 9 MP (the server's limit is 4 MP) in a few kB.
    buf = io.BytesIO()
    Image.new("1", (3000, 3000), 0).save(buf, "PNG", optimize=True)
    bomb = buf.getvalue()
    assert len(bomb) < 20_000
    r = client.post("/v1/predict", files={"file": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 422
    assert "decompression bomb" in r.json()["detail"] and "3000x3000" in r.json()["detail"]
    r = client.post("/v1/predict", json={"image": base64.b64encode(bomb).decode()})
    assert r.status_code == 422
    assert client.get("/healthz").status_code == 200


def test_missing_fields_and_bad_parameters(client: httpx.Client) -> None:
    data = _jpeg()
    r = client.post("/v1/predict", files={"image": ("a.jpg", data, "image/jpeg")})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]
    r = client.post("/v1/predict", data={"top_k": "3"})  # urlencoded form, no file
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/v1/predict", json={"top_k": 3})
    assert r.status_code == 422 and "'image'" in r.json()["detail"]
    r = client.post("/v1/predict", json={"image": "!!!not base64!!!"})
    assert r.status_code == 422 and "base64" in r.json()["detail"]
    r = client.post("/v1/predict", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = client.post("/v1/predict/batch", json={"images": []})
    assert r.status_code == 422 and "'images'" in r.json()["detail"]
    r = client.post("/v1/predict", files={"file": ("a.jpg", data, "image/jpeg")}, data={"top_k": "zero"})
    assert r.status_code == 422 and "top_k" in r.json()["detail"]
    r = client.post("/v1/predict", files={"file": ("a.jpg", data, "image/jpeg")}, data={"top_k": "1000"})
    assert r.status_code == 422 and "between 1 and 100" in r.json()["detail"]
    r = client.post("/v1/predict", files={"file": ("a.jpg", data, "image/jpeg")}, params={"top_k": 0})
    assert r.status_code == 422
    files = [("file", ("a.jpg", data, "image/jpeg")), ("file", ("b.jpg", data, "image/jpeg"))]
    r = client.post("/v1/predict", files=files)
    assert r.status_code == 422 and "/v1/predict/batch" in r.json()["detail"]
    assert client.get("/v1/predict").status_code == 405


def test_client_disconnect_mid_upload(server: str, client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    port = int(server.rsplit(":", 1)[1])
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=b0\r\nContent-Length: 250000\r\n\r\n"
        b'--b0\r\nContent-Disposition: form-data; name="file"; filename="gone.jpg"\r\n\r\n'
    )
    caplog.set_level(logging.INFO, logger="terraloc.serve")
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(head + b"\xff\xd8\xff" + b"\1" * 30_000)
            time.sleep(0.05)
        # socket closed with most of the declared body unsent
    time.sleep(0.3)
    assert client.get("/healthz").status_code == 200
    r = client.post("/v1/predict", files={"file": ("after.jpg", _jpeg(), "image/jpeg")})
    assert r.status_code == 200 and r.json()["image"] == "after.jpg"
    statuses = [getattr(rec, "status", None) for rec in caplog.records if rec.name == "terraloc.serve.access"]
    assert 500 not in statuses


def test_access_log_is_structured(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="terraloc.serve")
    r = client.post("/v1/predict", files={"file": ("a.jpg", _jpeg(), "image/jpeg")})
    rid = r.headers["x-request-id"]
    for _ in range(100):  # the line is written just after the response is sent
        recs = [r for r in caplog.records if r.name == "terraloc.serve.access" and getattr(r, "request_id", "") == rid]
        if recs:
            break
        time.sleep(0.01)
    assert len(recs) == 1
    line = json.loads(JsonFormatter().format(recs[0]))
    assert line["method"] == "POST" and line["path"] == "/v1/predict" and line["status"] == 200
    assert line["duration_ms"] > 0 and line["bytes_in"] > 0 and line["request_id"] == rid
    assert line["client"].startswith("127.0.0.1:")


def test_cors_off_by_default(client: httpx.Client) -> None:
    r = client.options(
        "/v1/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------------------- API key, CORS on


def test_api_key_and_cors_on() -> None:
    settings = ServeSettings(api_key="s3cret-key", cors_origins=("https://desk.example",))
    with running_server(create_app(settings, ColourPredictor())) as base, httpx.Client(base_url=base) as c:
        files = {"file": ("a.jpg", _jpeg(), "image/jpeg")}
        r = c.post("/v1/predict", files=files)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert c.post("/v1/predict", files=files, headers={"Authorization": "Bearer s3cret-kez"}).status_code == 401
        assert c.post("/v1/predict", files=files, headers={"X-API-Key": "s3cret"}).status_code == 401
        assert c.get("/v1/models").status_code == 401
        assert c.post("/v1/predict", files=files, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert c.post("/v1/predict", files=files, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        # Health, readiness and the page stay open (the page asks for the key).
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/ui/config.json").json()["api_key_required"] is True
        schemes = c.get("/openapi.json").json()["components"]["securitySchemes"]
        assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
        r = c.options(
            "/v1/predict", headers={"Origin": "https://desk.example", "Access-Control-Request-Method": "POST"}
        )
        assert r.headers["access-control-allow-origin"] == "https://desk.example"
        r = c.options(
            "/v1/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"


# ---------------------------------------------------------------------------- loading, queue


def test_readyz_503_until_loaded() -> None:
    release = threading.Event()

    def slow_loader() -> ColourPredictor:
        release.wait(30)
        return ColourPredictor()

    with (
        running_server(create_app(ServeSettings(), slow_loader), ready=False) as base,
        httpx.Client(base_url=base) as c,
    ):
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["retry-after"]
        r = c.post("/v1/predict", files={"file": ("a.jpg", _jpeg(), "image/jpeg")})
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200
        release.set()
        for _ in range(100):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert c.get("/readyz").json()["status"] == "ready"
        assert c.post("/v1/predict", files={"file": ("a.jpg", _jpeg(), "image/jpeg")}).status_code == 200


def test_failed_load_reported() -> None:
    def broken() -> ColourPredictor:
        raise FileNotFoundError("weights.safetensors not found")

    with running_server(create_app(ServeSettings(), broken), ready=False) as base, httpx.Client(base_url=base) as c:
        for _ in range(100):
            body = c.get("/readyz").json()
            if body["status"] != "loading":
                break
            time.sleep(0.02)
        assert body["status"] == "failed" and "weights.safetensors" in body["error"]
        r = c.post("/v1/predict", files={"file": ("a.jpg", _jpeg(), "image/jpeg")})
        assert r.status_code == 503 and "failed to load" in r.json()["detail"]


def test_burst_beyond_queue_gets_503_then_recovers() -> None:
    gate = threading.Event()
    predictor = ColourPredictor(gate=gate)
    settings = ServeSettings(workers=1, queue_size=2)
    with running_server(create_app(settings, predictor)) as base, httpx.Client(base_url=base, timeout=30) as c:
        results: list[int] = []

        def post() -> None:
            with httpx.Client(base_url=base, timeout=30) as own:
                results.append(own.post("/v1/predict", files={"file": ("a.jpg", _jpeg(), "image/jpeg")}).status_code)

        threads = [threading.Thread(target=post) for _ in range(3)]  # 1 running + 2 waiting
        for t in threads:
            t.start()
        for _ in range(200):
            q = c.get("/readyz").json()["queue"]
            if q["running"] == 1 and q["waiting"] == 2:
                break
            time.sleep(0.02)
        assert (q["running"], q["waiting"]) == (1, 2)
        t0 = time.perf_counter()
        burst = [c.post("/v1/predict", files={"file": ("b.jpg", _jpeg(), "image/jpeg")}) for _ in range(5)]
        assert time.perf_counter() - t0 < 5  # refused at once, not queued
        for r in burst:
            assert r.status_code == 503
            assert int(r.headers["retry-after"]) >= 1 and "queue is full" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200  # the event loop is free while workers are busy
        gate.set()
        for t in threads:
            t.join(30)
        assert results == [200, 200, 200]
        assert c.get("/readyz").json()["queue"]["rejected"] == 5
        assert c.post("/v1/predict", files={"file": ("c.jpg", _jpeg(), "image/jpeg")}).status_code == 200


# ---------------------------------------------------------------------------- CLI argument errors


def test_serve_cli_refuses_bad_setup(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli("serve", "--port", "0")  # default GeoCLIP backbone, not pulled in this empty home
    assert r.code == 2 and "terraloc models pull" in r.err and "Traceback" not in r.err
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("serve", "--backbone", str(empty))
    assert r.code == 2 and "config.json" in r.err
    r = cli("serve", "--tile-url", "ftp://tiles/{z}/{x}/{y}.png", "--predictor", "serve_support:make_colour_predictor")
    assert r.code == 2 and "--tile-url" in r.err
    r = cli("serve", "--predictor", "no_such_module:make")
    assert r.code == 2 and "no_such_module" in r.err
    r = cli("serve", "--db", str(tmp_path / "nodb"))
    assert r.code == 2 and "--db" in r.err


def test_uploads_in_flight_are_bounded_too() -> None:
    """Beyond max_uploads bodies being read, the next is refused before its body is read (the
    inference queue has its own bound)."""
    gate = threading.Event()
    settings = ServeSettings(workers=1, queue_size=0, max_uploads=1)
    with running_server(create_app(settings, ColourPredictor(gate=gate))) as base, httpx.Client(base_url=base) as c:
        port = int(base.rsplit(":", 1)[1])
        held = threading.Thread(
            target=lambda: httpx.post(base + "/v1/predict", files={"file": ("a.jpg", _jpeg())}, timeout=30)
        )
        held.start()  # 1: running, held by the gate
        for _ in range(200):
            if c.get("/readyz").json()["queue"]["running"] == 1:
                break
            time.sleep(0.02)
        head = (
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(head + b"--b0\r\n")  # 2: stalls while its body is being read
        time.sleep(0.3)
        third = socket.create_connection(("127.0.0.1", port), timeout=5)
        third.sendall(head)  # 3: headers only; the answer must come without the body
        reply = third.recv(4096).decode("latin-1")
        assert reply.startswith("HTTP/1.1 503") and "retry-after" in reply.lower()
        third.close()
        slow.close()
        gate.set()
        held.join(30)
        assert c.post("/v1/predict", files={"file": ("b.jpg", _jpeg(), "image/jpeg")}).status_code == 200
