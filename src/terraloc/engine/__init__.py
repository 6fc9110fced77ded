"""One engine for bulk work: predictions, embeddings and reference-database builds.

* :mod:`~terraloc.engine.inputs` — photo inputs (ids, paths, optional coordinates);
* :mod:`~terraloc.engine.plan` — fixed partitions and the job fingerprint used to resume;
* :mod:`~terraloc.engine.workers` — picklable worker specs (``EmbedSpec``, ``PredictSpec``) built
  once per worker, and the per-partition step that writes part files;
* :mod:`~terraloc.engine.parts` — atomic Parquet part files (rows, errors);
* :mod:`~terraloc.engine.local` / :mod:`~terraloc.engine.ray_engine` — where partitions run;
* :mod:`~terraloc.engine.job` — ``run_job``: skip finished parts, run the rest, manifest last;
* :mod:`~terraloc.engine.predictions` — prediction parts → CSV / JSON Lines / GeoJSON;
* :mod:`~terraloc.engine.refdb_build` — embedding parts → FAISS reference database
  (``build_refdb``, the Python API of ``terraloc db build``; ``geotagged_items`` reads its inputs);
* :mod:`~terraloc.engine.progress` — progress events and the run summary.

See ``docs/engine.md``.
"""

from terraloc.engine.inputs import WorkItems, read_work_items
from terraloc.engine.job import read_manifest, run_job
from terraloc.engine.progress import Progress, RunSummary
from terraloc.engine.refdb_build import build_refdb, geotagged_items
from terraloc.engine.select import ENGINE_NAMES, make_engine
from terraloc.engine.workers import EmbedSpec, PredictSpec

__all__ = [
    "ENGINE_NAMES",
    "EmbedSpec",
    "PredictSpec",
    "Progress",
    "RunSummary",
    "WorkItems",
    "build_refdb",
    "geotagged_items",
    "make_engine",
    "read_manifest",
    "read_work_items",
    "run_job",
]
