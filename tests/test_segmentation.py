"""Segmentation providers: the real TFLite ADE20K model on shared photos, map resizing, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from terraloc.encoders.segmentation import (
    ADE20K_CLASSES,
    IGNORE_ID,
    SegmentationCache,
    class_histogram,
    class_name,
    load_image,
    load_map_png,
    load_segmenter,
    resize_map_nearest,
    save_map_png,
    validate_map,
)
from terraloc.errors import InputError, MissingResourceError

# A harbour: a cruise ship moored at a pier, sea in front, wooded hills and sky (picked by looking at previews).
HARBOUR = "248345692_9235d65429_81_77235581@N00.jpg"


@pytest.fixture(scope="module")
def tflite(shared: Path):  # type: ignore[no-untyped-def]
    return load_segmenter("tflite", num_threads=2)


def photo(shared: Path, name: str) -> Path:
    return shared / "data" / "photos" / "im2gps3k_dev" / name


def test_tflite_harbour_photo_has_water_sky_building(shared: Path, tflite) -> None:  # type: ignore[no-untyped-def]
    img = load_image(photo(shared, HARBOUR))
    seg = tflite.segment(img)
    assert seg.shape == (img.height, img.width) and seg.dtype == np.uint8
    top = [class_name(c) for c, frac in class_histogram(seg)[:6] if frac > 0.01]
    assert {"water", "sea", "river"} & set(top), top
    assert {"sky", "building"} <= set(top), top
    assert set(np.unique(seg).tolist()) <= set(range(150)) | {IGNORE_ID}


def test_tflite_handles_grayscale_tiny_and_extreme_images(tflite) -> None:  # type: ignore[no-untyped-def]
    gray = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (40, 1)), mode="L")
    for img in (gray, Image.new("RGB", (1, 1), (90, 140, 220)), Image.new("RGB", (3, 700), (30, 120, 30))):
        seg = tflite.segment(load_image(img))
        assert seg.shape == (img.height, img.width)


def test_tflite_class_mapping_is_shifted_by_one(tflite) -> None:  # type: ignore[no-untyped-def]
    from terraloc.encoders.segmentation.tflite import TFLITE_TO_TERRALOC

    assert tflite.labels[0] == "others" and TFLITE_TO_TERRALOC[0] == IGNORE_ID
    for k in (1, 3, 22, 150):  # wall, sky, water, flag
        assert tflite.labels[k].split()[0] == ADE20K_CLASSES[TFLITE_TO_TERRALOC[k]].split()[0]


def test_missing_and_corrupt_model_files(shared: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError, match="not found"):
        load_segmenter(f"tflite:{tmp_path / 'nope.tflite'}")
    labels = shared / "models" / "ade20k" / "labels.txt"
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(MissingResourceError, match="label"):
        load_segmenter(f"tflite:{bad}")
    shutil.copy(labels, tmp_path / "labels.txt")
    with pytest.raises(InputError, match="not a valid TFLite model"):
        load_segmenter(f"tflite:{bad}")
    good = tmp_path / "good" / "m.tflite"
    good.parent.mkdir()
    shutil.copy(shared / "models" / "ade20k" / "deeplabv3_mobilenetv2_ade20k.tflite", good)
    lines = labels.read_text().splitlines()
    (good.parent / "labels.txt").write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]))
    with pytest.raises(InputError, match="expected"):
        load_segmenter(f"tflite:{good}")
    with pytest.raises(InputError, match="unknown segmentation provider"):
        load_segmenter("segformer")


def test_nearest_resize_never_invents_ids() -> None:
    rng = np.random.default_rng(0)
    seg = rng.choice(np.array([0, 2, 21, 149, 255], dtype=np.uint8), size=(37, 53))
    for size in [(100, 7), (5, 5), (37, 53), (111, 159), (1, 1)]:
        out = resize_map_nearest(seg, size)
        assert out.shape == size and out.dtype == np.uint8
        assert set(np.unique(out).tolist()) <= set(np.unique(seg).tolist())
    # integer up-scaling replicates each pixel exactly
    assert np.array_equal(resize_map_nearest(seg, (74, 106)), seg.repeat(2, 0).repeat(2, 1))
    # a two-class edge stays a hard edge (no in-between id such as 1 between 0 and 2)
    edge = np.zeros((4, 4), np.uint8)
    edge[:, 2:] = 2
    assert set(np.unique(resize_map_nearest(edge, (9, 13))).tolist()) == {0, 2}


def test_map_files_and_unknown_ids(tmp_path: Path) -> None:
    seg = np.array([[0, 1, 149], [255, 2, 3]], dtype=np.uint8)
    save_map_png(tmp_path / "m.png", seg)
    assert np.array_equal(load_map_png(tmp_path / "m.png"), seg)
    Image.fromarray(np.array([[0, 200]], dtype=np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(InputError, match=r"bad\.png.*unknown ADE20K class id\(s\) \[200\]"):
        load_map_png(tmp_path / "bad.png")
    assert load_map_png(tmp_path / "bad.png", sanitize=True).tolist() == [[0, IGNORE_ID]]
    with pytest.raises(InputError, match="not found"):
        load_map_png(tmp_path / "missing.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="single-channel"):
        load_map_png(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="unknown"):
        validate_map(np.array([[-1, 0]]))


def test_cache_and_cli(shared: Path, tflite, tmp_path: Path, cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path / "home"))
    src = photo(shared, HARBOUR)
    cache = SegmentationCache(tflite, tmp_path / "cache")
    first, hit1 = cache.get(src)
    second, hit2 = cache.get(src)
    assert (hit1, hit2) == (False, True) and np.array_equal(first, second)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    r = cli("segment", str(src), str(tmp_path / "broken.jpg"), "--out", str(tmp_path / "out"))
    assert r.code == 2
    assert "broken.jpg" in r.err and r.err.count("error:") == 1
    stem = src.stem
    assert np.array_equal(load_map_png(tmp_path / "out" / f"{stem}.seg.png"), first)
    preview = Image.open(tmp_path / "out" / f"{stem}.preview.png")
    assert preview.width >= 2 * 100 and preview.mode == "RGB"
    rows = [json.loads(line) for line in (tmp_path / "out" / "summary.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["top_classes"][0]["name"] in {c for c in ADE20K_CLASSES}


@pytest.mark.slow
def test_oneformer_tiny_random_checkpoint(tmp_path: Path) -> None:
    import string

    import torch
    from transformers import (
        CLIPTokenizer,
        OneFormerConfig,
        OneFormerForUniversalSegmentation,
        OneFormerImageProcessor,
        OneFormerProcessor,
        SwinConfig,
    )

    torch.manual_seed(0)
    backbone = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=64)
    backbone.out_features = ["stage1", "stage2", "stage3", "stage4"]
    cfg = OneFormerConfig(
        backbone_config=backbone,
        num_queries=8,
        hidden_dim=32,
        conv_dim=32,
        mask_dim=32,
        encoder_feedforward_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        dim_feedforward=32,
        num_attention_heads=2,
        text_encoder_width=16,
        text_encoder_num_layers=1,
        text_encoder_context_length=16,
        task_seq_len=16,
        text_encoder_n_ctx=2,
        query_dec_layers=1,
        id2label={i: n for i, n in enumerate(ADE20K_CLASSES)},
        label2id={n: i for i, n in enumerate(ADE20K_CLASSES)},
    )
    model_dir = tmp_path / "oneformer"
    OneFormerForUniversalSegmentation(cfg).save_pretrained(model_dir)
    vocab = {c: i for i, c in enumerate(string.ascii_lowercase)}
    vocab.update({f"{c}</w>": 26 + i for i, c in enumerate(string.ascii_lowercase)})
    vocab.update({"<|startoftext|>": 52, "<|endoftext|>": 53})
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    ip = OneFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}, num_labels=150, ignore_index=255)
    OneFormerProcessor(image_processor=ip, tokenizer=tok, max_seq_length=16, task_seq_length=16).save_pretrained(
        model_dir
    )
    seg = load_segmenter(f"oneformer:{model_dir}")
    for img in (Image.new("RGB", (70, 50), (80, 120, 200)), Image.new("L", (9, 31), 128)):
        out = seg.segment(img)
        assert out.shape == (img.height, img.width) and out.dtype == np.uint8 and int(out.max()) < 150
    with pytest.raises(MissingResourceError, match=r"config\.json"):
        load_segmenter(f"oneformer:{tmp_path / 'empty'}")
    cfg.id2label = {0: "a", 1: "b"}
    cfg.label2id = {"a": 0, "b": 1}
    OneFormerForUniversalSegmentation(cfg).save_pretrained(model_dir)
    with pytest.raises(InputError, match="not an ADE20K"):
        load_segmenter(f"oneformer:{model_dir}")
