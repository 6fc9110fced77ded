"""Option declarations shared by every command that builds a geolocator (``predict``, ``serve``).

One declaration per option keeps the spelling, the help text and the default the same wherever the
option appears (``docs/cli.md`` lists them); each command still decides which ones it takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="A saved geolocator folder (Geolocator.save_pretrained) or a preset name."),
]
BackboneOption = Annotated[
    str | None,
    typer.Option(help="Backbone: a local folder, a model name (terraloc models list) or efficientnet-lite0."),
]
HeadOption = Annotated[
    str | None,
    typer.Option(
        help="geoclip (GPS gallery), refdb (reference photos, needs --db), geosurge (needs --checkpoint), "
        "geosurge+fusion (needs --fusion) or an installed third-party head."
    ),
]
GalleryOption = Annotated[
    str | None,
    typer.Option(help="GPS gallery for the geoclip head: geoclip-100k or a folder (terraloc gallery build)."),
]
IndexOption = Annotated[
    str | None,
    typer.Option(
        help="Gallery search: flat (exact), hierarchical@OPTS or a FAISS factory string with @PARAMS, "
        "e.g. 'IVF1024,Flat@nprobe=16'; built once and cached with the gallery."
    ),
]
FusionOption = Annotated[
    Path | None,
    typer.Option(
        help="Semantic-fusion checkpoint (terraloc fusion train) for --head geosurge; the GeoSURGE "
        "head defaults to geosurge.pt beside it."
    ),
]
SegmenterOption = Annotated[
    str | None, typer.Option(help="Segmentation provider for --fusion: tflite or oneformer:DIR.")
]
CheckpointOption = Annotated[
    Path | None,
    typer.Option("--checkpoint", help="Trained head checkpoint (terraloc train geosurge / geoclip)."),
]
DbOption = Annotated[Path | None, typer.Option("--db", help="Reference database folder (terraloc db build).")]
TenCropOption = Annotated[
    bool | None, typer.Option("--ten-crop/--no-ten-crop", help="Average the logits of ten crops (geoclip head).")
]
DeviceOption = Annotated[
    str,
    typer.Option(
        help="Where the backbone runs: auto (a GPU when one is visible), cpu, cuda or cuda:N; the heads run on the CPU."
    ),
]
PlacesOption = Annotated[bool | None, typer.Option("--places/--no-places", help="Add offline place names.")]
ReasonerOption = Annotated[
    str | None,
    typer.Option(
        help="rag: re-rank the head's candidates with the nearest/farthest references of --db (if given) "
        "and an --llm's answers (see docs/rag.md)."
    ),
]
LlmOption = Annotated[
    str | None, typer.Option(help="LLM for --reasoner rag: local[:NAME|:PATH.gguf] or http(s)://HOST/v1#MODEL.")
]
CalibratorOption = Annotated[
    Path | None, typer.Option(help="Calibrator JSON (terraloc calibrate) for this configuration: adds confidence.")
]
MinConfidenceOption = Annotated[
    str | None,
    typer.Option(
        help="KM:P, e.g. 25:0.8: abstain (explicit abstained row) when P(error <= KM) < P (needs --calibrator)."
    ),
]
DistinctKmOption = Annotated[
    float | None,
    typer.Option(help="Merge candidates within this many km of a better one (0 = raw list) [default: 25]."),
]
