#!/usr/bin/env bash
# Create the virtual environment and install terraloc with everything its tests use.
# Idempotent: the Makefile re-runs it only when this file or pyproject.toml changes.
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

echo "setup: installing terraloc and its pinned dependencies (torch 2.13.0 CPU build)"
"$PY" -m pip install "${PIP_FLAGS[@]}" -e '.[dev]' 2>&1 | quiet

# GeoCLIP's pretrained location encoder, image head and 100K MP-16 gallery ship as data files in
# the geoclip wheel. --no-deps: importing its code would pull torchvision; terraloc only reads files.
"$PY" -m pip install "${PIP_FLAGS[@]}" --no-deps geoclip==1.3.0 2>&1 | quiet
# Further steps (LLM runtime and models, browser for UI tests, ...) live one file each in setup.d/.
for step in "$(dirname "$0")"/setup.d/*.sh; do
  [ -e "$step" ] || continue
  echo "setup: $(basename "$step")"
  PY="$PY" VENV="$VENV" bash "$step"
done
echo "setup: done"
