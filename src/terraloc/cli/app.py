"""The root Typer application and the error-handling entry point.

Usage errors (a missing or unknown argument or option, a bad value, an unknown command) print
one ``error:`` line and one usage line on stderr and exit with status 2, never a traceback.
Typer (0.20 and later) raises the exceptions of its bundled copy of Click, ``typer._click``, not
those of the ``click`` package; both are handled.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from types import ModuleType
from typing import Any

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


def _version(value: bool) -> None:
    if value:
        from terraloc import __version__

        typer.echo(f"terraloc {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Tell where on Earth a photo was taken."""


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


def _click_modules() -> list[ModuleType]:
    """The exception modules of Typer's bundled Click and, if it was imported, of ``click`` itself."""
    mods = []
    with contextlib.suppress(ImportError):  # Typer before 0.20 used the click package only
        mods.append(importlib.import_module("typer._click.exceptions"))
    if "click" in sys.modules:
        mods.append(importlib.import_module("click.exceptions"))
    return mods


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _metavars(text: str) -> str:
    """Typer writes list arguments as ``{paths}``; show them as ``PATHS`` like the others."""
    text = re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), text)
    return re.sub(r"argument '(\w+)'", lambda m: f"argument {m.group(1).upper()}", text)


def _usage_hint(ctx: Any) -> str:
    """``usage: terraloc predict [OPTIONS] PATHS... (terraloc predict --help for details)``."""
    if ctx is None:
        return "usage: terraloc COMMAND [OPTIONS] (terraloc --help for the commands)"
    usage = _metavars(_one_line(ctx.get_usage()).removeprefix("Usage: ").removeprefix("usage: "))
    return f"usage: {usage} ({ctx.command_path} --help for details)"


def show_usage_error(exc: BaseException) -> int:
    """Print a Click usage error as one ``error:`` line plus a usage line; return its exit code (2)."""
    possibilities = sorted(getattr(exc, "possibilities", None) or [])
    if possibilities:  # a mistyped option: "did you mean", not Click's "(Possible options: ...)"
        msg = f"no such option: {exc.option_name} (did you mean {' or '.join(possibilities)}?)"  # type: ignore[attr-defined]
    else:
        msg = _one_line(exc.format_message()) if hasattr(exc, "format_message") else _one_line(str(exc))
    msg = _metavars(msg.removeprefix("Error: "))
    msg = re.sub(r"\. Did you mean (.+)\?$", r" (did you mean \1?)", msg)
    if msg[:1].isupper() and not msg[1:2].isupper():
        msg = msg[0].lower() + msg[1:]
    err_console.print(f"error: {msg}", markup=False)
    err_console.print(_usage_hint(getattr(exc, "ctx", None)), markup=False, style="dim")
    return int(getattr(exc, "exit_code", 2) or 2)


def _handle(exc: BaseException) -> int | None:
    """Exit status for a Click/Typer exception (after printing it), or ``None`` if it is not one."""
    if isinstance(exc, typer.Exit):
        return int(exc.exit_code)
    if isinstance(exc, typer.Abort):
        err_console.print("aborted", markup=False)
        return 130
    for mod in _click_modules():
        if type(exc).__name__ == "NoArgsIsHelpError" and isinstance(exc, mod.UsageError):
            # A command group (or `terraloc` itself) without a command: its help, status 0.
            typer.echo(exc.ctx.get_help())  # type: ignore[attr-defined]
            return 0
        if isinstance(exc, mod.UsageError):
            return show_usage_error(exc)
        if isinstance(exc, mod.Exit):
            return int(exc.exit_code)
        if isinstance(exc, mod.Abort):
            err_console.print("aborted", markup=False)
            return 130
        if isinstance(exc, mod.ClickException):
            err_console.print(f"error: {_one_line(exc.format_message())}", markup=False)
            return int(exc.exit_code)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; usage and user errors print one line on stderr and return a non-zero status."""
    _register()
    from terraloc import progress
    from terraloc.cli.progress_view import RichReporter
    from terraloc.quiet import quiet_third_party

    quiet_third_party()
    reporter = RichReporter(err_console)
    previous = progress.set_reporter(reporter)
    try:
        return _run(argv)
    finally:
        reporter.close()
        progress.set_reporter(previous)


def _run(argv: list[str] | None) -> int:
    try:
        rv = app(args=argv, prog_name="terraloc", standalone_mode=False)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        return 130
    except TerralocError as exc:
        err_console.print(f"error: {_one_line(str(exc))}", markup=False)
        return exc.exit_code
    except Exception as exc:
        from terraloc.output_errors import is_write_failure, output_error

        if is_write_failure(exc):  # disk full, read-only, no permission: one line, exit 2, no traceback
            err_console.print(f"error: {output_error(exc, kept='files completed before were kept')}", markup=False)  # type: ignore[arg-type]
            return 2
        code = _handle(exc)
        if code is None:
            raise
        return code
    return rv if isinstance(rv, int) else 0


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())
