"""Silence third-party INFO noise: Python loggers, and native libraries that write to file descriptor 2.

TensorFlow Lite (LiteRT) prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` from
C++ straight to the process's stderr, past Python's ``sys.stderr`` and unaffected by
``TF_CPP_MIN_LOG_LEVEL``. :func:`native_stderr_filtered` captures descriptor 2 around such a call
and writes back every line that is not an ``INFO:`` line, so warnings and errors still show.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

#: Python loggers of dependencies that log at INFO by default.
NOISY_LOGGERS = ("ray", "urllib3", "filelock", "httpx", "huggingface_hub", "transformers", "faiss", "numexpr")


def quiet_third_party() -> None:
    """Raise the noisy dependencies' loggers to WARNING and ask TensorFlow-family code to log less."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _is_info(line: str) -> bool:
    """``INFO: ...`` (TFLite) and glog ``I1130 11:22:33.000 ...`` lines, and blank lines."""
    import re

    s = line.strip()
    return s == "" or s.startswith("INFO:") or re.match(r"I\d{4} \d\d:\d\d:\d\d", s) is not None


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Capture file descriptor 2 for the block; re-emit its non-INFO lines afterwards.

    Python-level writes to ``sys.stderr`` inside the block are flushed first and captured too, so
    keep the block to the native call that is noisy.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real descriptor (e.g. captured by a test runner)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            kept = [ln for ln in text.splitlines() if not _is_info(ln)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
