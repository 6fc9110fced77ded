"""GeoCLIP location encoder: equality with the reference implementation's outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terraloc.encoders import load_location_encoder
from terraloc.encoders.location import LocationEncoder, equal_earth_torch


@pytest.fixture(scope="module")
def encoder() -> LocationEncoder:
    return load_location_encoder("geoclip")


def test_matches_reference_outputs(shared, encoder: LocationEncoder) -> None:  # type: ignore[no-untyped-def]
    ref = np.load(shared / "data/reference/geoclip_location_encoder_reference.npz")
    coords = torch.from_numpy(ref["coords"].astype(np.float32))
    assert coords.shape == (2000, 2)
    proj = equal_earth_torch(coords).numpy()
    assert np.abs(proj - ref["projection"]).max() < 1e-5
    with torch.no_grad():
        emb = encoder(coords).numpy()
    assert emb.shape == (2000, 512)
    assert np.abs(emb - ref["embedding"]).max() < 1e-5


def test_metadata_and_normalised_encode(encoder: LocationEncoder) -> None:
    assert encoder.encoder_id == "geoclip-location-v1"
    assert len(encoder.weights_hash) == 16
    e = encoder.encode(torch.tensor([[48.85, 2.35], [-33.9, 151.2], [48.86, 2.36]]))
    assert e.shape == (3, 512)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    # Nearby places embed closer than far-apart ones.
    assert float(e[0] @ e[2]) > float(e[0] @ e[1])


def test_rejects_bad_shape(encoder: LocationEncoder) -> None:
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        encoder(torch.zeros(4, 3))


def test_unknown_encoder_name() -> None:
    with pytest.raises(KeyError, match="unknown location encoder"):
        load_location_encoder("nope")
