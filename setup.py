"""Build hooks; all other metadata is in pyproject.toml.

- README.md and docs/*.md ship inside the wheel as ``terraloc/docs/`` (read them with ``terraloc docs``).
- The wheel's long description is README.md with every relative link (which only resolves inside the
  repository) rewritten to the ``terraloc docs NAME`` command that prints the same document offline.
"""

import re
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
LINK = re.compile(r"\[([^\]]+)\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def _long_description() -> str:
    def repl(m: re.Match[str]) -> str:
        text, target = m.group(1), m.group(2)
        path = Path(target.split("#", 1)[0])
        if path.suffix == ".md" and path.parent.name == "docs":
            return f"{text} (`terraloc docs {path.stem}`)"
        return text  # a file of the repository or of the shared data folder: named, not linked

    return LINK.sub(repl, (ROOT / "README.md").read_text(encoding="utf-8"))


class BuildPyWithDocs(build_py):
    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "terraloc" / "docs"
        dest.mkdir(parents=True, exist_ok=True)
        for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
            shutil.copyfile(doc, dest / doc.name)


setup(
    cmdclass={"build_py": BuildPyWithDocs},
    long_description=_long_description(),
    long_description_content_type="text/markdown",
)
