"""The ``terraloc`` command line (Typer + Rich).

Each command group lives in its own module and registers itself on :data:`app`; heavy imports
happen inside the commands so ``terraloc --help`` stays fast.
"""

from terraloc.cli.app import app, main

__all__ = ["app", "main"]
