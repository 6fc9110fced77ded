"""Print `make demo`'s one screen from the JSON files its steps wrote (see scripts/demo.sh)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

T = ("1", "25", "200", "750", "2500")


def _json(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text(encoding="utf-8"))


def _acc(res: dict) -> str:  # type: ignore[type-arg]
    return " / ".join(f"{res['accuracy'][t]:.1f}" for t in T)


def main(out: Path, seconds: str) -> None:
    print("terraloc demo: offline, on the shared data. Accuracy = % of photos within 1 / 25 / 200 / 750 / 2500 km.")

    e = _json(out / "eval_osv5m.json")
    print(
        f"\n[1] End to end on real photos: a database of 300 Im2GPS3k photos (EfficientNet-Lite0) locating the "
        f"{e['n']} OSV-5M street photos (another photo source; 300 Flickr photos are a tiny reference set)\n"
        f"    accuracy {_acc(e)}   median {e['median_km']:.0f} km   coverage {e['coverage']:.0f}%"
    )

    m = _json(out / "rag_g3.json")["methods"]
    first, cons = m["first"], m["consensus"]
    gain = " / ".join(f"{cons['accuracy'][t] - first['accuracy'][t]:+.1f}" for t in T)
    print(
        f"\n[2] Reasoning stage on G3's real retrieval output ({first['n']} Im2GPS3k photos, MP16 neighbours), "
        "no LLM:\n"
        f"    G3's first candidate   {_acc(first)}   median {first['median_km']:.0f} km\n"
        f"    geo-consensus          {_acc(cons)}   median {cons['median_km']:.0f} km\n"
        f"    gain (points)          {gain}"
    )

    g = _json(out / "eval_geoestimation.json")
    pub = g.get("published") or {}
    pub_txt = " / ".join(f"{pub[t]:.1f}" for t in T) if all(t in pub for t in T) else "n/a"
    print(
        f"\n[3] Published reproduction: GeoEstimation (ISNs) predictions on Im2GPS3k ({g['n']} photos), "
        f"re-scored by terraloc\n"
        f"    terraloc  {_acc(g)}\n"
        f"    paper     {pub_txt}"
    )

    conf = out / "confidence.json"  # [4] written by the confidence step, when there is one
    if conf.exists():
        c = _json(conf)
        print(f"\n[4] {c.get('line', '')}")

    print(f"\nfinished in {seconds} s; reports, predictions and the map ({out}/osv5m_map.html) are in {out}/")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
