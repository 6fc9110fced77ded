"""End to end: the service on a real uvicorn server (free loopback port) serving the real
Geolocator (tiny CLIP made with ``make_tiny_clip``), driven by HTTP, by headless Chromium (Debian's
``chromium`` through Playwright; installed by scripts/setup.d/30-browser.sh) and by a short run of
the load client; plus ``terraloc serve`` / ``terraloc bench serve`` as real subprocesses.

Screenshots go to ``$TERRALOC_SCREENSHOTS`` when set (else the test's temporary folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_support import ColourPredictor, running_server
from terraloc.serve import ServeSettings, create_app
from terraloc.serve.geolocator import geolocator_loader
from terraloc.serve.loadtest import run_load, server_process, server_rss_mb

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from terraloc.encoders.image import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def photos(shared: Path) -> list[Path]:
    return sorted((shared / "data" / "photos" / "osv5m").glob("*.jpg"))[:8]


@pytest.fixture(scope="module")
def served(tiny_clip: Path) -> Any:
    """(url, predictor): the real Geolocator, loaded once, served on a free loopback port."""
    loader = geolocator_loader(backbone=str(tiny_clip))
    app = create_app(ServeSettings(), loader)
    with running_server(app, timeout=300) as url:
        yield url, app.state.terraloc.predictor


def test_same_json_as_predict_format_json(served: Any, photos: list[Path]) -> None:
    """The service answers exactly the object ``terraloc predict --format json`` writes."""
    import io

    from terraloc.pipeline.outputs import StreamWriter

    url, predictor = served
    photo = photos[0]
    r = httpx.post(f"{url}/v1/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}, timeout=120)
    assert r.status_code == 200, r.text
    served_json = r.json()
    buf = io.StringIO()  # what `terraloc predict PHOTO --format json` prints for this model
    StreamWriter(buf, "json").write(predictor.geolocator.predict([photo], top_k=5)[0])
    cli_json = json.loads(buf.getvalue())
    assert cli_json["image"] == str(photo) and served_json["image"] == photo.name
    cli_json.pop("image")
    served_json.pop("image")
    # identical objects, weights ids and hashes included; the service shows no absolute server path
    from terraloc.serve.public import public_paths

    assert '"/' not in json.dumps(served_json["model"])
    cli_json["model"] = public_paths(cli_json["model"])
    assert served_json == cli_json
    assert len(served_json["candidates"]) == 5 and served_json["model"]["head"] == "geoclip"
    models = httpx.get(f"{url}/v1/models").json()["models"][0]
    assert (
        models["model"] == cli_json["model"] and models["config"]["backbone"] == served_json["model"]["backbone"]["id"]
    )


def test_batch_with_real_model(served: Any, photos: list[Path]) -> None:
    url, _ = served
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:3]]
    files.insert(1, ("file", ("fake.jpg", b"GIF89a-not-really", "image/gif")))
    r = httpx.post(f"{url}/v1/predict/batch", files=files, params={"top_k": 3}, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [o["image"] for o in out] == [photos[0].name, "fake.jpg", photos[1].name, photos[2].name]
    assert out[1]["error"] and out[1]["candidates"] == [] and out[1]["lat"] is None
    assert all(len(o["candidates"]) == 3 and o["error"] is None for o in out[:1] + out[2:])


def test_short_load_run(served: Any, photos: list[Path]) -> None:
    url, _ = served
    payloads = [(p.name, p.read_bytes()) for p in photos]
    stats = run_load(url, payloads, clients=4, duration_s=3.0, top_k=5)
    assert stats["ok"] > 0 and stats["other_5xx"] == 0 and stats["transport_errors"] == 0
    assert stats["deliberate_503"] == 0  # 4 clients fit in 1 worker + 8 waiting
    assert stats["p50_ms"] is not None and stats["p95_ms"] >= stats["p50_ms"]


def test_cli_serve_subprocess_logs_json(tmp_path: Path, photos: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """`terraloc serve` as its own process: JSON log lines, request ids, clean SIGINT shutdown."""
    tests_dir = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / "server.jsonl"
    args = ["--predictor", "serve_support:make_colour_predictor", "--api-key", "k3y"]
    with server_process(args, log_path=log) as (url, proc):
        rss = server_rss_mb(proc.pid)
        photo = photos[0]
        files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
        assert httpx.post(f"{url}/v1/predict", files=files).status_code == 401
        r = httpx.post(f"{url}/v1/predict", files=files, headers={"X-API-Key": "k3y", "X-Request-ID": "trace-7"})
        assert r.status_code == 200 and r.json()["image"] == photo.name
    assert proc.returncode is not None and rss > 0
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("event") == "request" and x.get("path") == "/v1/predict"]
    assert [x["status"] for x in access] == [401, 200]
    assert access[1]["request_id"] == "trace-7" and access[1]["duration_ms"] > 0
    assert any(x.get("event") == "model_ready" for x in lines)
    assert "k3y" not in log.read_text()  # the key is never logged


def test_cli_bench_serve_short(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bounded run of the same code as the 60 s benchmark (colour fixture model, 2 s)."""
    tests_dir = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    res = cli(
        "bench", "serve", "--predictor", "serve_support:make_colour_predictor",
        "--clients", "4", "--duration", "2", "--sequential", "5", "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["load"]["ok"] > 0 and out["load"]["other_5xx"] == 0 and out["load"]["transport_errors"] == 0
    assert out["rss_before_mb"] > 0 and out["rss_after_mb"] > 0
    assert out["served_sequential_p50_ms"] > 0 and out["direct_p50_ms"] > 0
    # the independent raw-HTTP client took turns with httpx on the same server: same answers
    raw = out["cross_check"]
    assert raw["ok"] > 0 and set(raw["status_counts"]) == {"200"} and raw["slices"] == out["load"]["slices"] == 4


# ---------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser() -> Any:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} missing: scripts/setup.d/30-browser.sh installs it")
        pytest.skip(f"{CHROMIUM} not installed (scripts/setup.d/30-browser.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("TERRALOC_SCREENSHOTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_browser_upload_shows_markers_and_list(served: Any, browser: Any, photos: list[Path], tmp_path: Path) -> None:
    url, _ = served
    photo = photos[1]
    expected = httpx.post(
        f"{url}/v1/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}, timeout=120
    ).json()
    page = browser.new_page(viewport={"width": 1280, "height": 820})
    failed: list[str] = []
    page.on("requestfailed", lambda req: failed.append(req.url))
    outside: list[str] = []
    page.on("request", lambda req: outside.append(req.url) if not req.url.startswith((url, "blob:", "data:")) else None)
    page.goto(url + "/")
    page.wait_for_selector("#model-status.ok", timeout=60_000)
    page.wait_for_selector("path.leaflet-interactive, svg path", timeout=30_000)  # country outlines drawn
    page.set_input_files("#file", str(photo))
    page.wait_for_selector(".cand-marker", timeout=60_000)
    assert page.locator(".cand-marker").count() == 5
    items = page.locator("#candidates li")
    assert items.count() == 5
    for i, cand in enumerate(expected["candidates"]):
        text = items.nth(i).inner_text()
        assert cand["city"] in text and cand["country"] in text
    # Markers are sized by probability: rank 1 is at least as large as rank 5.
    sizes = page.eval_on_selector_all(".cand-marker", "els => els.map(e => e.getBoundingClientRect().width)")
    assert max(sizes) == sizes[0] or sizes[0] >= sizes[-1]
    assert page.locator("#thumb").is_visible()
    assert page.locator("#distances td").count() == 5 * 5
    assert "most probable" in page.locator("#summary").inner_text()
    shots = _shots(tmp_path)
    page.screenshot(path=str(shots / "serve_desktop.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page scrolls sideways at phone width ({width}px)"
    page.screenshot(path=str(shots / "serve_phone.png"), full_page=True)
    assert not failed, failed
    assert not outside, f"page fetched from outside the server: {outside}"
    page.close()


def test_browser_keyboard_only(served: Any, browser: Any, photos: list[Path]) -> None:
    url, _ = served
    page = browser.new_page(viewport={"width": 1280, "height": 820})
    # Listen before anything happens: Playwright turns file-chooser interception on when the first
    # listener is added, and a key pressed before that would open the (invisible) native dialog.
    choosers: list[Any] = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    page.goto(url + "/")
    page.wait_for_selector("#model-status.ok", timeout=60_000)
    for _ in range(10):  # Tab to the drop zone
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "drop":
            break
    assert page.evaluate("document.activeElement.id") == "drop"
    page.keyboard.press("Enter")  # the drop zone is a button: Enter opens the file picker
    for _ in range(200):
        if choosers:
            break
        page.wait_for_timeout(50)
    assert choosers, "Enter on the drop zone did not open the file picker"
    choosers[0].set_files(str(photos[2]))
    page.wait_for_selector("#candidates li", timeout=60_000)
    page.locator("#candidates li button").nth(1).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(".leaflet-popup-content", timeout=5_000)
    assert "#2" in page.locator(".leaflet-popup-content").inner_text()
    # Markers are in the tab order (Leaflet keyboard markers).
    assert page.locator(".cand-marker[tabindex='0']").count() == 5
    page.close()


def test_browser_reports_bad_file(served: Any, browser: Any, tmp_path: Path) -> None:
    url, _ = served
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"%PDF-1.4 this is a document")
    page = browser.new_page()
    page.goto(url + "/")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#message.error", timeout=30_000)
    msg = page.locator("#message").inner_text()
    assert "PDF" in msg and "415" in msg
    page.close()


def test_browser_shows_reasoning_and_references(browser: Any, photos: list[Path]) -> None:
    """When a prediction carries retrieval-augmented fields, the page shows them."""
    with running_server(create_app(ServeSettings(), ColourPredictor(rag=True))) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.set_input_files("#file", str(photos[0]))
        page.wait_for_selector("#reasoning-box:not([hidden])", timeout=30_000)
        assert "fixture reasoning" in page.locator("#reasoning").inner_text()
        refs = page.locator("#references li")
        assert (
            refs.count() == 3 and "ref-0" in refs.nth(0).inner_text() and "similarity 0.900" in refs.nth(0).inner_text()
        )
        page.close()


_VIEW_JS = """() => {
  const m = window.terralocMap, b = m.getBounds(), c = b.getCenter();
  return {s: b.getSouth(), n: b.getNorth(), w: b.getWest(), e: b.getEast(),
          width_km: m.distance([c.lat, b.getWest()], [c.lat, b.getEast()]) / 1000,
          height_km: m.distance([b.getSouth(), c.lng], [b.getNorth(), c.lng]) / 1000};
}"""


@pytest.mark.parametrize(("label", "width", "height"), [("desktop", 1280, 820), ("phone", 390, 844)])
def test_browser_map_shows_the_region(  # type: ignore[no-untyped-def]
    served: Any, browser: Any, photos: list[Path], tmp_path: Path, label: str, width: int, height: int
) -> None:
    """After a prediction the map spans at least 200 km (country scale), contains the top candidate,
    and a world overview inset shows where that is."""
    url, _ = served
    photo = photos[1]
    top = httpx.post(
        f"{url}/v1/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}, timeout=120
    ).json()["candidates"][0]
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url + "/")
    page.wait_for_selector("#model-status.ok", timeout=60_000)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector(".cand-marker", timeout=60_000)
    page.wait_for_timeout(300)
    view = page.evaluate(_VIEW_JS)
    assert view["width_km"] >= 200 and view["height_km"] >= 200, view
    assert view["s"] <= top["lat"] <= view["n"] and view["w"] <= top["lon"] <= view["e"], (view, top)
    assert page.locator("#overview").is_visible()
    assert page.locator("#overview path.leaflet-interactive, #overview path").count() > 10  # outlines + view box
    page.screenshot(path=str(_shots(tmp_path) / f"serve_map_{label}.png"), full_page=True)
    page.close()


@pytest.mark.parametrize(("label", "width", "height"), [("desktop", 1280, 820), ("phone", 390, 844)])
def test_browser_refused_upload_clears_photo_and_errs_by_the_drop_zone(  # type: ignore[no-untyped-def]
    served: Any, browser: Any, photos: list[Path], tmp_path: Path, label: str, width: int, height: int
) -> None:
    url, _ = served
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"%PDF-1.4 this is a document")
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url + "/")
    page.wait_for_selector("#model-status.ok", timeout=60_000)
    page.set_input_files("#file", str(photos[0]))
    page.wait_for_selector(".cand-marker", timeout=60_000)
    assert page.locator("#thumb").is_visible()
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#message.error", timeout=30_000)
    assert "PDF" in page.locator("#message").inner_text()
    assert not page.locator("#thumb").is_visible()  # the previous photo is gone, no broken image
    assert page.locator("#thumb").get_attribute("src") is None
    assert page.locator(".cand-marker").count() == 0
    drop = page.locator("#drop").bounding_box()
    msg = page.locator("#message").bounding_box()
    assert drop is not None and msg is not None
    assert 0 <= msg["y"] - (drop["y"] + drop["height"]) < 60, (drop, msg)  # right under the drop zone
    assert msg["y"] + msg["height"] <= height  # visible without scrolling
    page.screenshot(path=str(_shots(tmp_path) / f"serve_error_{label}.png"), full_page=False)
    page.close()
