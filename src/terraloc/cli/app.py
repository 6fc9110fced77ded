"""The root Typer application and the error-handling entry point."""

from __future__ import annotations

import importlib
import sys

import click
import typer
from rich.console import Console

from terraloc.errors import TerralocError

app = typer.Typer(
    name="terraloc",
    help="Tell where on Earth a photo was taken.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Speed and accuracy benchmarks (print a table; --json for JSON).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# Every module `terraloc/cli/*_cmd.py` defines commands: it imports `app` (or a sub-app such as
# `bench_app`) and decorates functions. They are discovered, so adding a command touches one file.

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    """Console for stdout; wide when piped so tables are never truncated in files or logs."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    return console


def _register() -> None:
    import pkgutil

    import terraloc.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.endswith("_cmd"):
            importlib.import_module(f"terraloc.cli.{info.name}")


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error to stderr and exit with ``code``."""
    err_console.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line on stderr and return a non-zero status."""
    _register()
    try:
        rv = app(args=argv, prog_name="terraloc", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted", markup=False)
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        return 130
    except TerralocError as exc:
        err_console.print(f"error: {exc}", markup=False)
        return exc.exit_code
    except OSError as exc:  # disk full, read-only, no permission: one line, exit 2, no traceback
        from terraloc.output_errors import is_write_failure, output_error

        if not is_write_failure(exc):
            raise
        err_console.print(f"error: {output_error(exc, kept='files completed before were kept')}", markup=False)
        return 2
    return rv if isinstance(rv, int) else 0


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())
