"""Bad and unusual image inputs: each gives a one-line per-file error or is handled correctly."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from terraloc.encoders.image.loading import find_images, load_image
from terraloc.errors import InputError


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from terraloc.encoders.image import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def _jpeg(color=(200, 30, 30), size=(64, 48), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", **kw)
    return buf.getvalue()


def _huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (the data is never decoded)."""
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def test_rgb_jpeg_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "a.jpg"
    p.write_bytes(_jpeg())
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (64, 48)
    assert load_image(p.read_bytes()).size == (64, 48)
    assert load_image(np.zeros((5, 7, 3), np.uint8)).size == (7, 5)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"hello, this is text, not a picture\n" * 10, "not an image"),
        (_jpeg(size=(400, 300), quality=95)[:600], "truncated"),
        (_huge_png(10_001, 10_000), "100 MP limit"),
    ],
    ids=["zero-byte", "non-image", "truncated-jpeg", "decompression-bomb"],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(InputError) as exc:
        load_image(p)
    text = str(exc.value)
    assert message in text and str(p) in text and "\n" not in text


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(InputError, match="no image files"):
        find_images(tmp_path)


def test_cmyk_and_16bit(tmp_path: Path) -> None:
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(p, "JPEG", quality=100)
    img = load_image(p)
    assert img.mode == "RGB"
    r, g, b = img.getpixel((10, 5))
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta+yellow full → red

    p16 = tmp_path / "grey16.png"
    arr = np.full((8, 8), 65535 // 2, dtype=np.uint16)
    Image.fromarray(arr).save(p16)
    assert Image.open(p16).mode.startswith("I")
    img16 = load_image(p16)
    assert img16.mode == "RGB"
    assert abs(img16.getpixel((0, 0))[0] - 127) <= 1  # scaled by 16-bit depth, not clipped


def test_png_alpha_composited_on_white(tmp_path: Path) -> None:
    p = tmp_path / "alpha.png"
    im = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    im.putpixel((0, 0), (0, 0, 255, 255))
    im.save(p)
    img = load_image(p)
    assert img.mode == "RGB"
    assert img.getpixel((5, 5)) == (255, 255, 255)
    assert img.getpixel((0, 0)) == (0, 0, 255)


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    p = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(p).n_frames == 3
    r, g, b = load_image(p).getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    p = tmp_path / "rotated.jpg"
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(p, "JPEG", exif=exif, quality=100)
    img = load_image(p)
    assert img.size == (20, 40)
    assert img.getpixel((10, 5))[0] > 200  # left half went to the top
    assert img.getpixel((10, 35))[0] < 50


def test_cli_batch_continues_past_bad_files(tmp_path: Path, cli, tiny_clip: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "good1.jpg").write_bytes(_jpeg((10, 120, 200)))
    (photos / "good2.png").write_bytes(_jpeg((200, 120, 10)))  # JPEG data with a .png name: still fine
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.jpg").write_bytes(b"not an image")
    (photos / "trunc.jpg").write_bytes(_jpeg(size=(300, 200), quality=95)[:500])
    (photos / "bomb.png").write_bytes(_huge_png(20_000, 20_000))
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    out = tmp_path / "out.csv"
    r = cli(
        "predict", photos, empty_dir, tmp_path / "missing.jpg",
        "--backbone", tiny_clip, "--format", "csv", "-o", out, "--top-k", "2",
    )  # fmt: skip
    assert r.code == 2
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 6, r.err
    assert "Traceback" not in r.err
    import pandas as pd

    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    ok = df[df["error"] == ""]
    assert sorted(Path(p).name for p in ok["image"].unique()) == ["good1.jpg", "good2.png"]
    assert len(ok) == 4  # two images x top-2
    bad = df[df["error"] != ""]
    assert len(bad) == 6 and (bad["lat"] == "").all()
    # terraloc eval reads it: failed images count as no prediction
    from terraloc.evaluate import load_predictions

    preds = load_predictions(out)
    assert len(preds) == 8
