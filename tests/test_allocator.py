"""The allocator tuning of bulk workers: freed batch memory stays mapped for the next batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

PROBE = """
import sys
sys.path.insert(0, {src!r})
import numpy as np
from terraloc.allocator import keep_freed_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
a = np.ones(20 * 2**20 // 8)  # a batch's activations: allocated, written, freed
peak = rss_mb()
del a
after = rss_mb()
b = np.ones(20 * 2**20 // 8)  # the next batch's
print(tuned, peak - after, rss_mb() - after)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_batch_memory_stays_mapped() -> None:
    out = {}
    for mode in ("plain", "tuned"):
        r = subprocess.run([sys.executable, "-c", PROBE.format(src=str(SRC)), mode], capture_output=True, text=True,
                           check=True)  # fmt: skip
        tuned, released, refaulted = r.stdout.split()
        out[mode] = (tuned == "True", float(released), float(refaulted))
    assert out["tuned"][0] is True
    # untuned: the 20 MB block is mmapped, unmapped when freed, and the next one faults in again
    assert out["plain"][1] > 15 and out["plain"][2] > 15, out
    # tuned: it comes from the heap, stays mapped when freed, and the next block reuses its pages
    assert out["tuned"][1] < 5 and out["tuned"][2] < 5, out
