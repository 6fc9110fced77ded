#!/usr/bin/env bash
# Create the virtual environment and install terraloc with every extra and everything its tests use
# ('.[all,dev]'). Idempotent: the Makefile re-runs it only when this file or pyproject.toml changes.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
PIP_FLAGS=(-q --disable-pip-version-check)
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install "${PIP_FLAGS[@]}" --upgrade pip setuptools wheel 2>&1 | quiet

# llama-cpp-python (the 'llm' extra) compiles llama.cpp from source (~10 minutes on 2 cores): its
# wheel is built once with `pip wheel` into a cache keyed by version and Python tag, and every later
# set-up installs it from there in seconds (pip finds it through --find-links).
LLAMA_VERSION=0.3.36
WHEELS="${TERRALOC_HOME:-$HOME/.cache/terraloc}/wheels"
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
mkdir -p "$WHEELS"
# The wheel is tagged py3-none-<platform> but links to the Python it was built with: a stamp file
# records that Python tag so that another Python version rebuilds it.
WHEEL=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)
STAMP="$WHEELS/llama_cpp_python-$LLAMA_VERSION.pytag"
if [ -n "$WHEEL" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" != "$PYTAG" ]; then
  echo "setup: cached llama-cpp-python wheel was built for $(cat "$STAMP"), not $PYTAG: rebuilding"
  rm -f "$WHEEL"; WHEEL=""
fi
if [ -z "$WHEEL" ]; then
  if ! command -v cc >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1; then
    echo "setup: installing a C/C++ compiler (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >/dev/null
  fi
  echo "setup: building llama-cpp-python $LLAMA_VERSION once (about 10 minutes; cached in $WHEELS)"
  TMPW=$(mktemp -d)
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$TMPW" "llama-cpp-python==$LLAMA_VERSION"
  mv "$TMPW"/llama_cpp_python-*.whl "$WHEELS"/ && rmdir "$TMPW"
fi
echo "$PYTAG" > "$STAMP"

echo "setup: installing terraloc with all extras and the test tools (torch 2.13.0 CPU build)"
"$PY" -m pip install "${PIP_FLAGS[@]}" --find-links "$WHEELS" -e '.[all,dev]' 2>&1 | quiet

# GeoCLIP's pretrained location encoder, image head and 100K MP-16 gallery ship as data files in
# the geoclip wheel. --no-deps: importing its code would pull torchvision; terraloc only reads files.
# (Without make: `terraloc models pull geoclip` fetches the same files into $TERRALOC_HOME/models.)
# The wheel is kept in the wheel cache: tests/test_geoclip_pull.py pulls from it offline.
if [ ! -f "$WHEELS/geoclip-1.3.0-py3-none-any.whl" ]; then
  "$PY" -m pip download "${PIP_FLAGS[@]}" --no-deps --only-binary=:all: -d "$WHEELS" geoclip==1.3.0 2>&1 | quiet
fi
"$PY" -m pip install "${PIP_FLAGS[@]}" --no-deps "$WHEELS/geoclip-1.3.0-py3-none-any.whl" 2>&1 | quiet
# Further steps (LLM models, browser for UI tests, ...) live one file each in setup.d/.
for step in "$(dirname "$0")"/setup.d/*.sh; do
  [ -e "$step" ] || continue
  echo "setup: $(basename "$step")"
  PY="$PY" VENV="$VENV" bash "$step"
done
echo "setup: done"
