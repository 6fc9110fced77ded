"""The reasoning stage: prompts -> LLM backend -> parsed answers -> candidates for selection.

``parse_llm_spec`` turns a command-line ``--llm`` value into a backend:

* ``local`` or ``local:NAME`` or ``local:/path/model.gguf``: :class:`LocalLlamaBackend`
  (``NAME`` from :data:`terraloc.rag.models.MODELS`, default ``qwen2.5-1.5b``);
* ``http://HOST:PORT/v1`` optionally followed by ``#MODEL`` (``https://api.openai.com/v1#gpt-4o``):
  :class:`OpenAIChatClient`; add ``+image`` to the model to send the photo (multimodal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terraloc.config import home_dir
from terraloc.errors import InputError
from terraloc.rag.candidates import Candidate, CandidateSet
from terraloc.rag.llm import ChatRequest, ChatResult, LocalLlamaBackend, OpenAIChatClient, ResponseCache, image_part
from terraloc.rag.parse import ParsedAnswer, parse_answer
from terraloc.rag.prompts import (
    DEFAULT_NEIGHBOUR_COUNTS,
    Prompt,
    answer_schema,
    answer_to_candidate,
    diversified_prompts,
)


@dataclass(frozen=True)
class ReasonerConfig:
    """How one LLM configuration is prompted.

    Attributes:
        label: name used in reports (``llm:<label>``).
        neighbour_counts: G3 diversification over nearest-neighbour counts (default 5, 10, 15).
        samples: samples per prompt (sample ``s`` uses seed ``s``; with ``samples > 1`` the
            temperature should be > 0).
        n_far: farthest references shown (``None`` = as many as nearest).
        temperature: sampling temperature.
        max_tokens: generation limit.
        with_places: add reverse-geocoded place names.
        schema: ask for schema-constrained JSON.
    """

    label: str
    neighbour_counts: tuple[int, ...] = DEFAULT_NEIGHBOUR_COUNTS
    samples: int = 1
    n_far: int | None = 5
    temperature: float = 0.0
    max_tokens: int = 128
    with_places: bool = True
    schema: bool = True


@dataclass
class Answer:
    """One LLM answer to one prompt of one photo."""

    prompt: Prompt
    result: ChatResult
    parsed: ParsedAnswer
    candidate: Candidate | None

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt.tag,
            "error": self.result.error,
            "cached": self.result.cached,
            "seconds": round(self.result.seconds, 3),
            "parsed": self.parsed.to_json(),
        }


@dataclass
class Backend:
    """A backend and whether it sees the photo."""

    client: OpenAIChatClient | LocalLlamaBackend
    label: str
    with_image: bool = False
    images: dict[str, Path] = field(default_factory=dict)


def default_cache() -> ResponseCache:
    """``TERRALOC_HOME/llm-cache``."""
    return ResponseCache(home_dir() / "llm-cache")


def parse_llm_spec(spec: str, *, cache: ResponseCache | None = None, timeout_s: float = 120.0) -> Backend:
    """Build a :class:`Backend` from a ``--llm`` value (see the module docstring)."""
    from terraloc.rag.models import MODELS, resolve_model

    spec = spec.strip()
    if spec == "local" or spec.startswith("local:"):
        name = spec.partition(":")[2] or None
        path = resolve_model(name)
        label = name if name in MODELS else path.stem
        return Backend(LocalLlamaBackend(path, cache=cache), label or path.stem)
    if spec.startswith(("http://", "https://")):
        url, _, model = spec.partition("#")
        with_image = model.endswith("+image")
        model = model.removesuffix("+image") or "default"
        client = OpenAIChatClient(url, model, cache=cache, timeout_s=timeout_s)
        return Backend(client, model, with_image)
    raise InputError(
        f"cannot read LLM spec '{spec}': use local, local:NAME, local:/path.gguf or http(s)://HOST/v1#MODEL",
        field="--llm",
    )


def run_reasoner(
    csets: Sequence[CandidateSet],
    backend: Backend,
    config: ReasonerConfig,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[list[Answer]]:
    """Ask the backend about every photo with the config's diversified prompts.

    Returns, per photo, the answers in prompt order. Failed requests and unparseable replies are
    kept (with their error and raw text) and produce no candidate.
    """
    schema = answer_schema() if config.schema else None
    per_image: list[list[Prompt]] = []
    requests: list[ChatRequest] = []
    for cs in csets:
        prompts = diversified_prompts(
            cs,
            config.neighbour_counts,
            config.samples,
            n_far=config.n_far,
            with_image=backend.with_image,
            with_places=config.with_places,
        )
        per_image.append(prompts)
        img = backend.images.get(cs.image)
        part = image_part(img) if (backend.with_image and img is not None) else None
        for p in prompts:
            requests.append(
                ChatRequest(p.messages(part), config.temperature, config.max_tokens, seed=p.sample, schema=schema)
            )
    results: list[ChatResult] = []
    if isinstance(backend.client, LocalLlamaBackend):
        i = 0
        for prompts in per_image:
            for _ in prompts:
                results.append(backend.client.chat(requests[i]))
                i += 1
            if progress is not None:
                progress(1)
    else:
        results = backend.client.chat_many(requests)
        if progress is not None:
            progress(len(per_image))
    out: list[list[Answer]] = []
    i = 0
    for prompts in per_image:
        answers = []
        for rank, p in enumerate(prompts):
            res = results[i]
            i += 1
            parsed = (
                parse_answer(res.text)
                if res.ok
                else ParsedAnswer(float("nan"), float("nan"), None, None, res.error, res.text)
            )
            cand = answer_to_candidate(parsed.lat, parsed.lon, rank, f"{config.label}:{p.tag}") if parsed.ok else None
            answers.append(Answer(p, res, parsed, cand))
        out.append(answers)
    return out
