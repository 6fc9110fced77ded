"""Output files under faults: odd file names round-trip predict -> eval -> resume; a full or
read-only disk ends in one line and exit 2; resume redoes incomplete records and ends with every
image exactly once."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ODD = [
    os.fsdecode(b"lat\xff\xfe.jpg"),  # not UTF-8: a lone-surrogate str in Python
    "new\nline.jpg",
    'quo"te, comma.jpg',
    "plain.jpg",
]
K = 3


@pytest.fixture(scope="module")
def tiny_clip(shared: Path) -> Path:
    return shared / "data/reference/geoclip_predict/tiny_clip"


@pytest.fixture(scope="module")
def photos(shared: Path) -> list[Path]:
    return sorted((shared / "data/photos/osv5m").glob("*.jpg"))


def _odd_folder(root: Path, photos: list[Path]) -> Path:
    d = root / "odd"
    d.mkdir()
    for name, src in zip(ODD, photos, strict=False):
        shutil.copy(src, d / name)
    return d


def _csv_images(path: Path) -> list[tuple[str, int]]:
    """(image, rows) per image group, read the way resume and eval read it."""
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    out: list[tuple[str, int]] = []
    for r in rows:
        if out and out[-1][0] == r["image"] and r["rank"] != "1":
            out[-1] = (r["image"], out[-1][1] + 1)
        else:
            out.append((r["image"], 1))
    return out


def test_odd_file_names_round_trip(tmp_path: Path, cli, photos: list[Path], tiny_clip: Path) -> None:  # type: ignore[no-untyped-def]
    folder = _odd_folder(tmp_path, photos)
    out = tmp_path / "o.csv"
    r = cli("predict", folder, "--backbone", tiny_clip, "--format", "csv", "-o", out, "-k", K)
    assert r.code == 0, r.err
    raw = out.read_bytes()
    assert b"lat\xff\xfe.jpg" in raw  # the file system's bytes, written losslessly
    groups = _csv_images(out)
    assert sorted(g[0] for g in groups) == sorted(str(folder / n) for n in ODD)
    assert all(n == K for _, n in groups)

    # eval reads the names back and matches them to a ground truth that names the same files
    gt = tmp_path / "gt.csv"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "lat", "lon"])
    w.writerows([[n, 10.0 + i, 20.0] for i, n in enumerate(ODD)])
    gt.write_bytes(buf.getvalue().encode("utf-8", "surrogateescape"))
    r = cli("eval", "--predictions", out, "--ground-truth", gt, "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["n"] == 4 and res["n_predicted"] == 4

    # resume: everything is complete, nothing is redone, the file is unchanged
    r = cli("predict", folder, "--backbone", tiny_clip, "--format", "csv", "-o", out, "-k", K, "--resume")
    assert r.code == 0, r.err
    assert "4 already done" in r.err and out.read_bytes() == raw

    # the same through JSON Lines (names as \udcXX escapes: valid UTF-8 JSON, lossless)
    js = tmp_path / "o.jsonl"
    r = cli(
        "predict", folder, "--backbone", tiny_clip, "--format", "json", "-o", js, "-k", K, "--map", tmp_path / "m.html"
    )
    assert r.code == 0, r.err
    names = [json.loads(line)["image"] for line in js.read_text(encoding="utf-8").splitlines()]
    assert sorted(names) == sorted(str(folder / n) for n in ODD)
    r = cli("eval", "--predictions", js, "--ground-truth", gt, "--json")
    assert r.code == 0 and json.loads(r.out)["n_predicted"] == 4, r.err
    r = cli("predict", folder, "--backbone", tiny_clip, "--format", "json", "-o", js, "-k", K, "--resume")
    assert r.code == 0 and "4 already done" in r.err, r.err


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_half_written_last_record_is_redone(tmp_path: Path, cli, photos: list[Path], tiny_clip: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    imgs = photos[:4]
    out = tmp_path / f"o.{fmt}"
    r = cli("predict", *imgs, "--backbone", tiny_clip, "--format", fmt, "-o", out, "-k", K)
    assert r.code == 0, r.err
    data = out.read_bytes()
    if fmt == "csv":
        lines = data.splitlines(keepends=True)
        cut = b"".join(lines[:-1]) + lines[-1][:20]  # last image: 2 whole rows of 3 and part of the third
    else:
        cut = data[: len(data) - 40]  # last JSON line cut off
    out.write_bytes(cut)
    r = cli("predict", *imgs, "--backbone", tiny_clip, "--format", fmt, "-o", out, "-k", K, "--resume")
    assert r.code == 0, r.err
    assert "3 already done" in r.err
    _assert_each_once(out, fmt, imgs)
    # a short record (2 of 3 candidate rows, whole lines) is incomplete too
    if fmt == "csv":
        lines = out.read_bytes().splitlines(keepends=True)
        out.write_bytes(b"".join(lines[:-1]))
        r = cli("predict", *imgs, "--backbone", tiny_clip, "--format", fmt, "-o", out, "-k", K, "--resume")
        assert r.code == 0 and "3 already done" in r.err, r.err
        _assert_each_once(out, fmt, imgs)


def _assert_each_once(out: Path, fmt: str, imgs: list[Path]) -> None:
    if fmt == "csv":
        groups = _csv_images(out)
        assert sorted(g[0] for g in groups) == sorted(str(p) for p in imgs)
        assert all(n == K for _, n in groups)
    else:
        objs = [json.loads(x) for x in out.read_text().splitlines()]
        assert sorted(o["image"] for o in objs) == sorted(str(p) for p in imgs)
        assert all(len(o["candidates"]) == K for o in objs)


# ------------------------------------------------------------------ full and read-only disks


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _one_error_line(err: str, *words: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in errors[0], errors[0]


def _fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until about ``leave`` bytes are free."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_disk_full_then_resume_completes_each_image_once(
    tmp_path: Path, cli, photos: list[Path], tiny_clip: Path, fmt: str
) -> None:  # type: ignore[no-untyped-def]
    imgs = photos[:10]
    with _tmpfs(tmp_path / "disk", "256k") as disk:
        filler = _fill(disk, 6 * 1024)  # room for a few records only
        out = disk / f"o.{fmt}"
        r = cli("predict", *imgs, "--backbone", tiny_clip, "--format", fmt, "-o", out, "-k", K)
        assert r.code == 2
        _one_error_line(r.err, str(out), "ENOSPC", "complete image records", "--resume")
        kept = out.read_bytes()
        assert kept.endswith(b"\n")  # whole records only
        filler.unlink()  # space freed
        r = cli("predict", *imgs, "--backbone", tiny_clip, "--format", fmt, "-o", out, "-k", K, "--resume")
        assert r.code == 0, r.err
        assert "already done" in r.err
        _assert_each_once(out, fmt, imgs)


def test_read_only_outputs(tmp_path: Path, cli, photos: list[Path], tiny_clip: Path) -> None:  # type: ignore[no-untyped-def]
    imgs = photos[:3]
    with _tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "o.csv"
        r = cli("predict", *imgs[:2], "--backbone", tiny_clip, "--format", "csv", "-o", out, "-k", K)
        assert r.code == 0, r.err
        before = out.read_bytes()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        r = cli("predict", *imgs, "--backbone", tiny_clip, "--format", "csv", "-o", out, "-k", K, "--resume")
        assert r.code == 2
        _one_error_line(r.err, str(out), "EROFS")
        assert out.read_bytes() == before
        r = cli("predict", imgs[0], "--backbone", tiny_clip, "--format", "geojson", "-o", disk / "g.json")
        assert r.code == 2
        _one_error_line(r.err, "EROFS")
        r = cli("predict", imgs[0], "--backbone", tiny_clip, "--format", "csv", "--map", disk / "m.html")
        assert r.code == 2
        _one_error_line(r.err, "EROFS")
        gt = tmp_path / "gt.csv"
        gt.write_text("image,lat,lon\n" + "".join(f"{p.name},1.0,2.0\n" for p in imgs[:2]))
        r = cli("eval", "--predictions", out, "--ground-truth", gt, "--out", disk / "report")
        assert r.code == 2
        _one_error_line(r.err, "EROFS")
        coords = tmp_path / "c.csv"
        coords.write_text("lat,lon\n1,2\n3,4\n")
        r = cli("gallery", "build", "--coords", coords, "--out", disk / "gallery")
        assert r.code == 2
        _one_error_line(r.err, "EROFS")
        refs = tmp_path / "refs.csv"
        refs.write_text("path,lat,lon\n" + "".join(f"{p},1.0,2.0\n" for p in imgs[:2]))
        r = cli("db", "build", "--images", refs, "--backbone", tiny_clip, "--out", disk / "db")
        assert r.code == 2
        _one_error_line(r.err, "EROFS")
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        r = cli("predict", *imgs, "--backbone", tiny_clip, "--format", "csv", "-o", out, "-k", K, "--resume")
        assert r.code == 0 and "2 already done" in r.err, r.err
        _assert_each_once(out, "csv", imgs)


def test_nth_write_fails(
    tmp_path: Path, cli, photos: list[Path], tiny_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Where no tmpfs can be mounted: a write that fails part-way (the 3rd record, after 10 bytes)."""
    import terraloc.pipeline.outputs as outputs

    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            real_write(fd, bytes(data[:10]))  # a partial record reaches the disk...
            raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full
        return real_write(fd, data)

    imgs = photos[:5]
    out = tmp_path / "o.csv"
    monkeypatch.setattr(outputs.os, "write", failing_write)
    r = cli("predict", *imgs, "--backbone", tiny_clip, "--format", "csv", "-o", out, "-k", K)
    monkeypatch.undo()
    assert r.code == 2
    _one_error_line(r.err, "ENOSPC", "2 complete image records")
    assert len(_csv_images(out)) == 2 and out.read_bytes().endswith(b"\n")
    r = cli("predict", *imgs, "--backbone", tiny_clip, "--format", "csv", "-o", out, "-k", K, "--resume")
    assert r.code == 0 and "2 already done" in r.err, r.err
    _assert_each_once(out, "csv", imgs)


def test_skipped_folder_entries_are_reported_and_exit_2(
    tmp_path: Path, cli, photos: list[Path], tiny_clip: Path
) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "mixed"
    d.mkdir()
    shutil.copy(photos[0], d / "a.jpg")
    (d / "b.avif").write_bytes(b"\x00\x00\x00\x1cftypavif" + b"\x00" * 64)
    (d / "loop").symlink_to(d, target_is_directory=True)
    out = tmp_path / "o.csv"
    r = cli("predict", d, "--backbone", tiny_clip, "--format", "csv", "-o", out, "-k", K)
    assert r.code == 2 and "Traceback" not in r.err
    assert "b.avif" in r.err and "symlink loop" in r.err and "1 predicted, 2 failed" in r.err
    assert [g for g in _csv_images(out) if g[1] == K] == [(str(d / "a.jpg"), K)]


def test_eval_names_an_over_long_field_and_clips_it(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    pred = tmp_path / "p.csv"
    pred.write_text("image,lat,lon\na.jpg,1.0," + "2" * 200_000 + "x\n")
    gt = tmp_path / "gt.csv"
    gt.write_text("image,lat,lon\na.jpg,1.0,2.0\n")
    r = cli("eval", "--predictions", pred, "--ground-truth", gt)
    assert r.code == 2 and "line 2, field 'lon'" in r.err and "200001 characters" in r.err
    assert len(r.err) < 400
