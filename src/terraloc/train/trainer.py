"""The training loop shared by the GeoSURGE and GeoCLIP objectives.

AdamW (lr 1e-4, weight decay 1e-4), step decay (gamma 0.5 after every epoch), early stopping
after ``patience`` epochs without a lower validation loss, fixed seeds, checkpoints every
``checkpoint_every`` steps and at every epoch end (``last.pt``; the best epoch is ``best.pt``),
exact resume (the data order depends only on ``(seed, epoch)``, the loop skips the batches a
checkpoint already consumed), a progress callback, ``metrics.csv`` and TensorBoard events.
Under ``torchrun`` the objective is wrapped in ``DistributedDataParallel``; only rank 0 writes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from terraloc.errors import InputError
from terraloc.io import atomic_write, atomic_write_text
from terraloc.train.distributed import DistInfo, barrier, init
from terraloc.train.optim import make_optimizer
from terraloc.train.shards import ShardSet

ProgressFn = Callable[[int, int, int, int, float | None], None]
"""``progress(epoch, epochs, step, steps_per_epoch, loss)``; see :func:`fit`."""


def report_progress(epoch: int, epochs: int, step: int, steps: int, loss: float | None) -> None:
    """A :data:`ProgressFn` that reports each epoch as a task to :mod:`terraloc.progress` (the front end's bar)."""
    from terraloc.progress import report

    report(f"training epoch {epoch + 1}/{epochs}", step, steps)


@dataclass
class TrainConfig:
    """Optimisation settings (the paper's defaults)."""

    out_dir: Path
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-4
    weight_decay: float = 1e-4
    gamma: float = 0.5
    patience: int = 4
    seed: int = 0
    checkpoint_every: int = 0  # steps; 0 = epoch ends only
    max_steps: int = 0  # 0 = no limit (for smoke runs)
    resume: bool = False
    progress: bool = True
    tensorboard: bool = True
    threads: int = 0  # torch intra-op threads; 0 = leave as is
    kill_at_step: int = 0  # testing aid: SIGKILL this process right after the checkpoint at this step
    log_every: int = 20
    dtype: str = "float32"  # "float64" for exact-equivalence checks (resume, DDP)
    optimizer: str = "adamw"  # exact fused AdamW; "lazy-adamw" = touched embedding rows only (approximation)

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        for k in (
            "out_dir",
            "epochs",
            "resume",
            "progress",
            "tensorboard",
            "threads",
            "kill_at_step",
            "log_every",
            "max_steps",
            "checkpoint_every",
            "patience",
        ):
            d.pop(k)
        if d["optimizer"] == "adamw":
            d.pop("optimizer")  # runs made before the option existed used exact AdamW too
        return d


@dataclass
class TrainResult:
    """What :func:`fit` did: epochs run, best validation loss, throughput, metric rows."""

    epochs_run: int
    best_val_loss: float
    best_epoch: int
    steps: int
    samples_per_s: float
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def _set_seeds(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _write_metrics_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def fit(
    objective: nn.Module,
    train: ShardSet,
    val: ShardSet | None,
    cfg: TrainConfig,
    info: DistInfo | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train ``objective`` (a :class:`GeoSurgeObjective` or :class:`GeoClipObjective`).

    ``progress(epoch, epochs, step, steps_per_epoch, loss)`` is called on rank 0 (when
    ``cfg.progress``) at the start of every epoch (``loss`` ``None``, ``step`` the batches a resumed
    checkpoint already consumed) and after every step; ``epoch`` counts from 0.

    Raises:
        InputError: the output folder holds a run (without ``resume``), or a checkpoint made with
            another configuration, or shards whose width differs from the model's input.
    """
    info = info or init()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    last = out / "last.pt"
    ident = {"objective": objective.identity(), "train": cfg.identity(), "shard_dim": train.dim}  # type: ignore[operator]
    if val is not None and val.dim != train.dim:
        raise InputError(f"validation shards have dim {val.dim}, training shards {train.dim}", path=val.path)
    backbone = train.backbone
    other = val.backbone if val is not None else None
    if (
        other is not None
        and backbone is not None
        and (other["id"], other["hash"]) != (backbone["id"], backbone["hash"])
    ):
        raise InputError(
            f"validation shards come from backbone '{other['id']}', training shards from '{backbone['id']}'",
            path=val.path if val is not None else None,
        )
    model_dim = getattr(getattr(objective, "model", None), "cfg", None)
    in_dim = model_dim.input_dim if model_dim is not None else getattr(objective.model, "input_dim", train.dim)  # type: ignore[union-attr]
    if in_dim != train.dim:
        raise InputError(
            f"shards have {train.dim}-d embeddings but the model expects {in_dim}", path=train.path, field="embedding"
        )
    if cfg.batch_size % info.world_size:
        raise InputError(f"batch size {cfg.batch_size} not divisible by {info.world_size} ranks", field="--batch-size")
    steps_per_epoch = train.steps_per_epoch(cfg.batch_size)
    if steps_per_epoch == 0:
        raise InputError(f"{train.n_rows} training rows are fewer than one batch of {cfg.batch_size}", path=train.path)

    _set_seeds(cfg.seed)
    if cfg.dtype not in ("float32", "float64"):
        raise InputError(f"dtype must be float32 or float64, got {cfg.dtype}", field="--dtype")
    dtype = getattr(torch, cfg.dtype)
    objective.to(dtype)
    params = [p for p in objective.parameters() if p.requires_grad]
    if cfg.optimizer == "lazy-adamw":
        if info.distributed:
            raise InputError("lazy AdamW (sparse table gradients) is single-process only", field="--optimizer")
        model = getattr(objective, "model", None)
        if not hasattr(model, "sparse_tables"):
            raise InputError("lazy AdamW applies to the GeoSURGE objective only", field="--optimizer")
        model.sparse_tables = True  # type: ignore[union-attr]
    opt = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=cfg.gamma)
    state: dict[str, Any] = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "best_val": float("inf"),
        "best_epoch": -1,
        "bad_epochs": 0,
        "history": "[]",
        "stopped": False,
        "loss_sum": 0.0,
        "loss_n": 0,
    }

    if last.exists():
        if not cfg.resume:
            raise InputError(
                "holds a previous run (last.pt); pass --resume to continue it or choose a new --out", path=out
            )
        payload = torch.load(last, map_location="cpu", weights_only=True)
        stored = json.loads(payload.get("run_identity", "{}"))
        if stored != ident:
            diff = sorted(k for k in set(stored) | set(ident) if stored.get(k) != ident.get(k))
            raise InputError(
                f"checkpoint was made with another configuration (differs in: {', '.join(diff)})", path=last
            )
        objective.load_payload(payload)  # type: ignore[operator]
        objective.load_extra_state(payload["objective_state"])  # type: ignore[operator]
        opt.load_state_dict(payload["optimizer"])
        sched.load_state_dict(payload["scheduler"])
        state.update(payload["train_state"])
    elif info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(ident, indent=1))
    barrier(info)
    history: list[dict[str, Any]] = json.loads(state["history"])

    def save(path: Path) -> None:
        if not info.is_main:
            return
        st = dict(state, history=json.dumps(history))
        payload = objective.payload(  # type: ignore[operator]
            {
                "run_identity": json.dumps(ident),
                # the backbone the training embeddings came from (prediction refuses another)
                "backbone": json.dumps(backbone),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "train_state": st,
                "objective_state": objective.extra_state(),  # type: ignore[operator]
            }
        )
        with atomic_write(path, "wb") as fh:
            torch.save(payload, fh)

    wrapped: nn.Module = objective
    if info.distributed:
        wrapped = nn.parallel.DistributedDataParallel(objective, broadcast_buffers=False)

    writer = None
    if cfg.tensorboard and info.is_main:
        from terraloc.extras import require

        require("tensorboard", "train")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))

    def report(epoch: int, step: int, loss: float | None) -> None:
        if progress is not None and cfg.progress and info.is_main:
            progress(epoch, cfg.epochs, step, steps_per_epoch, loss)

    train_time, train_samples, steps_timed = 0.0, 0, 0
    first_step = (0.0, 0)
    objective.train()
    stopped_by_limit = False
    while state["epoch"] < cfg.epochs and not state["stopped"] and not stopped_by_limit:
        epoch = int(state["epoch"])
        skip = int(state["step_in_epoch"])
        report(epoch, skip, None)
        t_read = time.perf_counter()
        for i, batch in enumerate(train.batches(cfg.batch_size, seed=cfg.seed, epoch=epoch)):
            if i < skip:
                t_read = time.perf_counter()
                continue
            t0 = time.perf_counter()
            read_s = t0 - t_read
            inputs = tuple(
                t.to(dtype) if t.is_floating_point() else t
                for t in objective.prepare(batch, info)  # type: ignore[operator]
            )
            loss = wrapped(*inputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            # Throughput counts shard reading + labels + forward/backward + optimiser of every
            # step but this process's first (one-off allocations; counted only if it is the
            # only one); checkpoints and validation are excluded.
            step_s = time.perf_counter() - t0 + read_s
            if steps_timed == 0:
                first_step = (step_s, len(batch))
            else:
                train_time += step_s
                train_samples += len(batch)
            steps_timed += 1
            last_loss = float(loss.detach())
            state["loss_sum"] += last_loss
            state["loss_n"] += 1
            state["step_in_epoch"] = i + 1
            state["global_step"] += 1
            gs = int(state["global_step"])
            report(epoch, i + 1, last_loss)
            if writer is not None and gs % cfg.log_every == 0:
                writer.add_scalar("train/loss", last_loss, gs)
            if cfg.checkpoint_every and gs % cfg.checkpoint_every == 0 and state["step_in_epoch"] < steps_per_epoch:
                save(last)
                barrier(info)
                if cfg.kill_at_step and gs == cfg.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
            if cfg.max_steps and gs >= cfg.max_steps:
                stopped_by_limit = True
                break
            t_read = time.perf_counter()
        if stopped_by_limit and state["step_in_epoch"] < steps_per_epoch:
            save(last)
            barrier(info)
            break
        train_loss = state["loss_sum"] / state["loss_n"] if state["loss_n"] else float("nan")
        metrics = objective.validate(val) if val is not None else {"val_loss": train_loss}  # type: ignore[operator]
        row = {
            "epoch": epoch + 1,
            "step": int(state["global_step"]),
            "lr": opt.param_groups[0]["lr"],
            "train_loss": train_loss,
            **metrics,
        }
        history.append(row)
        sched.step()
        state["epoch"] = epoch + 1
        state["step_in_epoch"] = 0
        state["loss_sum"], state["loss_n"] = 0.0, 0
        improved = metrics["val_loss"] < state["best_val"]
        if improved:
            state["best_val"], state["best_epoch"], state["bad_epochs"] = metrics["val_loss"], epoch + 1, 0
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= cfg.patience:
                state["stopped"] = True
        if improved:
            save(out / "best.pt")
        save(last)
        if info.is_main:
            _write_metrics_csv(out / "metrics.csv", history)
            if writer is not None:
                for k, v in row.items():
                    if k not in ("epoch", "step"):
                        writer.add_scalar(f"epoch/{k}", v, epoch + 1)
        barrier(info)
    if writer is not None:
        writer.close()
    if steps_timed == 1:
        train_time, train_samples = first_step
    return TrainResult(
        epochs_run=int(state["epoch"]),
        best_val_loss=float(state["best_val"]),
        best_epoch=int(state["best_epoch"]),
        steps=int(state["global_step"]),
        samples_per_s=train_samples / train_time if train_time > 0 else 0.0,
        stopped_early=bool(state["stopped"]),
        history=history,
    )
