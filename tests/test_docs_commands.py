"""Docs that are run: every ```bash block in README.md and docs/*.md is executed, or marked.

A block runs as written, as one bash script (``set -eo pipefail``), from a scratch copy of the
repository root whose ``../shared`` is the shared data folder, with ``terraloc`` and ``python`` on
PATH pointing at this checkout. A block that needs real weights (CLIP ViT-L/14, StreetCLIP, MP-16),
a long-running server or hours of compute carries a marker on the line directly above its fence::

    <!-- no-run: needs the CLIP ViT-L/14 weights (1.7 GB) -->

A failure names the file, the line and the command that failed, with the end of its output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_FENCE = re.compile(r"^\s*```(bash|sh|shell|console)\s*$")
NO_RUN = re.compile(r"^\s*<!--\s*no-run:\s*(?P<reason>.*?)\s*-->\s*$")
BLOCK_TIMEOUT_S = 600


@dataclass
class Block:
    """One shell block: its file, the line of its opening fence and its lines (1-based numbers)."""

    name: str
    line: int
    lines: list[tuple[int, str]] = field(default_factory=list)
    no_run: str | None = None

    @property
    def where(self) -> str:
        return f"{self.name}:{self.line}"

    def commands(self) -> list[tuple[int, str]]:
        """Logical commands (backslash continuations joined), each with the line it starts on."""
        out: list[tuple[int, str]] = []
        pending: tuple[int, str] | None = None
        for no, text in self.lines:
            if pending is not None:
                pending = (pending[0], pending[1] + "\n" + text)
            elif text.strip() and not text.lstrip().startswith("#"):
                pending = (no, text)
            else:
                continue
            if not pending[1].rstrip().endswith("\\"):
                out.append(pending)
                pending = None
        if pending is not None:
            out.append(pending)
        return out


def collect_blocks(paths: list[Path], base: Path = REPO) -> tuple[list[Block], list[str]]:
    """All shell blocks in ``paths``, and problems with markers (a marker not above a fence, no reason)."""
    blocks: list[Block] = []
    problems: list[str] = []
    for path in paths:
        name = str(path.relative_to(base))
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        in_other_fence = False
        while i < len(lines):
            text = lines[i]
            m = NO_RUN.match(text)
            if m and not in_other_fence:
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                if not SHELL_FENCE.match(nxt):
                    problems.append(f"{name}:{i + 1}: no-run marker not directly above a ```bash fence")
                elif not m.group("reason"):
                    problems.append(f"{name}:{i + 1}: no-run marker without a reason")
            if SHELL_FENCE.match(text) and not in_other_fence:
                prev = NO_RUN.match(lines[i - 1]) if i > 0 else None
                block = Block(name, i + 1, no_run=prev.group("reason") if prev else None)
                i += 1
                while i < len(lines) and not lines[i].lstrip().startswith("```"):
                    block.lines.append((i + 1, lines[i]))
                    i += 1
                blocks.append(block)
            elif text.lstrip().startswith("```"):
                in_other_fence = not in_other_fence
            i += 1
    return blocks, problems


BLOCKS, MARKER_PROBLEMS = collect_blocks(DOC_FILES)
RUNNABLE = [b for b in BLOCKS if b.no_run is None]


def test_no_run_markers_are_well_formed() -> None:
    assert not MARKER_PROBLEMS, "\n".join(MARKER_PROBLEMS)


def test_collector_reads_markers_and_continuations(tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text(
        "text\n<!-- no-run: needs real weights -->\n```bash\nterraloc x\n```\n\n```bash\n# c\nterraloc a \\\n  --b\n"
        "terraloc c\n```\n```python\nprint()\n```\n<!-- no-run: -->\n```bash\nls\n```\n<!-- no-run: y -->\ntext\n",
        encoding="utf-8",
    )
    blocks, problems = collect_blocks([doc], base=tmp_path)
    assert [(b.line, b.no_run) for b in blocks] == [(3, "needs real weights"), (7, None), (17, "")]
    assert blocks[1].commands() == [(9, "terraloc a \\\n  --b"), (11, "terraloc c")]
    assert problems == [
        "d.md:16: no-run marker without a reason",
        "d.md:20: no-run marker not directly above a ```bash fence",
    ]


def _sandbox(tmp: Path, shared: Path) -> tuple[Path, dict[str, str]]:
    """A scratch repository root (``tmp/repo``, with ``../shared``) and the environment to run in."""
    root = tmp / "repo"
    root.mkdir()
    for item in REPO.iterdir():
        if item.name in {"README.md", "docs", "src", "scripts", "tests", "pyproject.toml", "Makefile"}:
            (root / item.name).symlink_to(item)
    (tmp / "shared").symlink_to(shared)
    bindir = tmp / "bin"
    bindir.mkdir()
    for name, body in {
        "terraloc": f'exec "{sys.executable}" -m terraloc "$@"',
        "python": f'exec "{sys.executable}" "$@"',
    }.items():
        script = bindir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["TERRALOC_SHARED"] = str(tmp / "shared")
    env["COLUMNS"] = "200"
    return root, env


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_docs_block_runs(block: Block, shared: Path, tmp_path: Path) -> None:
    root, env = _sandbox(tmp_path, shared)
    mark = tmp_path / "failed_line"
    env["DOCS_TEST_MARK"] = str(mark)
    commands = block.commands()
    script = ["set -eo pipefail", "__doc_line=0", """trap 'echo "$__doc_line" > "$DOCS_TEST_MARK"' ERR"""]
    for no, cmd in commands:
        script += [f"__doc_line={no}", cmd]
    try:
        proc = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"{block.where}: block ran past {BLOCK_TIMEOUT_S} s; make it smaller or mark it <!-- no-run: ... -->"
        )
    if proc.returncode != 0:
        text = dict(commands)
        line = int(mark.read_text().strip()) if mark.exists() else block.line
        cmd = text.get(line, "(block)")
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        pytest.fail(
            f"{block.name}:{line}: `{cmd}` exited with status {proc.returncode}\n{tail}\n"
            "(fix the command, or mark its block with <!-- no-run: reason --> directly above the fence)",
            pytrace=False,
        )
