#!/usr/bin/env bash
# `make demo`: the story on one screen, offline, on the shared data. Each line says what it measures.
#   [1] end to end on real photos: a reference-photo database of the 300 shared Im2GPS3k photos
#       (EfficientNet-Lite0, real ImageNet weights from a pip package) predicts the 71 shared
#       street-level OSV-5M photos (top-5, place names, an HTML map), scored against their ground truth;
#   [2] the reasoning stage on G3's real retrieval output (1,424 Im2GPS3k photos with their MP16
#       neighbours): geo-consensus over the candidates against G3's first candidate (no LLM);
#   [3] the published GeoEstimation (ISNs) predictions re-scored by terraloc's evaluation harness,
#       beside the paper's own numbers;
#   [4] confidence / selective prediction: calibrated P(error <= t) of [2]'s answers (nested 5-fold CV)
#       and the accuracy among the most confident photos.
# Command output goes to $OUT/logs/; a failing step prints the end of its output.
set -euo pipefail
VENV=${VENV:-.venv}
SHARED=${TERRALOC_SHARED:-../shared}
OUT=${DEMO_OUT:-demo_out}
TL="$VENV/bin/terraloc"
PY="$VENV/bin/python"
mkdir -p "$OUT/logs"
start=$(date +%s)

step() {  # step NAME CMD...: run quietly (stdout to $OUT/logs/NAME.out, stderr to .err); on failure show them
  local name=$1; shift
  if ! "$@" >"$OUT/logs/$name.out" 2>"$OUT/logs/$name.err"; then
    echo "demo: step '$name' failed: $*" >&2
    tail -n 20 "$OUT/logs/$name.out" "$OUT/logs/$name.err" >&2
    exit 1
  fi
}

# [1] end to end on real photos
if [ ! -f "$OUT/refdb_effnet/manifest.json" ]; then
  step db_build "$TL" db build --photos "$SHARED/data/photos/im2gps3k_dev/metadata.csv" \
    --backbone efficientnet-lite0 --out "$OUT/refdb_effnet"
fi
# --resume keeps what an interrupted run finished; a complete file is not recomputed
step predict "$TL" predict "$SHARED/data/photos/osv5m" --db "$OUT/refdb_effnet" --top-k 5 \
  --format csv -o "$OUT/osv5m_predictions.csv" --resume --map "$OUT/osv5m_map.html"
step eval_osv5m "$TL" eval --predictions "$OUT/osv5m_predictions.csv" \
  --ground-truth "$SHARED/data/photos/osv5m/osv5m_photos.csv" --id-col path --out "$OUT/eval_osv5m" --json
cp "$OUT/logs/eval_osv5m.out" "$OUT/eval_osv5m.json"

# [2] the reasoning stage on G3's real retrieval output
step rag_eval "$TL" rag eval --candidates "$SHARED/data/rag/g3_candidates_im2gps3k_dev.csv" \
  --out "$OUT/rag_g3" --json
cp "$OUT/logs/rag_eval.out" "$OUT/rag_g3.json"

# [3] the published reproduction
step eval_published "$TL" eval --predictions "$SHARED/data/predictions/geoestimation_isns_im2gps3k.csv" \
  --benchmark im2gps3k --compare --out "$OUT/eval_geoestimation" --json
cp "$OUT/logs/eval_published.out" "$OUT/eval_geoestimation.json"

# [4] confidence / selective prediction (issue 18): rag eval [2] already cross-validated each photo's
#     P(error <= t) (nested 5-fold); this fits and saves a calibrator and summarises the figures.
step calibrate "$TL" calibrate --predictions "$OUT/rag_g3/predictions_consensus.csv" --benchmark im2gps3k \
  --out "$OUT/rag_g3/calibrator.json"
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
c = json.loads((out / "rag_g3.json").read_text())["methods"]["default"]["calibration"]
th = ["1", "25", "200", "750", "2500"]
lines = [
    "confidence, G3 candidates (consensus, nested 5-fold CV, n = %d): ECE %s points; Brier %s%% below the base rate"
    % (c["n"], " / ".join(f"{c['ece'][t]:.1f}" for t in th), " / ".join(f"{100 * c['brier_skill'][t]:.0f}" for t in th)),
    "    accuracy (%) among the most confident photos   " + "".join(f"{t + ' km':>9}" for t in th),
]
for cov in ("10", "25", "50", "100"):
    lines.append(f"    {cov + '%':>47}" + "".join(f"{c['selective'][t][cov]:9.1f}" for t in th))
lines.append(f"    plots: {out}/rag_g3/reliability.png, risk_coverage.png; calibrator: {out}/rag_g3/calibrator.json")
(out / "confidence.json").write_text(json.dumps({"line": "\n".join(lines), "calibration": c}) + "\n")
PYEOF

"$PY" "$(dirname "$0")/demo_summary.py" "$OUT" "$(( $(date +%s) - start ))"
