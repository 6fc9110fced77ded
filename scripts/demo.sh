#!/usr/bin/env bash
# The main job, offline, on real photos:
#   1. build a reference-photo database from the 300 shared Im2GPS3k photos with EfficientNet-Lite0
#      (real ImageNet weights from a pip package; no download),
#   2. predict the 71 shared street-level (OSV-5M) photos with it (top-5, place names, HTML map),
#   3. score the predictions against their ground truth (honest numbers, however modest),
#   4. score published GeoEstimation predictions on Im2GPS3k (the evaluation harness on its own).
set -euo pipefail
VENV=${VENV:-.venv}
SHARED=${TERRALOC_SHARED:-../shared}
OUT=${DEMO_OUT:-demo_out}
TL="$VENV/bin/terraloc"
mkdir -p "$OUT"
start=$(date +%s)

if [ ! -f "$OUT/refdb_effnet/manifest.json" ]; then
  "$TL" db build --images "$SHARED/data/photos/im2gps3k_dev/metadata.csv" \
    --backbone efficientnet-lite0 --out "$OUT/refdb_effnet"
fi
# --resume keeps what an interrupted run finished; a complete file is not recomputed
"$TL" predict "$SHARED/data/photos/osv5m" --db "$OUT/refdb_effnet" --top-k 5 \
  --format csv --output "$OUT/osv5m_predictions.csv" --resume --map "$OUT/osv5m_map.html"
"$TL" eval --predictions "$OUT/osv5m_predictions.csv" \
  --ground-truth "$SHARED/data/photos/osv5m/osv5m_photos.csv" --id-col path --out "$OUT/eval_osv5m"
echo "first rows of $OUT/osv5m_predictions.csv:"
head -4 "$OUT/osv5m_predictions.csv"

"$TL" eval \
  --predictions "$SHARED/data/predictions/geoestimation_isns_im2gps3k.csv" \
  --benchmark im2gps3k --compare --out "$OUT/eval"

# --- calibrated confidence (issue 18): G3's real retrieval candidates for 1,424 Im2GPS3k photos ---
# rag eval prints the accuracy table, then the calibration of P(error <= t) and the accuracy among the
# most confident photos (nested 5-fold cross-validation); calibrate fits and saves a calibrator.
CONF="$OUT/confidence"
"$TL" rag eval --candidates "$SHARED/data/rag/g3_candidates_im2gps3k_dev.csv" --out "$CONF" --bootstrap 200
"$TL" calibrate --predictions "$CONF/predictions_consensus.csv" --benchmark im2gps3k --out "$CONF/calibrator.json"
echo "confidence plots: $CONF/reliability.png $CONF/risk_coverage.png; calibrator: $CONF/calibrator.json"

echo "demo finished in $(( $(date +%s) - start )) s; map: $OUT/osv5m_map.html"
