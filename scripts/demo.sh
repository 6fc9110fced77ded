#!/usr/bin/env bash
# The main job on real, bundled inputs: evaluate published predictions on Im2GPS3k.
set -euo pipefail
VENV=${VENV:-.venv}
SHARED=${TERRALOC_SHARED:-../shared}
OUT=${DEMO_OUT:-demo_out}
"$VENV/bin/terraloc" eval \
  --predictions "$SHARED/data/predictions/geoestimation_isns_im2gps3k.csv" \
  --benchmark im2gps3k --compare --out "$OUT/eval"
