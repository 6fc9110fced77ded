"""``terraloc geocells``, ``terraloc train``, ``terraloc embed`` and ``terraloc bench geosurge``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from terraloc.cli.app import app, bench_app, err_console, out_console
from terraloc.errors import InputError


def _read_coords(path: Path, lat_col: str | None, lon_col: str | None):  # type: ignore[no-untyped-def]
    from terraloc.inputs import read_coordinates

    return read_coordinates(path, lat_col=lat_col, lon_col=lon_col)


def _parse_taus(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise InputError(f"expected comma-separated integers, got '{text}'", field="--tau-max") from None


@app.command("geocells")
def geocells_command(
    coords: Annotated[
        Path | None,
        typer.Option("--coords", help="CSV of training coordinates (default: GeoCLIP's 100K MP-16 gallery)."),
    ] = None,
    lat_col: Annotated[str | None, typer.Option(help="Latitude column of --coords (default: detected).")] = None,
    lon_col: Annotated[str | None, typer.Option(help="Longitude column of --coords (default: detected).")] = None,
    tau_max: Annotated[
        str | None, typer.Option("--tau-max", help="Comma-separated tau_max per level (coarse→fine).")
    ] = None,
    tau_min: Annotated[int | None, typer.Option("--tau-min", help="Drop cells with fewer coordinates.")] = None,
    scale: Annotated[bool, typer.Option("--scale/--no-scale", help="Scale the MP-16 taus to the sample size.")] = True,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the partition (.npz) here.")] = None,
    compare_mp16: Annotated[
        bool, typer.Option("--compare-mp16", help="Compare with shared/data/geocells/cells_50_*.csv.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Build adaptive nested S2 geocell partitions from training coordinates."""
    from terraloc.geo.s2partition import GEOSURGE_TAU_MAX, GEOSURGE_TAU_MIN, S2Partition, scale_taus

    if coords is None:
        from terraloc.search.gallery import geoclip_gallery_coords

        ll = geoclip_gallery_coords()
        src = "geoclip gps_gallery (100K MP-16)"
    else:
        ll = _read_coords(coords, lat_col, lon_col)
        src = str(coords)
    tmax = _parse_taus(tau_max) or GEOSURGE_TAU_MAX
    tmin = GEOSURGE_TAU_MIN if tau_min is None else tau_min
    if scale:
        tmax, tmin = scale_taus(len(ll), tmax, tmin)
    part = S2Partition.build(ll, tmax, tmin, source=src)
    summary = part.summary()
    result: dict = {"source": src, "n": len(ll), "tau_max": list(tmax), "tau_min": tmin, "levels": summary}
    if compare_mp16:
        from terraloc.geo.s2partition import compare_with_mp16

        result["mp16_comparison"] = compare_with_mp16(ll)
    if out is not None:
        part.save(out)
    if as_json:
        typer.echo(json.dumps(result))
        return
    t = Table(title=f"S2 partitions of {len(ll):,} coordinates ({src}), tau_min={tmin}")
    for c in ("level", "tau_max", "cells", "min", "median", "max", "S2 levels"):
        t.add_column(c, justify="right")
    for s in summary:
        t.add_row(
            *(str(s[k]) for k in ("level", "tau_max", "cells", "min", "median", "max")), "{}–{}".format(*s["s2_levels"])
        )
    out_console().print(t)
    if compare_mp16:
        t2 = Table(title="vs MP-16 partitions (GeoEstimation, 4,723,695 images), taus scaled to this sample")
        for c in (
            "tau_max (MP-16)",
            "MP-16 cells",
            "scaled tau_max",
            "cells here",
            "MP-16 median",
            "median here×scale",
            "shared cell tokens",
        ):
            t2.add_column(c, justify="right")
        for r in result["mp16_comparison"]:
            t2.add_row(
                str(r["tau_max_mp16"]),
                str(r["mp16_cells"]),
                str(r["tau_max_scaled"]),
                str(r["cells"]),
                f"{r['mp16_median']:.0f}",
                f"{r['median_scaled_up']:.0f}",
                f"{r['shared_tokens']}",
            )
        out_console().print(t2)
    if out is not None:
        out_console().print(f"partition written to {out}")


@app.command("train")
def train_command(
    objective: Annotated[str, typer.Argument(help="geosurge, geoclip or g3")],
    train: Annotated[Path, typer.Option("--train", help="Training shard folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, metrics.csv, tensorboard/).")],
    val: Annotated[Path | None, typer.Option("--val", help="Validation shard folder (early stopping).")] = None,
    partition: Annotated[
        Path | None,
        typer.Option("--partition", help="Partition .npz (geosurge; default: built from the training coordinates)."),
    ] = None,
    tau_max: Annotated[
        str | None, typer.Option("--tau-max", help="Comma-separated tau_max (when building the partition).")
    ] = None,
    tau_min: Annotated[int | None, typer.Option("--tau-min", help="Drop cells with fewer photos.")] = None,
    levels: Annotated[int, typer.Option("--levels", help="Use the finest N levels of the partition (0 = all).")] = 0,
    loss: Annotated[str, typer.Option("--loss", help="InfoNCE variant: full or inbatch.")] = "inbatch",
    proj_hidden: Annotated[int, typer.Option(help="Hidden width of the visual projection (0 = linear).")] = 0,
    epochs: Annotated[int, typer.Option(help="Passes over the training shards.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Global batch size.")] = 1024,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = 1e-4,
    gamma: Annotated[float, typer.Option(help="LR decay factor per epoch.")] = 0.5,
    patience: Annotated[int, typer.Option(help="Early-stopping patience (epochs).")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed (initialisation, batch order).")] = 0,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Steps between checkpoints (0 = epoch ends).")
    ] = 0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after this many steps (0 = no limit).")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    queue_size: Annotated[int, typer.Option("--queue-size", help="GeoCLIP GPS queue length.")] = 4096,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="GeoCLIP: start from the published weights.")
    ] = False,
    freeze_location: Annotated[
        bool, typer.Option("--freeze-location", help="GeoCLIP: keep the location encoder fixed.")
    ] = False,
    threads: Annotated[int, typer.Option(help="Torch threads (0 = default).")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard/--no-tensorboard", help="Write TensorBoard logs to OUT/tensorboard/.")
    ] = True,
    kill_at_step: Annotated[int, typer.Option("--kill-at-step", hidden=True)] = 0,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, or float64 for equivalence checks.")] = "float32",
    optimizer: Annotated[
        str,
        typer.Option(
            "--optimizer",
            help="adamw (exact, default) or lazy-adamw (GeoSURGE in-batch: update only the embedding rows of "
            "the batch's cells; an approximation, single process).",
        ),
    ] = "adamw",
) -> None:
    """Train a GeoSURGE or GeoCLIP head on embedding shards (torchrun-aware)."""
    from terraloc.train import distributed
    from terraloc.train.objectives import build_objective
    from terraloc.train.shards import ShardSet
    from terraloc.train.trainer import TrainConfig, fit, report_progress

    info = distributed.init()
    try:
        tr = ShardSet(train)
        va = ShardSet(val) if val is not None else None
        obj = build_objective(
            objective, tr, val=va, seed=seed, partition=partition, tau_max=_parse_taus(tau_max), tau_min=tau_min,
            levels=levels, loss=loss, proj_hidden=proj_hidden, queue_size=queue_size, pretrained=pretrained,
            freeze_location=freeze_location,
            log=(lambda m: err_console.print(m, markup=False)) if info.is_main else None,
        )  # fmt: skip
        cfg = TrainConfig(
            out_dir=out,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            gamma=gamma,
            patience=patience,
            seed=seed,
            checkpoint_every=checkpoint_every,
            max_steps=max_steps,
            resume=resume,
            progress=progress,
            tensorboard=tensorboard,
            threads=threads,
            kill_at_step=kill_at_step,
            dtype=dtype,
            optimizer=optimizer,
        )
        res = fit(obj, tr, va, cfg, info, progress=report_progress)
        if info.is_main:
            err_console.print(
                f"{res.epochs_run} epoch(s), {res.steps} steps, best val loss {res.best_val_loss:.4f} "
                f"(epoch {res.best_epoch}), {res.samples_per_s:.0f} samples/s"
                + (", stopped early" if res.stopped_early else ""),
                markup=False,
            )
    finally:
        distributed.shutdown(info)


@bench_app.command("geosurge")
def bench_geosurge(
    quick: Annotated[bool, typer.Option("--quick", help="Fewer epochs (under five minutes).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    geometry: Annotated[
        str,
        typer.Option(
            "--geometry",
            help="mp16: the paper's taus scaled to the sample (MP-16's cells); "
            "coarse: taus / 2.5 (fewer, fuller cells).",
        ),
    ] = "mp16",
) -> None:
    """Hierarchy-depth ablation (1/3/5/7 levels) and GeoSURGE vs GeoCLIP-style head on the SYNTHETIC world."""
    from terraloc.evaluate.thresholds import THRESHOLD_KEYS
    from terraloc.progress import callback
    from terraloc.train.ablation import run_bench
    from terraloc.train.trainer import report_progress

    res = run_bench(
        quick=quick,
        progress=report_progress,
        log=None if as_json else (lambda m: err_console.print(m, markup=False)),
        geometry=geometry,
        build_progress=callback("location features of the synthetic world (first use only)"),
    )
    if as_json:
        typer.echo(json.dumps(res))
        return
    th = THRESHOLD_KEYS
    t = Table(
        title="SYNTHETIC world (real MP-16 coordinates, synthetic embeddings): % within km, test split; "
        f"geometry {res['geometry']} ({', '.join(str(x) for x in res['partition_sizes'])} cells)"
    )
    t.add_column("head")
    for x in th:
        t.add_column(f"{x} km", justify="right")
    t.add_column("median km", justify="right")
    rows = [(f"GeoSURGE {k} level(s)", v) for k, v in res["levels"].items()]
    rows += [(f"GeoSURGE {k} level(s), cell centre", v) for k, v in res["levels_cell_centre"].items()]
    if res.get("levels_7_finest_level_only"):
        rows.append(("GeoSURGE 7 levels, scored by its finest level only", res["levels_7_finest_level_only"]))
    rows += [("GeoCLIP-style head", res["geoclip_head"]), ("untrained, 1 level", res["untrained_1_level"])]
    for name, r in rows:
        t.add_row(name, *[f"{r['accuracy'][x]:.1f}" for x in th], f"{r['median_km']:.0f}")
    out_console().print(t)
    diff = res["diff_7_minus_1_levels"]
    out_console().print(
        "7 minus 1 level (refined, percentage points, paired 95% bootstrap): "
        + ", ".join(f"{x} km {diff[x]['diff']:+.2f} [{diff[x]['ci95'][0]:+.2f}, {diff[x]['ci95'][1]:+.2f}]" for x in th)
    )
    out_console().print(
        "top-1 leaf = true leaf (%): " + ", ".join(f"{k}: {v:.2f}" for k, v in res["leaf_accuracy"].items())
    )
    out_console().print(
        f"GeoSURGE training {res['train_samples_per_s']:.0f} samples/s (in-batch InfoNCE, batch 1024; "
        f"full softmax {res['train_samples_per_s_full_softmax']:.0f}); "
        f"GeoCLIP head {res['geoclip_train_samples_per_s']:.0f} "
        f"(frozen location encoder), full GeoCLIP objective {res['geoclip_full_objective_train_samples_per_s']:.0f}; "
        f"inference {res['inference_ms_per_image']:.3f} ms/image ({res['inference_ms_per_image_refined']:.3f} refined)"
    )


@bench_app.command("geosurge-train")
def bench_geosurge_train(
    steps: Annotated[int, typer.Option("--steps", help="Training steps per measurement (batch 1024).")] = 12,
    threads: Annotated[int, typer.Option("--threads", help="Torch threads (0 = default).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Training throughput from shards (GeoSURGE exact / lazy AdamW, full softmax, GeoCLIP) on the SYNTHETIC world."""
    import torch

    from terraloc.config import home_dir
    from terraloc.train.synthetic import WorldSpec, build_world
    from terraloc.train.throughput import run_throughput

    if threads:
        torch.set_num_threads(threads)
    root = home_dir() / "synthetic"
    from terraloc.progress import callback

    world = build_world(root, WorldSpec(), progress=callback("location features of the synthetic world (first use)"))
    say = None if as_json else (lambda m: err_console.print(m, markup=False))
    res = run_throughput(world.train, root / "bench-runs" / "throughput", steps=steps, log=say)
    if as_json:
        typer.echo(json.dumps(res))
        return
    t = Table(title=f"Training samples/s from SYNTHETIC shards, batch 1024, {res['torch_threads']} thread(s)")
    t.add_column("GeoSURGE, 7 levels")
    for c in ("cells", "in-batch, exact AdamW", "in-batch, LAZY AdamW (approx.)", "full softmax, exact AdamW"):
        t.add_column(c, justify="right")
    t.add_column("GFLOP/step (in-batch)", justify="right")
    t.add_column("compute bound (in-batch)", justify="right")
    for name, r in res["geosurge"].items():
        t.add_row(
            name,
            f"{sum(r['level_sizes']):,}",
            f"{r['inbatch_exact_adamw']:.0f}",
            f"{r['inbatch_lazy_adamw']:.0f}",
            f"{r['full_softmax_exact_adamw']:.0f}",
            f"{r['gflop_per_step_inbatch']:.1f}",
            f"{r['compute_bound_samples_per_s_inbatch']:,}",
        )
    out_console().print(t)
    out_console().print(
        f"GeoCLIP objective: {res['geoclip_frozen_location']:.0f} samples/s (frozen location encoder), "
        f"{res['geoclip_full_objective']:.0f} (location encoder trained, queue 4096). "
        f"Plain matmul here: {res['matmul_gflops']:.1f} GFLOP/s; copy {res['copy_gb_per_s']:.1f} GB/s."
    )
