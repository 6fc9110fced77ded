"""CLIP text towers: texts → L2-normalised embeddings in the image embedding space.

A :class:`TextTower` holds a checkpoint's own tokenizer (``AutoTokenizer.from_pretrained`` on the
checkpoint folder, never downloaded), its text transformer and its text projection, so
``TextTower.features(texts)`` equals ``CLIPModel.get_text_features(**tokenizer(texts, padding=True))``.

Prompt ensembles follow CLIP's zero-shot evaluation: each class name is written into several
templates, each prompt is embedded and L2-normalised, the prompts of one class are averaged and
the mean is normalised again (:meth:`TextTower.embed_prompts`).

:func:`make_tiny_tokenizer` writes a small byte-level BPE vocabulary in CLIP's format (256 byte
symbols, their end-of-word forms, merges learnt from a fixed corpus of place words, and the two
special tokens) so tests build a tiny CLIP with a real tokenizer, offline.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from terraloc.errors import InputError, MissingResourceError

#: CLIP's zero-shot style templates for places (``{}`` = the place text).
PLACE_TEMPLATES: tuple[str, ...] = (
    "a photo taken in {}.",
    "a street view photo in {}.",
    "a photo of a place in {}.",
    "a landscape in {}.",
)

ProgressFn = Callable[[int, int], None]


class TextTower(nn.Module):
    """A CLIP text transformer, its projection and its tokenizer.

    Attributes:
        dim: projection width ``D`` (equal to the image embedding width of the same checkpoint).
        max_length: the text model's context length (77 for OpenAI CLIP); longer texts are truncated.
        logit_scale: ``exp`` of the checkpoint's learnt logit scale (100 for OpenAI CLIP).
    """

    def __init__(
        self, text_model: nn.Module, projection: nn.Module, tokenizer: Any, dim: int, logit_scale: float = 100.0
    ) -> None:
        super().__init__()
        self.text_model = text_model
        self.text_projection = projection
        self.tokenizer = tokenizer
        self.dim = dim
        cfg: Any = getattr(text_model, "config", None)
        self.max_length = int(getattr(cfg, "max_position_embeddings", 77) or 77)
        self.logit_scale = float(logit_scale)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """``N`` texts → ``{"input_ids", "attention_mask"}`` ``(N, L)`` (padded to the longest, truncated)."""
        enc = self.tokenizer(
            [str(t) for t in texts], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.no_grad()
    def features(self, texts: Sequence[str]) -> Tensor:
        """``N`` texts → ``(N, D)`` unnormalised float32 features on the CPU (``CLIPModel.get_text_features``).

        Runs on the device the text model is on (``tower.to("cuda")`` embeds a large hierarchy fast).
        """
        if len(texts) == 0:
            return torch.zeros(0, self.dim)
        device = next(self.text_projection.parameters()).device
        enc = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        out = self.text_model(**enc)
        return self.text_projection(out.pooler_output).float().cpu()  # type: ignore[no-any-return]

    @torch.no_grad()
    def embed(
        self, texts: Sequence[str], batch_size: int = 256, progress: ProgressFn | None = None
    ) -> NDArray[np.float32]:
        """``N`` texts → ``(N, D)`` L2-normalised float32, in batches; ``progress(done, total)``."""
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        for s in range(0, n, batch_size):
            f = self.features(list(texts[s : s + batch_size]))
            out[s : s + len(f)] = nn.functional.normalize(f, dim=-1).numpy()
            if progress is not None:
                progress(min(s + batch_size, n), n)
        return out

    def embed_prompts(
        self,
        names: Sequence[str],
        templates: Sequence[str] = PLACE_TEMPLATES,
        batch_size: int = 256,
        progress: ProgressFn | None = None,
    ) -> NDArray[np.float32]:
        """Prompt ensemble: ``N`` names x ``T`` templates → ``(N, D)`` normalised means of normalised prompts."""
        if not templates:
            raise InputError("a prompt ensemble needs at least one template", field="templates")
        for t in templates:
            if "{}" not in t:
                raise InputError(f"template {t!r} has no '{{}}' for the place name", field="templates")
        prompts = [t.format(n) for n in names for t in templates]
        e = self.embed(prompts, batch_size, progress).reshape(len(names), len(templates), self.dim)
        mean = e.mean(axis=1)
        norm = np.linalg.norm(mean, axis=1, keepdims=True)
        return (mean / np.maximum(norm, 1e-12)).astype(np.float32)


def load_tokenizer(folder: Path) -> Any:
    """The checkpoint's own tokenizer (``AutoTokenizer``, local files only)."""
    names = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
    if not any((folder / n).exists() for n in names):
        raise MissingResourceError(
            f"{folder}: the checkpoint has no tokenizer files (tokenizer.json or vocab.json + merges.txt); "
            "the text tower needs the checkpoint's own tokenizer"
        )
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissingResourceError(f"{folder}: cannot load the tokenizer ({exc})") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def text_tower_from_clip(full: Any, folder: Path) -> TextTower:
    """A :class:`TextTower` from a loaded ``CLIPModel`` and its checkpoint folder (for the tokenizer)."""
    tok = load_tokenizer(folder)
    cfg: Any = full.config
    scale = float(full.logit_scale.detach().exp()) if hasattr(full, "logit_scale") else 100.0
    return TextTower(full.text_model, full.text_projection, tok, int(cfg.projection_dim), scale).eval()


# --------------------------------------------------------------------------- tiny tokenizer

_TINY_CORPUS = (
    "a photo taken in the city of street view place landscape state county country region province "
    "france germany italy spain united states kingdom japan china india brazil canada australia "
    "mexico russia new york london paris berlin rome madrid tokyo san francisco los angeles "
    "california texas ontario bavaria north south east west saint santa port lake river mount "
    "island beach park road town village district neighbourhood"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte → printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def tiny_vocab(n_merges: int = 300) -> tuple[dict[str, int], list[str]]:
    """A CLIP-format BPE vocabulary: 512 byte symbols, ``n_merges`` learnt merges, 2 special tokens."""
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    words = Counter(_TINY_CORPUS.split())
    seqs: dict[tuple[str, ...], int] = {(*tuple(w[:-1]), w[-1] + "</w>"): c for w, c in words.items()}
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for seq, c in seqs.items():
            for a, b in itertools.pairwise(seq):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        vocab_list.append(a + b)
        new: dict[tuple[str, ...], int] = {}
        for seq, c in seqs.items():
            out: list[str] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        seqs = new
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab_list)}, merges


def make_tiny_tokenizer(folder: str | Path, n_merges: int = 300) -> dict[str, int]:
    """Write a tiny CLIP tokenizer into ``folder`` with ``save_pretrained``.

    Returns:
        ``{"vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"}`` for the text config.
    """
    from transformers import CLIPTokenizer

    vocab, merges = tiny_vocab(n_merges)
    pairs = [(a, b) for a, b in (m.split(" ") for m in merges)]
    tok = CLIPTokenizer(vocab=vocab, merges=pairs)  # type: ignore[arg-type]  # tokenizers wants pairs
    tok.save_pretrained(str(folder))
    eos = vocab["<|endoftext|>"]
    return {
        "vocab_size": len(vocab),
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": eos,
        "pad_token_id": eos,
    }
