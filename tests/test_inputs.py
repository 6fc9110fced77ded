"""terraloc.inputs: one reader for folders, globs, lists and CSV/Parquet manifests of photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from terraloc.errors import InputError
from terraloc.inputs import NoPhotosError, image_extensions, read_photo_inputs


def _jpg(path: Path, color: tuple[int, int, int] = (10, 20, 30), gps: tuple[float, float] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if gps is not None:

        def dms(x: float) -> tuple[float, float, float]:
            x = abs(x)
            d = int(x)
            m = int((x - d) * 60)
            return (float(d), float(m), round((x - d - m / 60) * 3600, 4))

        lat, lon = gps
        exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)}
    Image.new("RGB", (16, 16), color).save(path, "JPEG", exif=exif)
    return path


def _reasons(inp) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {Path(p).name: r for p, r in inp.skipped}


def test_folder_is_recursive_sorted_and_reports_every_skipped_file(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _jpg(root / "b.jpg")
    _jpg(root / "a.JPEG")
    _jpg(root / "sub" / "deeper" / "c.png")
    (root / "notes.txt").write_text("hello")
    (root / "pic.avif").write_bytes(b"\0\0\0\x1cftypavif")
    (root / "pic.heic").write_bytes(b"\0\0\0\x1cftypheic")
    (root / "metadata.csv").write_text("IMG_ID,LAT,LON\nb.jpg,1,2\n")
    (root / ".DS_Store").write_bytes(b"x")
    (root / ".cache").mkdir()
    _jpg(root / ".cache" / "thumb.jpg")
    os.symlink(root, root / "sub" / "loop")  # a link back up the tree
    os.symlink(root / "gone.jpg", root / "dangling.jpg")
    os.mkfifo(root / "pipe.jpg")

    inp = read_photo_inputs(root)
    avif = [] if ".avif" not in image_extensions() else ["pic.avif"]  # Pillow >= 11.3 decodes AVIF
    assert [Path(p).relative_to(root).as_posix() for p in inp.paths] == ["a.JPEG", "b.jpg", *avif, "sub/deeper/c.png"]
    assert [i for i in inp.ids if i != "pic"] == ["a", "b", "c"] and inp.coords is None
    why = _reasons(inp)
    assert why["notes.txt"] == "not an image (.txt)"
    assert why["pic.heic"].startswith("unsupported image format (HEIC")
    if ".avif" not in image_extensions():
        assert why["pic.avif"].startswith("unsupported image format (AVIF")
    assert "manifest" in why["metadata.csv"]
    assert why[".DS_Store"] == "hidden file" and why[".cache"] == "hidden folder"
    assert why["loop"].startswith("symlink loop")
    assert why["dangling.jpg"] == "broken symbolic link"
    assert why["pipe.jpg"] == "not a regular file"
    assert "not an image" in inp.skip_summary()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_skipped(tmp_path: Path) -> None:
    _jpg(tmp_path / "ok.jpg")
    locked = _jpg(tmp_path / "locked.jpg")
    locked.chmod(0)
    try:
        inp = read_photo_inputs(tmp_path)
    finally:
        locked.chmod(0o644)
    assert [Path(p).name for p in inp.paths] == ["ok.jpg"]
    assert _reasons(inp)["locked.jpg"] == "permission denied"


def test_glob_list_and_single_file(tmp_path: Path) -> None:
    a = _jpg(tmp_path / "x" / "a.jpg")
    b = _jpg(tmp_path / "x" / "y" / "b.jpg")
    (tmp_path / "x" / "y" / "c.txt").write_text("")
    inp = read_photo_inputs(str(tmp_path / "x" / "**" / "*"))
    assert inp.paths == [str(a), str(b)] and _reasons(inp)["c.txt"].startswith("not an image")
    assert read_photo_inputs(str(tmp_path / "x" / "*.jpg")).paths == [str(a)]
    with pytest.raises(InputError, match="pattern matches no files"):
        read_photo_inputs(str(tmp_path / "*.png"))
    # a list: folders, files and a manifest; a photo named twice is kept once; a missing one is skipped
    man = tmp_path / "list.csv"
    man.write_text("path\nx/a.jpg\n")
    inp = read_photo_inputs([tmp_path / "x", b, man, tmp_path / "nope.jpg"])
    assert inp.paths == [str(a), str(b)]
    assert ("" + str(tmp_path / "nope.jpg"), "file not found") in inp.skipped
    # one explicit file is used whatever its suffix (the decoder reports what it cannot read)
    odd = tmp_path / "photo.bin"
    odd.write_bytes(b"junk")
    assert read_photo_inputs(odd).paths == [str(odd)]
    with pytest.raises(InputError, match="no such file or folder"):
        read_photo_inputs(tmp_path / "missing")


def test_empty_folder_raises_with_the_skipped_list(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(NoPhotosError, match=r"no usable photos \(1 not an image\)") as info:
        read_photo_inputs(tmp_path)
    assert info.value.skipped == [(str(tmp_path / "readme.md"), "not an image (.md)")]


def test_exif_coordinates_and_the_manifest_hint(tmp_path: Path) -> None:
    _jpg(tmp_path / "paris.jpg", gps=(48.8566, 2.3522))
    _jpg(tmp_path / "nogps.jpg")
    inp = read_photo_inputs(tmp_path, require_coords=True)
    assert inp.ids == ["paris"] and inp.coords is not None
    np.testing.assert_allclose(inp.coords, [[48.8566, 2.3522]], atol=1e-3)
    assert _reasons(inp)["nogps.jpg"] == "no EXIF GPS position" and inp.hint is None
    # no GPS anywhere, but a manifest beside the photos: the error says which file to pass
    (tmp_path / "paris.jpg").unlink()
    (tmp_path / "metadata.csv").write_text("IMG_ID,LAT,LON\nnogps.jpg,1,2\n")
    with pytest.raises(NoPhotosError) as info:
        read_photo_inputs(tmp_path, require_coords=True)
    assert str(tmp_path / "metadata.csv") in str(info.value) and info.value.hint
    assert (str(tmp_path / "nogps.jpg"), "no EXIF GPS position") in info.value.skipped


def test_manifest_forms_case_insensitive_relative_paths(tmp_path: Path) -> None:
    _jpg(tmp_path / "img" / "a.jpg")
    _jpg(tmp_path / "img" / "b.jpg")
    for header in ("IMG_ID,LAT,LON", "path,lat,lon", "Filename,Latitude,Longitude", "image,lat,lng"):
        m = tmp_path / "m.csv"
        m.write_text(f"{header}\nimg/a.jpg,10.5,-20\nimg/b.jpg,-1,179\n")
        inp = read_photo_inputs(m, require_coords=True)
        assert inp.paths == [str(tmp_path / "img" / "a.jpg"), str(tmp_path / "img" / "b.jpg")], header
        assert inp.ids == ["img/a.jpg", "img/b.jpg"] and inp.lines == [2, 3]
        np.testing.assert_array_equal(inp.coords, [[10.5, -20.0], [-1.0, 179.0]])
    # explicit names match case-insensitively; a separate id column gives the ids
    m.write_text("Path,Photo_ID,Y,X\nimg/a.jpg,p1,1,2\n")
    inp = read_photo_inputs(m, id_col="photo_id", lat_col="y", lon_col="x", require_coords=True)
    assert inp.ids == ["p1"] and inp.paths == [str(tmp_path / "img" / "a.jpg")]
    assert inp.columns == {"id": "Photo_ID", "path": "Path", "lat": "Y", "lon": "X"}
    # absolute paths stay; a missing file is skipped with its line; no coordinates -> coords None
    m.write_text(f"path\n{tmp_path / 'img' / 'b.jpg'}\nimg/none.jpg\n")
    inp = read_photo_inputs(m)
    assert inp.paths == [str(tmp_path / "img" / "b.jpg")] and inp.coords is None
    assert inp.skipped == [(str(tmp_path / "img" / "none.jpg"), "m.csv line 3: file not found")]


def test_parquet_manifest(tmp_path: Path) -> None:
    _jpg(tmp_path / "a.jpg")
    pd.DataFrame({"IMG_ID": ["a.jpg"], "LAT": [1.5], "LON": [2.5]}).to_parquet(tmp_path / "m.parquet")
    inp = read_photo_inputs(tmp_path / "m.parquet", require_coords=True)
    assert inp.paths == [str(tmp_path / "a.jpg")]
    np.testing.assert_array_equal(inp.coords, [[1.5, 2.5]])


@pytest.mark.parametrize(
    ("text", "kwargs", "fragment"),
    [
        ("path,lat,lon\na.jpg,north,2\n", {}, "line 2, field 'lat': 'north' is not a number"),
        ("path,LAT,LON\na.jpg,1,2\nb.jpg,95,2\n", {}, "line 3, field 'LAT': latitude 95.0 is outside [-90, 90]"),
        ("path,lat,lon\na.jpg,1,\n", {"require_coords": True}, "line 2, field 'lon': is empty"),
        ("path,lat,lon\na.jpg,1,2\n./a.jpg,3,4\n", {}, "line 3, field 'path': duplicate image id './a.jpg'"),
        ("path,lat,lon\n,1,2\n", {}, "line 2, field 'path': empty image id"),
        ("path,x\na.jpg,1\n", {"require_coords": True}, "no latitude column (looked for lat, latitude"),
        ("path,lat,lon\na.jpg,1,2\n", {"lat_col": "breite"}, "missing column(s) breite; found path, lat, lon"),
        ("path,lat,lon\na.jpg,1,2\n", {"id_col": "photo"}, "field 'photo': missing column(s) photo"),
        ("who,what\na,b\n", {}, "no path or id column"),
        ("path,lat,lon\n", {}, "no data rows"),
        ("", {}, "file is empty"),
    ],
)
def test_manifest_errors_name_file_line_and_column(tmp_path: Path, text: str, kwargs: dict, fragment: str) -> None:
    m = tmp_path / "bad.csv"
    m.write_text(text)
    with pytest.raises(InputError) as info:
        read_photo_inputs(m, **kwargs)
    msg = str(info.value)
    assert msg.startswith(str(m)) and fragment in msg, msg
    assert "\n" not in msg


def test_ground_truth_mode_keeps_rows_without_files(tmp_path: Path) -> None:
    m = tmp_path / "gt.csv"
    m.write_text("IMG_ID,LAT,LON\nfar/away.jpg,1,2\n")
    inp = read_photo_inputs(m, require_coords=True, check_files=False)
    assert inp.ids == ["far/away.jpg"] and inp.paths == [str(tmp_path / "far" / "away.jpg")]


def test_shared_manifests_read_as_is(shared: Path) -> None:
    im2 = shared / "data" / "photos" / "im2gps3k_dev"
    inp = read_photo_inputs(im2 / "metadata.csv", require_coords=True)
    assert len(inp) == 300 and inp.coords is not None and inp.coords.shape == (300, 2) and not inp.skipped
    assert Path(inp.paths[0]).parent == im2 and inp.columns["lat"] == "LAT"
    osv = read_photo_inputs(shared / "data" / "photos" / "osv5m" / "osv5m_photos.csv", require_coords=True)
    assert len(osv) == 71 and osv.columns == {"id": "path", "path": "path", "lat": "lat", "lon": "lon"}
    # the folder itself: 300 photos without EXIF GPS -> the hint names metadata.csv
    with pytest.raises(NoPhotosError, match=r"metadata\.csv"):
        read_photo_inputs(im2, require_coords=True)
    folder = read_photo_inputs(im2)
    assert len(folder) == 300 and ("metadata.csv" in {Path(p).name for p, _ in folder.skipped})
