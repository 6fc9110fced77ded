"""GeoCLIP's GPS location encoder, as our own module.

Architecture (Vivanco Cepeda et al., NeurIPS 2023): Equal Earth projection of ``(lat, lon)``, then
three branches, each a random-Fourier-feature encoding (``B ~ N(0, sigma^2)``, 256 frequencies,
sigma = 2^0, 2^4, 2^8) followed by an MLP 512→1024→1024→1024→512; the branch outputs are summed.
The Fourier matrices are part of the weights and are loaded, never re-sampled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from terraloc.geo.projection import A1, A2, A3, A4, SF

GEOCLIP_SIGMAS = (2.0**0, 2.0**4, 2.0**8)


def equal_earth_torch(latlon: Tensor) -> Tensor:
    """Equal Earth projection with GeoCLIP scaling: ``(N, 2)`` degrees → ``(N, 2)``.

    Computed in the input's dtype, in the same operation order as GeoCLIP's reference so that
    float32 results agree to rounding.
    """
    lat = torch.deg2rad(latlon[:, 0])
    lon = torch.deg2rad(latlon[:, 1])
    sqrt3 = torch.sqrt(torch.tensor(3.0, dtype=latlon.dtype, device=latlon.device))
    theta = torch.asin(sqrt3 / 2 * torch.sin(lat))
    denom = 3 * (9 * A4 * theta**8 + 7 * A3 * theta**6 + 3 * A2 * theta**2 + A1)
    x = (2 * sqrt3 * lon * torch.cos(theta)) / denom
    y = A4 * theta**9 + A3 * theta**7 + A2 * theta**3 + A1 * theta
    return (torch.stack((x, y), dim=1) * SF) / 180


class GaussianFourierFeatures(nn.Module):
    """``gamma(v) = [cos(2π B v), sin(2π B v)]`` with a fixed ``B`` of shape ``(m, d_in)``."""

    def __init__(self, sigma: float, input_size: int = 2, encoded_size: int = 256) -> None:
        super().__init__()
        self.sigma = sigma
        # A buffer-like parameter named `b`, so GeoCLIP's state dict loads as is; never trained.
        self.b = nn.Parameter(torch.randn(encoded_size, input_size) * sigma, requires_grad=False)

    def forward(self, v: Tensor) -> Tensor:
        """``(N, d_in)`` → ``(N, 2m)``."""
        vp = 2 * math.pi * v @ self.b.T
        return torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1)


class LocationBranch(nn.Module):
    """One sigma's branch: Fourier features then MLP 512→1024→1024→1024→512."""

    def __init__(self, sigma: float, n_freq: int = 256, hidden: int = 1024, out_dim: int = 512) -> None:
        super().__init__()
        self.capsule = nn.Sequential(
            GaussianFourierFeatures(sigma, 2, n_freq),
            nn.Linear(2 * n_freq, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 2)`` projected coordinates → ``(N, out_dim)``."""
        return self.head(self.capsule(x))  # type: ignore[no-any-return]


class LocationEncoder(nn.Module):
    """Maps ``(N, 2)`` ``(lat, lon)`` degrees to ``(N, 512)`` unnormalised embeddings.

    Submodules are named ``LocEnc0..LocEnc{k-1}`` to match GeoCLIP's state dict.
    """

    def __init__(self, sigmas: Sequence[float] = GEOCLIP_SIGMAS, out_dim: int = 512) -> None:
        super().__init__()
        self.sigmas = tuple(float(s) for s in sigmas)
        self.out_dim = out_dim
        for i, s in enumerate(self.sigmas):
            self.add_module(f"LocEnc{i}", LocationBranch(s, out_dim=out_dim))
        self.encoder_id = "custom"
        self.weights_hash = ""

    def forward(self, latlon: Tensor) -> Tensor:
        """``(N, 2)`` degrees → ``(N, out_dim)`` (not normalised)."""
        if latlon.ndim != 2 or latlon.shape[1] != 2:
            raise ValueError(f"expected (N, 2) lat/lon degrees, got shape {tuple(latlon.shape)}")
        x = equal_earth_torch(latlon)
        out = torch.zeros(latlon.shape[0], self.out_dim, dtype=x.dtype, device=x.device)
        for i in range(len(self.sigmas)):
            out = out + getattr(self, f"LocEnc{i}")(x)
        return out

    @torch.no_grad()
    def encode(self, latlon: Tensor, batch_size: int = 8192, normalize: bool = True) -> Tensor:
        """Embed many coordinates in batches, optionally L2-normalised: ``(N, 2)`` → ``(N, D)``."""
        outs = []
        for start in range(0, latlon.shape[0], batch_size):
            e = self(latlon[start : start + batch_size])
            outs.append(nn.functional.normalize(e, dim=-1) if normalize else e)
        return torch.cat(outs) if outs else torch.zeros(0, self.out_dim)


def load_location_encoder(name: str = "geoclip") -> LocationEncoder:
    """Load a pretrained location encoder by name (``"geoclip"``: GeoCLIP's MP-16 weights).

    Returns:
        An eval-mode :class:`LocationEncoder` with ``encoder_id`` and ``weights_hash`` set.
    """
    from terraloc.encoders.geoclip_assets import file_sha256, geoclip_asset

    if name != "geoclip":
        raise KeyError(f"unknown location encoder '{name}'; known: geoclip")
    path = geoclip_asset("location_encoder")
    enc = LocationEncoder()
    state = torch.load(path, map_location="cpu", weights_only=True)
    enc.load_state_dict(state, strict=True)
    enc.encoder_id = "geoclip-location-v1"
    enc.weights_hash = file_sha256(path)
    return enc.eval()
