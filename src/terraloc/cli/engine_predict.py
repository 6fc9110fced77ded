"""``terraloc predict --engine local|ray``: bulk predictions through the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terraloc.errors import InputError


def job_folder(output: Path) -> tuple[Path, Path | None]:
    """``--out FILE.csv`` → (``FILE.csv.parts/``, FILE); ``--out DIR`` → (DIR, None)."""
    from terraloc.pipeline.outputs import FORMAT_BY_SUFFIX

    if output.suffix.lower() in FORMAT_BY_SUFFIX:
        return output.with_name(output.name + ".parts"), output
    return output, None


def predict_with_engine(
    paths: list[str],
    config: dict[str, Any],
    top_k: int,
    fmt: str,
    output: Path | None,
    map_html: Path | None,
    engine: str,
    ray_address: str | None,
    workers: int,
    threads: int,
    part_size: int | None,
    gpus: float | None,
    device: str = "auto",
) -> int:
    """Run the job, merge the parts into ``output`` and report; returns the exit status (2 if any failed)."""
    from terraloc.cli.engine_view import print_summary, progress_bar, report_errors
    from terraloc.engine import PredictSpec, make_engine, run_job
    from terraloc.engine.predictions import iter_predictions, write_predictions

    if output is None:
        raise InputError("--engine writes files: give --out FILE.csv|.jsonl|.geojson or --out DIR", field="out")
    folder, merged = job_folder(output)
    if merged is not None and fmt == "table":  # --format given overrides the suffix
        from terraloc.pipeline.outputs import FORMAT_BY_SUFFIX

        fmt = FORMAT_BY_SUFFIX[merged.suffix.lower()]
    from terraloc.engine.workers import absolute_if_path

    # paths in the configuration (database, checkpoints, a backbone folder) made absolute: workers
    # may run in another folder or on another node
    config = {k: absolute_if_path(v) for k, v in config.items()}
    eng = make_engine(engine, workers=workers, threads=threads, ray_address=ray_address, gpus=gpus, device=device)
    from terraloc.engine.stream import open_work_items

    items = open_work_items(paths)
    with progress_bar("predicting", enabled=True) as bar:
        summary = run_job(PredictSpec(config, top_k), items, folder, eng, part_size=part_size, on_progress=bar)
    report_errors(folder)
    if merged is not None:
        write_predictions(folder, merged, fmt)
    if map_html is not None:
        from terraloc.io import atomic_write_text
        from terraloc.pipeline.outputs import html_map

        atomic_write_text(map_html, html_map(list(iter_predictions(folder))))
    print_summary(summary)
    if config.get("min_confidence"):
        from terraloc.engine.predictions import count_abstained

        n_abs = count_abstained(folder)
        if n_abs:
            from terraloc.cli.app import err_console

            err_console.print(f"{n_abs} abstained (below --min-confidence {config['min_confidence']})", markup=False)
    return 2 if summary.failed else 0
