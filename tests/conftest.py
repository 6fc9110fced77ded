"""Shared fixtures: the shared data folder (read in place) and a CLI runner.

Outside CI a missing shared folder skips the tests that need it; under ``CI=true`` it fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from terraloc.cli.app import main


def _shared_root() -> Path | None:
    env = os.environ.get("TERRALOC_SHARED")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder; fails under CI when it is missing, skips otherwise."""
    root = _shared_root()
    if root is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("shared data folder missing (set TERRALOC_SHARED); required under CI")
        pytest.skip("shared data folder not available")
    os.environ.setdefault("TERRALOC_SHARED", str(root))
    return root


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``terraloc ARGS`` in-process and return exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def one_thread() -> object:
    """Tiny models run much faster on one torch thread on a busy machine; restore the count afterwards.

    Modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
