"""``terraloc serve``: the HTTP API and web page; ``terraloc bench serve``: its load test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from terraloc.cli.app import app, bench_app, err_console, fail, out_console
from terraloc.cli.model_options import (
    BackboneOption,
    CalibratorOption,
    CheckpointOption,
    DbOption,
    DeviceOption,
    DistinctKmOption,
    FusionOption,
    GalleryOption,
    HeadOption,
    IndexOption,
    LlmOption,
    MinConfidenceOption,
    ModelOption,
    PlacesOption,
    ReasonerOption,
    SegmenterOption,
    TenCropOption,
)

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _model_loader(predictor: str | None, device: str = "cpu", **options: Any):  # type: ignore[no-untyped-def]
    """A zero-argument callable that loads the model (run in the server's background thread).

    Options are resolved here, before the server starts, by the same function as ``terraloc
    predict`` (``terraloc.pipeline.resolve_config``): a bad option fails at once, exit 2.
    """
    from terraloc.pipeline import resolve_config
    from terraloc.serve.geolocator import geolocator_loader
    from terraloc.serve.predictor import import_factory

    if predictor:
        return import_factory(predictor)
    db = options.get("db")
    if db is not None and not Path(db).is_dir():
        fail(f"--db: {db}: no such folder")
    config, source = resolve_config(**options)
    _precheck_backbone(config.backbone)
    return geolocator_loader(config, source, device=device)


def _precheck_backbone(spec: str) -> None:
    """Fail at once (one line, exit 2) when the backbone is clearly not on disk, before the
    server starts and loads it in the background."""
    from terraloc.encoders.image.backbones import is_on_disk, resolve_known

    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            fail(f"--backbone: {path}: folder has no config.json (not a Hugging Face checkpoint)")
        return
    known = resolve_known(spec)
    if known is not None and is_on_disk(known) is None:
        fail(f"model '{known.name}' is not on disk; fetch it with: terraloc models pull {known.name}")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    backbone: BackboneOption = None,
    predictor: Annotated[
        str | None,
        typer.Option(
            help="Serve a custom predictor instead: MODULE:FACTORY returning an object with "
            "predict(images, top_k) and describe()."
        ),
    ] = None,
    model: ModelOption = None,
    head: HeadOption = None,
    gallery: GalleryOption = None,
    index: IndexOption = None,
    db: DbOption = None,
    checkpoint: CheckpointOption = None,
    fusion: FusionOption = None,
    segmenter: SegmenterOption = None,
    reasoner: ReasonerOption = None,
    llm: LlmOption = None,
    ten_crop: TenCropOption = None,
    places: PlacesOption = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Default number of candidates per photo.", min=1)] = 5,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted image file, in MB.", min=0.001)] = 20.0,
    max_pixels: Annotated[int, typer.Option(help="Largest accepted image, in pixels (w x h).", min=1)] = 100_000_000,
    max_batch: Annotated[int, typer.Option(help="Most images in one batch request.", min=1)] = 16,
    workers: Annotated[
        int, typer.Option(help="Parallel inference workers (threads; each answers one request at a time).", min=1)
    ] = 1,
    queue_size: Annotated[int, typer.Option(help="Requests that may wait for a worker before 503.", min=0)] = 8,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TERRALOC_API_KEY",
            show_default=False,
            help="Require this key on /v1/* (Authorization: Bearer KEY or X-API-Key). Env: TERRALOC_API_KEY.",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow this origin via CORS (repeatable). Off by default.")
    ] = None,
    tile_url: Annotated[
        str | None, typer.Option(help="XYZ tile URL template for the web map; default: offline country outlines.")
    ] = None,
    tile_attribution: Annotated[str, typer.Option(help="Attribution shown with --tile-url tiles.")] = "",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    calibrator: CalibratorOption = None,
    min_confidence: MinConfidenceOption = None,
    distinct_km: DistinctKmOption = None,
    lazy: Annotated[
        bool, typer.Option("--lazy", help="Start at once and load the model in the background (/readyz tells).")
    ] = False,
    device: DeviceOption = "auto",
) -> None:
    """Serve the REST API (/v1/predict, /docs) and the map page (/) with uvicorn."""
    import uvicorn

    from terraloc.serve import ServeSettings, create_app
    from terraloc.serve.middleware import configure_logging

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        fail(f"--log-level: expected debug, info, warning or error, got '{log_level}'")
    if (backbone or model) and predictor:
        fail("--backbone/--model and --predictor exclude each other")
    if tile_url and not tile_url.startswith(("http://", "https://")):
        fail(f"--tile-url: expected an http(s) URL template, got '{tile_url}'")
    if api_key is not None and not api_key.strip():
        fail("--api-key (or TERRALOC_API_KEY) is empty")
    if calibrator is not None and not calibrator.is_file():
        fail(f"--calibrator: {calibrator}: no such file")
    if min_confidence is not None and calibrator is None:
        fail("--min-confidence needs --calibrator FILE")
    from terraloc.allocator import keep_freed_memory
    from terraloc.device import resolve_device

    keep_freed_memory()  # batch memory kept mapped between requests (fewer page faults)
    loader = _model_loader(
        predictor,
        resolve_device(device),
        model=model,
        backbone=backbone,
        head=head,
        gallery=gallery,
        index=index,
        db=db,
        checkpoint=checkpoint,
        fusion=fusion,
        segmenter=segmenter,
        reasoner=reasoner,
        llm=llm,
        ten_crop=ten_crop,
        places=places,
        calibrator=calibrator,
        min_confidence=min_confidence,
        distinct_km=distinct_km,
    )
    settings = ServeSettings(
        host=host,
        port=port,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        max_batch_images=max_batch,
        workers=workers,
        queue_size=queue_size,
        default_top_k=top_k,
        max_top_k=max(100, top_k),
        api_key=api_key,
        cors_origins=tuple(cors_origin or ()),
        tile_url=tile_url,
        tile_attribution=tile_attribution,
    )
    configure_logging(log_level)
    from terraloc.serve.server import load_or_fail, uvicorn_options

    served = loader if lazy else load_or_fail(loader)  # without --lazy: exit 2 now if it cannot load
    if host not in _LOOPBACK and api_key is None:
        err_console.print(f"warning: serving on {host} without an API key: anyone who reaches it can use it")
    err_console.print(
        f"terraloc serving on http://{'[' + host + ']' if ':' in host else host}:{port}/ "
        "(API docs at /docs; Ctrl-C stops)"
    )
    uvicorn.run(create_app(settings, served), host=host, port=port, **uvicorn_options(settings))


@bench_app.command("serve")
def bench_serve(
    backbone: Annotated[
        str | None, typer.Option(help="Backbone for the served Geolocator (default: a tiny CLIP made in a temp dir).")
    ] = None,
    predictor: Annotated[str | None, typer.Option(help="Serve MODULE:FACTORY instead of a Geolocator.")] = None,
    clients: Annotated[int, typer.Option(help="Concurrent clients.", min=1)] = 8,
    duration: Annotated[float, typer.Option(help="Seconds of load.", min=0.5)] = 60.0,
    sequential: Annotated[int, typer.Option(help="Requests for the overhead measurement.", min=1)] = 40,
    photos: Annotated[
        Path | None, typer.Option("--photos", help="Folder of photos to send (default: the shared osv5m photos).")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Candidates per photo.", min=1)] = 5,
    images_old: Annotated[Path | None, typer.Option("--images", hidden=True, help="Old name of --photos.")] = None,
    queue_size: Annotated[int, typer.Option(help="Server queue size.", min=0)] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Load-test `terraloc serve` from this process against a server subprocess on loopback."""
    from terraloc.cli.options import renamed
    from terraloc.serve.loadtest import bench_table, run_bench

    images = renamed(photos, images_old, new="--photos", old="--images")

    result = run_bench(
        backbone=backbone,
        predictor=predictor,
        clients=clients,
        duration_s=duration,
        sequential=sequential,
        images_dir=images,
        top_k=top_k,
        queue_size=queue_size,
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        out_console().print(bench_table(result))
