"""Semantic fusion: attention shapes and masking, gradient flow, map alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terraloc.encoders.segmentation.classes import ADE20K_CLASSES, IGNORE_ID
from terraloc.errors import InputError
from terraloc.models.fusion import (
    FusionConfig,
    LatentCrossAttention,
    SemanticFusion,
    SemanticTokenizer,
    prepare_maps,
)

PERSON = ADE20K_CLASSES.index("person")
SKY = ADE20K_CLASSES.index("sky")


def small_cfg(**kw: object) -> FusionConfig:
    base = dict(
        num_blocks=2, token_dim=16, latent_dim=8, num_heads=2, patch_size=14, map_size=56, clip_dim=24, out_dim=12
    )
    base.update(kw)
    return FusionConfig(**base)  # type: ignore[arg-type]


def test_latent_attention_shapes_and_latent_bottleneck() -> None:
    attn = LatentCrossAttention(query_dim=16, kv_dim=24, latent_dim=8, num_heads=4)
    q, kv = torch.randn(3, 17, 16), torch.randn(3, 10, 24)
    out, w = attn(q, kv, need_weights=True)
    assert out.shape == (3, 17, 16)
    assert w is not None and w.shape == (3, 4, 17, 10)
    assert torch.allclose(w.sum(-1), torch.ones(3, 4, 17), atol=1e-5)
    # keys/values pass through the 8-d latent
    assert attn.down.weight.shape == (8, 24) and attn.k_up.weight.shape == (16, 8) and attn.v_up.weight.shape == (16, 8)
    fast, _ = attn(q, kv)  # SDPA path equals the explicit path
    assert torch.allclose(fast, out, atol=1e-5)


def test_key_mask_removes_keys_from_attention() -> None:
    torch.manual_seed(0)
    attn = LatentCrossAttention(16, 24, 8, 2)
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 6, 24)
    mask = torch.tensor([[True, True, False, True, False, True], [True] * 6])
    out, w = attn(q, kv, mask, need_weights=True)
    assert w is not None
    assert torch.all(w[0, :, :, [2, 4]] == 0) and torch.all(w[1] > 0)
    # masked keys do not influence the output at all
    kv2 = kv.clone()
    kv2[0, [2, 4]] = 1000.0
    out2, _ = attn(q, kv2, mask)
    assert torch.allclose(out[0], out2[0], atol=1e-5)
    assert torch.allclose(attn(q, kv, mask)[0], out, atol=1e-5)


def test_fusion_output_shape_defaults_and_configurable_dims() -> None:
    cfg = FusionConfig()
    assert (cfg.num_blocks, cfg.token_dim, cfg.latent_dim, cfg.patch_size, cfg.clip_dim, cfg.out_dim) == (
        3, 128, 64, 14, 1024, 768
    )  # fmt: skip
    m = SemanticFusion(small_cfg(num_blocks=3))
    assert len(m.blocks) == 3
    seg = torch.randint(0, 150, (2, 56, 56))
    y = m(seg, torch.randn(2, 1 + 16, 24))
    assert y.shape == (2, 12)
    tok = SemanticTokenizer(small_cfg())(seg)
    assert tok.shape == (2, 1 + 4 * 4, 16)


def test_map_changes_the_fused_feature_and_zero_blocks_ignores_it() -> None:
    torch.manual_seed(0)
    tokens = torch.randn(1, 17, 24)
    sky, person = torch.full((1, 56, 56), SKY), torch.full((1, 56, 56), PERSON)
    m = SemanticFusion(small_cfg())
    assert not torch.allclose(m(sky, tokens), m(person, tokens))
    m0 = SemanticFusion(small_cfg(num_blocks=0))
    assert torch.allclose(m0(sky, tokens), m0(person, tokens))
    assert m0(sky, tokens).shape == (1, 12)


def test_ignore_classes_mask_clip_patches_under_people() -> None:
    m = SemanticFusion(small_cfg(ignore_classes=(PERSON,)))
    seg = torch.full((2, 56, 56), SKY)
    seg[0, :28, :28] = PERSON  # top-left quarter of image 0 is a person
    clip_mask, sem_mask = m.masks(seg, n_clip_tokens=1 + 4 * 4)
    assert clip_mask is not None and sem_mask is not None
    grid = clip_mask[0, 1:].reshape(4, 4)
    assert not grid[:2, :2].any() and grid[2:, :].all() and grid[:, 2:].all()
    assert clip_mask[0, 0] and clip_mask[1].all()  # CLS never masked
    assert sem_mask.shape == (2, 17) and not sem_mask[0, 1:].reshape(4, 4)[:2, :2].any()
    # masked CLIP patches cannot change the output
    torch.manual_seed(0)
    tokens = torch.randn(2, 17, 24)
    changed = tokens.clone()
    changed[0, 1:].view(4, 4, 24)[:2, :2] += 50.0
    assert torch.allclose(m(seg, tokens)[0], m(seg, changed)[0], atol=1e-5)
    assert not torch.allclose(SemanticFusion(small_cfg())(seg, tokens)[0], SemanticFusion(small_cfg())(seg, changed)[0])


def test_padding_mask_on_clip_tokens() -> None:
    m = SemanticFusion(small_cfg())
    seg = torch.randint(0, 150, (1, 56, 56))
    tokens = torch.randn(1, 20, 24)
    pad = torch.ones(1, 20, dtype=torch.bool)
    pad[0, 17:] = False
    padded = tokens.clone()
    padded[0, 17:] = 1e3
    assert torch.allclose(m(seg, tokens[:, :17]), m(seg, padded, pad), atol=1e-5)


def test_unknown_ids_share_the_unlabelled_embedding() -> None:
    tok = SemanticTokenizer(small_cfg())
    a = torch.full((1, 56, 56), IGNORE_ID)
    b = torch.full((1, 56, 56), 200)
    c = torch.full((1, 56, 56), -3)
    assert torch.allclose(tok(a), tok(b)) and torch.allclose(tok(a), tok(c))
    with pytest.raises(InputError, match="56, 56"):
        tok(torch.zeros((1, 50, 56), dtype=torch.long))


def test_bad_config_is_an_input_error() -> None:
    with pytest.raises(InputError, match="divisible"):
        FusionConfig(token_dim=10, num_heads=4)
    with pytest.raises(InputError, match="multiple"):
        FusionConfig(map_size=100, patch_size=14)
    with pytest.raises(InputError, match="ignore_classes"):
        FusionConfig(ignore_classes=(150,))


def test_gradients_reach_only_the_last_clip_block_and_fusion() -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from terraloc.models.fused_encoder import FusedImageEncoder

    torch.manual_seed(0)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=24,
            intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
        )
    )
    before = {n: p.detach().clone() for n, p in clip.named_parameters()}
    enc = FusedImageEncoder(clip, small_cfg())
    assert enc.fusion.cfg.clip_dim == 24 and enc.fusion.cfg.map_size == 56
    pixels = torch.randn(2, 3, 56, 56)
    seg = torch.randint(0, 151, (2, 56, 56))
    opt = torch.optim.SGD(enc.trainable_parameters(), lr=0.1)
    enc(pixels, seg).pow(2).sum().backward()
    for name, p in enc.backbone.named_parameters():
        if ".layers.2." in name:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert all(p.grad is not None for p in enc.fusion.parameters())
    opt.step()
    for name, p in clip.named_parameters():
        assert torch.equal(p, before[name]) != (".layers.2." in name), name
    # the frozen prefix gives the same tokens as the plain model
    with torch.no_grad():
        assert torch.allclose(enc.backbone(pixels), clip(pixel_values=pixels).last_hidden_state, atol=1e-5)


def test_prepare_maps_follows_clip_geometry_with_nearest_ids() -> None:
    seg = np.zeros((100, 200), dtype=np.uint8)
    seg[:, :50] = 3
    seg[:, 150:] = 7
    seg[:, 100] = 149
    out = prepare_maps([seg], size=56)
    assert out.shape == (1, 56, 56) and out.dtype == torch.int64
    # shorter side 100 -> 56, width 200 -> 112, centre crop keeps columns 28..84 of the resized map
    assert set(out.unique().tolist()) <= {0, 149}
    assert set(prepare_maps([seg], size=56, crop=64).unique().tolist()) <= {0, 3, 7, 149, IGNORE_ID}
    bad = np.full((10, 10), 200, dtype=np.int64)
    assert prepare_maps([bad], 28).unique().tolist() == [IGNORE_ID]


def test_fusion_checkpoint_roundtrip_and_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from terraloc.errors import MissingResourceError
    from terraloc.models.fused_encoder import FusedImageEncoder, load_fused_checkpoint, save_fused_checkpoint

    def clip(width: int = 24) -> CLIPVisionModel:
        torch.manual_seed(1)
        return CLIPVisionModel(
            CLIPVisionConfig(hidden_size=width, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                             image_size=56, patch_size=14)
        )  # fmt: skip

    torch.manual_seed(0)
    enc = FusedImageEncoder(clip(), small_cfg(ignore_classes=(PERSON,)))
    with torch.no_grad():
        for p in enc.backbone.layers[-1].parameters():
            p.add_(0.5)  # "trained" last block
    save_fused_checkpoint(tmp_path / "f.pt", enc)
    loaded, _ = load_fused_checkpoint(tmp_path / "f.pt", clip())
    px, seg = torch.randn(1, 3, 56, 56), torch.randint(0, 150, (1, 56, 56))
    with torch.no_grad():
        assert torch.allclose(enc.eval()(px, seg), loaded(px, seg), atol=1e-5)
    assert loaded.fusion.cfg.ignore_classes == (PERSON,)
    with pytest.raises(InputError, match="CLIP width"):
        load_fused_checkpoint(tmp_path / "f.pt", clip(width=32))
    with pytest.raises(MissingResourceError):
        load_fused_checkpoint(tmp_path / "none.pt", clip())
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read"):
        load_fused_checkpoint(tmp_path / "bad.pt", clip())
