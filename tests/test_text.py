"""Language in the embedding space: text towers, place descriptions, the zero-shot place head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terraloc.encoders.image.backbones import load_backbone, make_tiny_clip
from terraloc.errors import InputError
from terraloc.geo.describe import describe_coords, fill_template, read_mp16pro
from terraloc.geo.place_hierarchy import PlaceHierarchy
from terraloc.models.text_head import TextPlaceHead, beam_search, exhaustive_search, hierarchy_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_text_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_text_clip"), seed=3, tokenizer=True)


# --------------------------------------------------------------------------- text towers


def test_text_features_equal_clip_get_text_features(tiny_text_clip: Path) -> None:
    from transformers import AutoTokenizer, CLIPModel

    texts = ["a photo taken in Paris, Île-de-France, France.", "Kyoto", "a street view photo in São Paulo, Brazil."]
    bb = load_backbone(tiny_text_clip, text=True)
    assert bb.text is not None
    ours = bb.text.features(texts)
    tok = AutoTokenizer.from_pretrained(str(tiny_text_clip))
    ref_model = CLIPModel.from_pretrained(str(tiny_text_clip)).eval()
    with torch.no_grad():
        ref = ref_model.get_text_features(**tok(texts, padding=True, return_tensors="pt")).pooler_output
    assert ours.shape == ref.shape == (3, bb.dim)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    # the EOS token pools: padding a text does not change its features
    one = bb.text.features(texts[1:2])
    assert torch.allclose(one[0], ours[1], atol=1e-5)


def test_prompt_ensemble_is_normalised_mean_of_normalised_prompts(tiny_text_clip: Path) -> None:
    bb = load_backbone(tiny_text_clip, text=True)
    tower = bb.text
    templates = ("a photo taken in {}.", "a landscape in {}.")
    ens = tower.embed_prompts(["France", "Japan"], templates)
    single = tower.embed(["a photo taken in France.", "a landscape in France."])
    mean = single.mean(axis=0)
    np.testing.assert_allclose(ens[0], mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ens, axis=1), 1.0, atol=1e-6)
    with pytest.raises(InputError):
        tower.embed_prompts(["France"], ["no placeholder"])


def test_text_tower_refused_without_tokenizer_or_for_vision_only(tmp_path: Path) -> None:
    from terraloc.errors import MissingResourceError

    plain = make_tiny_clip(tmp_path / "plain")
    assert load_backbone(plain).text is None  # type: ignore[attr-defined]
    with pytest.raises(MissingResourceError, match="tokenizer"):
        load_backbone(plain, text=True)
    with pytest.raises(InputError, match="text tower"):
        load_backbone("efficientnet-lite0", text=True)


# --------------------------------------------------------------------------- descriptions


def test_fill_template_drops_empty_fields() -> None:
    t = "a photo taken in {city}, {state}, {country}."
    assert fill_template(t, {"city": "Lyon", "state": "", "country": "France"}) == "a photo taken in Lyon, France."
    assert fill_template(t, {"city": "", "state": "Texas", "country": "United States"}).endswith(
        "Texas, United States."
    )


def test_describe_known_places() -> None:
    table = describe_coords([[48.8566, 2.3522], [35.0116, 135.7681], [-33.8688, 151.2093]]).to_pydict()
    assert table["country_code"] == ["FR", "JP", "AU"]
    assert table["country"][0] == "France"
    assert table["city"][2] == "Sydney" and table["state"][2] == "New South Wales"
    assert table["description"][2] == "a photo taken in Sydney, New South Wales, Australia."
    assert all(n != c for n, c in zip(table["nearby_1"], table["city"], strict=True))
    assert table["nearby_1"][0] != table["nearby_2"][0]
    assert set(table) >= {"neighbourhood", "city", "county", "state", "country", "place_km"}


def test_describe_cli_writes_parquet_and_rejects_bad_rows(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    src = tmp_path / "c.csv"
    src.write_text("LAT,LON\n48.8566,2.3522\n40.7128,-74.0060\n")
    out = tmp_path / "d.parquet"
    r = cli("describe", "--coords", src, "--out", out, "--json")
    assert r.code == 0, r.err
    t = pq.read_table(out).to_pydict()
    assert t["country_code"] == ["FR", "US"] and t["lat"] == [48.8566, 40.7128] and "id" not in t
    with_ids = tmp_path / "ids.csv"
    with_ids.write_text("IMG_ID,LAT,LON\na.jpg,48.8566,2.3522\nb.jpg,40.7128,-74.0060\n")
    assert cli("describe", "--coords", with_ids, "--out", out).code == 0
    assert pq.read_table(out).column("id").to_pylist() == ["a.jpg", "b.jpg"]
    r = cli("describe", "--coords", with_ids, "--out", out, "--id-col", "nope")
    assert r.code == 2 and "--id-col" in r.err
    bad = tmp_path / "bad.csv"
    bad.write_text("lat,lon\n10,20\n95,0\n")
    r = cli("describe", "--coords", bad, "--out", tmp_path / "x.parquet")
    assert r.code == 2 and "bad.csv" in r.err and "line 3" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "x.parquet").exists()
    r = cli("describe", "--out", out)
    assert r.code == 2 and "--coords" in r.err


def test_read_mp16pro(tmp_path: Path) -> None:
    f = tmp_path / "mp16pro.csv"
    f.write_text(
        "IMG_ID,LAT,LON,neighbourhood,city,county,state,country,country_code\n"
        "a.jpg,48.85,2.35,Le Marais,Paris,,Ile-de-France,France,fr\n"
        "b.jpg,40.7,-74.0,,New York,,New York,United States,us\n"
    )
    t = read_mp16pro(f, "a photo taken in {neighbourhood}, {city}, {state}, {country}.").to_pydict()
    assert t["id"] == ["a.jpg", "b.jpg"]
    assert t["description"][0] == "a photo taken in Le Marais, Paris, Ile-de-France, France."
    assert t["description"][1] == "a photo taken in New York, New York, United States."
    bad = tmp_path / "bad.csv"
    bad.write_text("IMG_ID,LAT,LON\na,100,0\n")
    with pytest.raises(InputError, match="line 2"):
        read_mp16pro(bad)


# Natural Earth areas world-atlas gives no ISO numeric id, as GeoNames (the descriptions) codes them.
# "Indian Ocean Ter." (Christmas + Cocos islands: two ISO codes) and "Siachen Glacier" (disputed)
# map to no code, so a photo there would count as a disagreement.
_NON_ISO = {"Kosovo": "XK", "N. Cyprus": "CY", "Somaliland": "SO", "Indian Ocean Ter.": "", "Siachen Glacier": ""}


def _map_alpha2() -> dict[str, str]:
    """Natural Earth name -> ISO alpha-2 for every polygon of the 1:50m map."""
    import pycountry

    from terraloc.geo.countries import _countries

    out = {}
    for cid, name, _rings in _countries():
        if cid.isdigit():
            c = pycountry.countries.get(numeric=cid)
            assert c is not None, (cid, name)
            out[name] = c.alpha_2
        else:
            assert name in _NON_ISO, (cid, name)  # a new id-less area must be handled explicitly
            out[name] = _NON_ISO[name]
    return out


def test_description_country_agrees_with_natural_earth_polygons(shared: Path) -> None:
    import pandas as pd

    from terraloc.geo.countries import country_at

    meta = pd.read_csv(shared / "data/photos/im2gps3k_dev/metadata.csv")
    ll = meta[["LAT", "LON"]].to_numpy(dtype=np.float64)
    _ids, names = country_at(ll)
    desc = describe_coords(ll, nearby=0).to_pydict()["country_code"]
    code_of = _map_alpha2()
    on_land = [i for i in range(len(ll)) if names[i]]  # inside some 1:50m polygon
    agree = [i for i in on_land if code_of[names[i]] == desc[i]]
    assert len(on_land) >= 250  # most of the 300 photos fall inside a 1:50m polygon
    assert len(agree) / len(on_land) >= 0.98, [(meta.IMG_ID[i], names[i], desc[i]) for i in on_land if i not in agree]


def test_country_at_handles_the_antimeridian() -> None:
    from terraloc.geo.countries import country_at

    _, names = country_at([[-17.8, 178.0], [-16.3, -71.6], [65.0, 170.0], [-80.0, 0.0], [0.0, -30.0]])
    assert names == ["Fiji", "Peru", "Russia", "Antarctica", ""]


# --------------------------------------------------------------------------- hierarchy and head


def _toy_hierarchy() -> PlaceHierarchy:
    rng = np.random.default_rng(0)
    codes = ["AA", "BB", "CC", "DD"]
    rows = []
    for ci, cc in enumerate(codes):
        for a in range(3):
            for c in range(1 + (ci + a) % 3):
                rows.append((rng.uniform(-60, 60), rng.uniform(-170, 170), cc, f"Land {cc}", f"R{a}", f"T{cc}{a}{c}"))
    ll = np.array([(r[0], r[1]) for r in rows])
    return PlaceHierarchy.build(
        ll, [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows]
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_beam_search_equals_exhaustive_when_beam_covers_everything() -> None:
    h = _toy_hierarchy()
    rng = np.random.default_rng(1)
    emb = [_unit(rng.normal(size=(n, 16))) for n in h.sizes]
    imgs = _unit(rng.normal(size=(6, 16)))
    k = h.sizes[-1]
    full = beam_search(h, emb, imgs, k, beam=(h.sizes[0], h.sizes[1]), logit_scale=20.0)
    ref = exhaustive_search(h, emb, imgs, k, logit_scale=20.0)
    np.testing.assert_array_equal(full.nodes, ref.nodes)
    np.testing.assert_allclose(full.probs, ref.probs, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(full.paths, ref.paths)
    np.testing.assert_allclose(ref.probs.sum(axis=1), 1.0, atol=1e-12)  # hierarchical softmax: leaves sum to 1
    # a narrow beam returns a subset with the same (exact) probabilities
    narrow = beam_search(h, emb, imgs, 3, beam=(1, 1), logit_scale=20.0)
    for i in range(len(imgs)):
        for node, p in zip(narrow.nodes[i], narrow.probs[i], strict=True):
            if node >= 0:
                assert p == pytest.approx(full.probs[i][list(full.nodes[i]).index(node)], rel=1e-12)
    # children of a node are the contiguous slice the offsets name
    lv = h.levels[2]
    for p in range(h.sizes[1]):
        assert (lv.parent[lv.offsets[p] : lv.offsets[p + 1]] == p).all()


def test_zero_shot_head_picks_the_country_known_by_construction() -> None:
    h = _toy_hierarchy()
    rng = np.random.default_rng(2)
    d = 32
    country_vec = _unit(rng.normal(size=(h.sizes[0], d)))
    # every node's text embedding leans toward its country's direction; regions/cities add noise
    a_parent = h.levels[1].parent
    c_country = a_parent[h.levels[2].parent]
    emb = [
        country_vec,
        _unit(country_vec[a_parent] + 0.3 * rng.normal(size=(h.sizes[1], d))),
        _unit(country_vec[c_country] + 0.3 * rng.normal(size=(h.sizes[2], d))),
    ]
    head = TextPlaceHead(None, hierarchy=h, embeddings=emb, logit_scale=50.0, beam=(2, 3))
    truth = np.array([2, 0, 3, 1])
    feats = 3.0 * (country_vec[truth] + 0.2 * _unit(rng.normal(size=(4, d))))  # unnormalised, as backbones give
    coords, probs, evidence = head.predict_arrays(feats, top_k=3)
    got = [evidence[i][0]["country_code"] for i in range(4)]
    assert got == [h.levels[0].country_code[t] for t in truth]
    assert coords.shape == (4, 3, 2) and np.isfinite(coords).all()
    assert (np.diff(probs, axis=1) <= 0).all() and (probs > 0).all()
    assert evidence[0][0]["path"][0] == h.levels[0].text[truth[0]]


def test_hierarchy_from_geonames_and_embedding_cache(tiny_text_clip: Path, tmp_path: Path) -> None:
    h = PlaceHierarchy.from_geonames(2, countries=["fr", "IT"])
    assert [lv.name for lv in h.levels] == ["country", "admin1"]
    assert h.levels[0].country_code == ["FR", "IT"] and h.levels[0].text == ["France", "Italy"]
    assert any(t.startswith("Brittany") for t in h.levels[1].text)
    with pytest.raises(InputError, match="ZZ"):
        PlaceHierarchy.from_geonames(1, countries=["ZZ"])
    bb = load_backbone(tiny_text_clip, text=True)
    seen: list[tuple[str, int, int]] = []
    first = hierarchy_embeddings(bb.text, h, ("a photo taken in {}.",), "k1", tmp_path, lambda *a: seen.append(a))
    assert seen and seen[-1][1] == seen[-1][2] and {s[0] for s in seen} == {"country", "admin1"}
    files = sorted(tmp_path.glob("places-*.npy"))
    assert len(files) == 2
    seen.clear()
    again = hierarchy_embeddings(bb.text, h, ("a photo taken in {}.",), "k1", tmp_path, lambda *a: seen.append(a))
    assert not seen  # read from the cache
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    head = TextPlaceHead(bb, levels=2, countries=["FR", "IT"], templates=("a photo taken in {}.",))
    feats = bb.embed_pixels(torch.rand(2, 3, 224, 224), normalize=False)
    coords, probs, ev = head.predict_arrays(feats, top_k=4)
    assert coords.shape == (2, 4, 2) and ev[0][0]["country_code"] in ("FR", "IT")
    assert (probs[:, 0] > 0).all() and probs.sum(axis=1).max() <= 1 + 1e-9


# --------------------------------------------------------------------------- end to end


def test_predict_with_text_head_end_to_end_and_through_the_service(
    tiny_text_clip: Path, shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    import httpx

    from serve_support import running_server
    from terraloc.pipeline.geolocator import Geolocator, GeolocatorConfig
    from terraloc.serve import ServeSettings, create_app
    from terraloc.serve.geolocator import GeolocatorPredictor

    monkeypatch.setenv("TERRALOC_HOME", str(tmp_path / "home"))
    photos = sorted((shared / "data/photos/im2gps3k_dev").glob("*.jpg"))[:4]
    opts = {"levels": 2, "countries": "FR,IT,US,GB,JP", "beam": "3"}
    # the backbone is loaded WITHOUT its text tower: the head loads it from the same checkpoint
    geo = Geolocator(GeolocatorConfig(backbone=str(tiny_text_clip), head="text", head_options=opts, workers=1))
    preds = geo.predict([str(p) for p in photos] + [str(tmp_path / "missing.jpg")], top_k=3)
    assert [p.ok for p in preds] == [True] * 4 + [False]
    for p in preds[:4]:
        assert len(p.candidates) == 3 and p.top is not None
        assert p.top.country_code in {"FR", "IT", "US", "GB", "JP"}
        assert p.candidates[0].probability >= p.candidates[1].probability > 0
    assert preds[0].model["head"] == "text" and preds[0].model["text"]["levels"] == ["country", "admin1"]
    assert list((tmp_path / "home" / "text").glob("places-*.npy"))  # text embeddings cached
    with (
        running_server(create_app(ServeSettings(), GeolocatorPredictor(geo))) as base,
        httpx.Client(base_url=base, timeout=60) as c,
    ):
        r = c.post("/v1/predict?top_k=2", files={"file": ("a.jpg", photos[0].read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["candidates"]) == 2 and body["model"]["head"] == "text"
        assert body["lat"] == pytest.approx(preds[0].top.lat) and body["lon"] == pytest.approx(preds[0].top.lon)
    # the command line, through a saved geolocator that carries the head options
    geo.save_pretrained(tmp_path / "model")
    r = cli("predict", *photos, "--model", tmp_path / "model", "--format", "csv", "-o", tmp_path / "p.csv")
    assert r.code == 0, r.err
    import pandas as pd

    rows = pd.read_csv(tmp_path / "p.csv")
    top = rows[rows["rank"] == 1].reset_index(drop=True)
    assert len(top) == 4 and set(top["country_code"]) <= {"FR", "IT", "US", "GB", "JP"}
    assert top.loc[0, "lat"] == pytest.approx(preds[0].top.lat, abs=1e-5)


def test_text_rescoring_reorders_by_image_text_similarity(tiny_text_clip: Path) -> None:
    from terraloc.models.text_scoring import candidate_text_embeddings, place_name_similarity, rescore_with_text

    bb = load_backbone(tiny_text_clip, text=True)
    coords = np.array([[[48.85, 2.35], [35.01, 135.77], [np.nan, np.nan]]])
    probs = np.array([[0.6, 0.4, 0.0]])
    txt = candidate_text_embeddings(bb.text, coords)
    assert txt.shape == (1, 3, bb.dim) and not txt[0, 2].any()
    kyoto = bb.text.embed(["a photo taken in Kyoto, Kyoto, Japan."])  # an image embedding matching candidate 2
    same, order0 = rescore_with_text(probs, kyoto, txt, weight=0.0)
    np.testing.assert_allclose(same, probs)
    np.testing.assert_array_equal(order0[0], [0, 1, 2])
    new, order = rescore_with_text(probs, kyoto, txt, weight=1.0, logit_scale=100.0)
    sims = np.einsum("d,kd->k", kyoto[0], txt[0, :2])
    assert (order[0, 0] == 1) == bool(np.log(0.4) + 100 * sims[1] > np.log(0.6) + 100 * sims[0])
    assert new[0, 2] == 0 and new.sum() == pytest.approx(1.0)
    s = place_name_similarity(bb.text, kyoto, ["Kyoto, Japan"])
    assert s.shape == (1,) and -1 <= s[0] <= 1


def test_text_rescored_head_wraps_any_registered_head(tiny_text_clip: Path) -> None:
    from types import SimpleNamespace

    from terraloc.models.head import Candidates, register_head
    from terraloc.models.text_scoring import TextRescoredHead

    @register_head("fixed-test")
    class Fixed:
        input = "features"
        supports_ten_crop = False
        input_dim = None
        required_backbone = None

        @classmethod
        def from_config(cls, config: object, backbone: object) -> Fixed:
            return cls()

        def predict(self, x: torch.Tensor, top_k: int) -> Candidates:
            n = x.shape[0]
            coords = np.tile(np.array([[48.85, 2.35], [35.01, 135.77]]), (n, 1, 1))
            return Candidates(coords, np.tile([0.55, 0.45], (n, 1)), [[{"i": 0}, {"i": 1}] for _ in range(n)])

        def describe(self) -> dict[str, object]:
            return {"fixed": True}

    bb = load_backbone(tiny_text_clip)
    cfg = SimpleNamespace(head="geoclip+text", ten_crop=False, head_options={"inner": "fixed-test", "text_weight": 1.0})
    head = TextRescoredHead.from_config(cfg, bb)
    kyoto = torch.as_tensor(bb.text.embed(["a photo taken in Kyoto, Kyoto, Japan."])) * 4.0  # unnormalised "features"
    out = head.predict(kyoto, 2)
    sims = np.einsum(
        "d,kd->k", kyoto[0].numpy() / 4.0, head.texts.embeddings(np.array([[[48.85, 2.35], [35.01, 135.77]]]))[0]
    )
    want_first = 1 if np.log(0.45) + bb.text.logit_scale * sims[1] > np.log(0.55) + bb.text.logit_scale * sims[0] else 0
    assert out.evidence[0][0]["i"] == want_first and out.evidence[0][0]["text_rescored"]
    assert out.probs.sum() == pytest.approx(1.0) and out.probs[0, 0] >= out.probs[0, 1]
    off = TextRescoredHead.from_config(SimpleNamespace(**{**vars(cfg), "head_options": {"inner": "fixed-test"}}), bb)
    np.testing.assert_allclose(off.predict(kyoto, 2).probs, [[0.55, 0.45]])  # default weight 0: unchanged
    assert head.describe() == {"fixed": True, "text_weight": 1.0}


@pytest.mark.slow
def test_geoclip_plus_text_reorders_geoclip_candidates(tiny_text_clip: Path, shared: Path) -> None:
    """The real GeoCLIP head (pretrained MLP, 100K gallery) on the tiny CLIP, rescored by text."""
    from terraloc.pipeline.geolocator import Geolocator, GeolocatorConfig

    photos = [str(p) for p in sorted((shared / "data/photos/im2gps3k_dev").glob("*.jpg"))[:3]]
    # distinct_km=0: the head's own top-5 (no merging into distinct places, which looks further down the list)
    plain = Geolocator(GeolocatorConfig(backbone=str(tiny_text_clip), head="geoclip", workers=1, distinct_km=0))
    base = plain.predict(photos, top_k=5)
    off = plain.with_config(head="geoclip+text", head_options={"text_weight": 0.0}).predict(photos, top_k=5)
    on = plain.with_config(head="geoclip+text", head_options={"text_weight": 1.0}).predict(photos, top_k=5)
    for b, o, t in zip(base, off, on, strict=True):
        assert [(c.lat, c.lon, c.probability) for c in b.candidates] == [
            (c.lat, c.lon, c.probability) for c in o.candidates
        ]
        assert sorted((c.lat, c.lon) for c in t.candidates) == sorted((c.lat, c.lon) for c in b.candidates)
        assert sum(c.probability for c in t.candidates) == pytest.approx(1.0)
    assert on[0].model["text_weight"] == 1.0
