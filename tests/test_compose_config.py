"""GeolocatorConfig (validated, saved, loaded), the one option resolver and index specs — no models loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terraloc.errors import InputError, MissingResourceError
from terraloc.pipeline import GeolocatorConfig, resolve_config
from terraloc.search.spec import format_index_spec, parse_index_spec


def test_top_level_import() -> None:
    import terraloc
    from terraloc import Geolocator
    from terraloc import GeolocatorConfig as Cfg

    assert Cfg is GeolocatorConfig and Geolocator.__name__ == "Geolocator"
    assert {"Geolocator", "GeolocatorConfig"} <= set(terraloc.__all__)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"k_neighbors": 0}, "field 'k_neighbors': Input should be greater than or equal to 1"),
        ({"no_such_option": 1}, "field 'no_such_option': unknown option"),
        ({"index": "hierarchical@beam"}, "field 'index': expected key=value"),
        ({"index": "hierarchical@beam=x"}, "field 'index': option value 'x'"),
        ({"reasoner": "oracle"}, "field 'reasoner': unknown reasoner 'oracle'; known: rag"),
        ({"head": " "}, "field 'head': must not be empty"),
    ],
)
def test_config_refuses_bad_values_in_one_line(fields: dict, message: str) -> None:
    with pytest.raises(InputError) as exc:
        GeolocatorConfig(**fields)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_config_save_load_round_trip_and_old_names(tmp_path: Path) -> None:
    cfg = GeolocatorConfig(refdb="db/", search="IVF1024,Flat@nprobe=16", ten_crop=True)  # old field names
    assert cfg.db == "db/" and cfg.index == "IVF1024,Flat@nprobe=16" and cfg.refdb == cfg.db
    path = cfg.save(tmp_path)
    body = json.loads(path.read_text())
    assert body["format"] == "terraloc-geolocator" and body["version"] == 1 and body["db"] == "db/"
    assert GeolocatorConfig.load(tmp_path) == cfg
    body["k_neighbors"] = -1
    path.write_text(json.dumps(body))
    with pytest.raises(InputError, match=rf"{path}, field 'k_neighbors'"):
        GeolocatorConfig.load(path)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not a terraloc geolocator config"):
        GeolocatorConfig.load(path)
    with pytest.raises(MissingResourceError, match="no saved geolocator"):
        GeolocatorConfig.load(tmp_path / "empty")


def test_replace_drops_hashes_that_no_longer_apply() -> None:
    cfg = GeolocatorConfig(
        backbone="a", backbone_hash="h", files={"checkpoint": {"path": "/x.pt", "sha256": "0" * 16}}, head="geosurge"
    )
    assert cfg.replace(places=False).files == cfg.files and cfg.replace(places=False).backbone_hash == "h"
    assert cfg.replace(backbone="b").backbone_hash is None and cfg.replace(backbone="b").files == cfg.files
    assert cfg.replace(checkpoint="/y.pt").files == {} and cfg.replace(checkpoint="/y.pt").backbone_hash == "h"


def test_resolve_config_rules(tmp_path: Path) -> None:
    assert resolve_config()[0].head == "geoclip"
    assert resolve_config()[0].backbone == "clip-vit-large-patch14"
    assert resolve_config(checkpoint=tmp_path / "gs.pt")[0].head == "geosurge"
    assert resolve_config(fusion=tmp_path / "f.pt")[0].head == "geosurge+fusion"
    assert resolve_config(head="geosurge", fusion=tmp_path / "f.pt")[0].head == "geosurge+fusion"
    db = tmp_path / "db"
    db.mkdir()
    (db / "manifest.json").write_text(json.dumps({"backbone": {"id": "efficientnet-lite0", "hash": "x", "dim": 1280}}))
    cfg, source = resolve_config(db=db, backbone=None)  # None = not given
    assert (cfg.head, cfg.backbone, cfg.db, source) == ("refdb", "efficientnet-lite0", str(db), None)
    # --db next to another head (the rag stage's neighbours) keeps that head
    assert resolve_config(db=db, head="geoclip")[0].head == "geoclip"
    # a preset, then a saved folder, with overrides
    cfg, _ = resolve_config("geoclip-336", index="flat", places=False)
    assert cfg.backbone == "clip-vit-large-patch14-336" and cfg.places is False
    saved = GeolocatorConfig(backbone="x", backbone_hash="h", batch_size=4).save(tmp_path / "m")
    cfg, source = resolve_config(tmp_path / "m", workers=1)
    assert (cfg.backbone, cfg.backbone_hash, cfg.batch_size, cfg.workers, source) == ("x", "h", 4, 1, saved)
    with pytest.raises(InputError, match="field 'model': 'nope' is neither a saved geolocator folder"):
        resolve_config("nope")


def test_index_specs() -> None:
    assert parse_index_spec("flat") == ("flat", {})
    assert parse_index_spec("hierarchical@spill=0.06,routing=learned,leaf_beam=16,parent_weight=0.015") == (
        "hierarchical",
        {"spill": 0.06, "routing": "learned", "leaf_beam": 16, "parent_weight": 0.015},
    )
    assert parse_index_spec("IVF1024,Flat@nprobe=16") == ("IVF1024,Flat", {"params": "nprobe=16"})
    assert parse_index_spec("IVF1024,Flat") == ("IVF1024,Flat", {"params": "nprobe=16"})  # documented default
    assert parse_index_spec("HNSW32") == ("HNSW32", {"params": "efSearch=64"})
    assert format_index_spec(*parse_index_spec("IVF4096,PQ64@nprobe=32")) == "IVF4096,PQ64@nprobe=32"
    with pytest.raises(InputError, match="empty index spec"):
        parse_index_spec("@x=1")


def test_predict_cli_refuses_bad_options_in_one_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    img = tmp_path / "a.jpg"
    img.write_bytes(b"x")
    r = cli("predict", img, "--index", "hierarchical@beam")
    assert r.code == 2 and "field 'index'" in r.err and "Traceback" not in r.err
    r = cli("predict", img, "--head", "no-such-head", "--backbone", "efficientnet-lite0")
    assert r.code == 2 and "unknown head 'no-such-head'" in r.err
    r = cli("predict", img, "--model", tmp_path)
    assert r.code == 2 and "no saved geolocator" in r.err
    r = cli("predict", img, "--backbone", "efficientnet-lite0", "--ten-crop", "--db", tmp_path)
    assert r.code == 2 and "ten-crop is not supported by the refdb head" in r.err
