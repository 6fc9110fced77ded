"""Every command, walked from the registered CLI: usage errors are one line + usage, exit 2, no traceback.

The commands are discovered by introspecting the Typer app, so a command added later is covered
without touching this file. Each leaf command is run with no arguments (commands that need none
are asked for ``--help`` instead of being run), with an unknown option, and with a bad value for
its first typed option (a number, a range or a choice).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from terraloc.cli.app import _register, app

UNKNOWN = "--no-such-option-xyz"


def _click_root() -> Any:
    import typer.main

    _register()
    return typer.main.get_command(app)


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _walk(sub, (*path, name))


ROOT = _click_root()
ALL = list(_walk(ROOT))
LEAVES = [(p, c) for p, c in ALL if not hasattr(c, "commands")]
GROUPS = [(p, c) for p, c in ALL if hasattr(c, "commands")]


def _ids(items: list[tuple[tuple[str, ...], Any]]) -> list[str]:
    return [" ".join(p) or "terraloc" for p, _ in items]


def _is_option(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "option"


def _required(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if p.required]


def _bad_value(cmd: Any) -> tuple[str, str] | None:
    """(option, value) that the option's type refuses, or None when no option has a checked type."""
    for p in cmd.params:
        if not _is_option(p) or p.is_flag or p.hidden or not p.opts:
            continue
        import enum
        import typing

        ann = p.type_descriptor.annotation  # the option's type, Optional stripped
        ann = typing.get_args(ann)[0] if typing.get_origin(ann) is list else ann
        if ann in (int, float):
            return p.opts[0], "not-a-number"
        if typing.get_origin(ann) is typing.Literal or (isinstance(ann, type) and issubclass(ann, enum.Enum)):
            return p.opts[0], "no-such-choice"
    return None


def _assert_usage_error(r: Any, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert r.code == 2, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert "Traceback" not in r.err and "Traceback" not in r.out
    assert len(lines) == 2, r.err
    assert lines[0].startswith("error: ") and lines[1].startswith("usage: terraloc"), r.err
    for f in fragments:
        assert f in lines[0], r.err


def test_the_walk_finds_the_commands() -> None:
    names = set(_ids(LEAVES))
    assert {"predict", "eval", "db build", "embed", "serve", "bench search"} <= names
    assert len(LEAVES) >= 20


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=_ids(LEAVES))
def test_no_arguments(cli, path: tuple[str, ...], cmd: Any) -> None:  # type: ignore[no-untyped-def]
    if _required(cmd):
        r = cli(*path)
        _assert_usage_error(r, "missing")
    else:  # needs nothing: running it would do the work, so ask for its usage instead
        r = cli(*path, "--help")
        assert r.code == 0 and "Usage:" in r.out and "Traceback" not in r.err


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=_ids(ALL))
def test_unknown_option(cli, path: tuple[str, ...], cmd: Any) -> None:  # type: ignore[no-untyped-def]
    _assert_usage_error(cli(*path, UNKNOWN), f"no such option: {UNKNOWN}")


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=_ids(LEAVES))
def test_bad_value(cli, path: tuple[str, ...], cmd: Any) -> None:  # type: ignore[no-untyped-def]
    bad = _bad_value(cmd)
    if bad is not None:
        option, value = bad
        _assert_usage_error(cli(*path, option, value), "invalid value for", option)
        return
    # No typed option: a required path argument that does not exist is the bad value; the command
    # itself refuses it (an input error: one line, no usage line).
    args = [p for p in _required(cmd) if p.param_type_name == "argument"]
    if len(args) != 1 or args[0].type_descriptor.annotation is not Path:
        pytest.skip("no option with a checked type and no path argument")
    r = cli(*path, "/nonexistent/terraloc-usage-test")
    assert r.code == 2 and "Traceback" not in r.err
    assert r.err.strip().startswith("error: ") and len(r.err.strip().splitlines()) == 1, r.err
    assert "/nonexistent/terraloc-usage-test" in r.err


@pytest.mark.parametrize(("path", "cmd"), GROUPS, ids=_ids(GROUPS))
def test_group_without_command_prints_help(cli, path: tuple[str, ...], cmd: Any) -> None:  # type: ignore[no-untyped-def]
    r = cli(*path)
    assert r.code == 0 and "Usage:" in r.out and "Commands" in r.out and r.err == ""


@pytest.mark.parametrize(("path", "cmd"), GROUPS, ids=_ids(GROUPS))
def test_unknown_command_suggests(cli, path: tuple[str, ...], cmd: Any) -> None:  # type: ignore[no-untyped-def]
    first = sorted(cmd.commands)[0]
    typo = first[:-1] + ("x" if first[-1] != "x" else "y")
    r = cli(*path, typo)
    _assert_usage_error(r, f"no such command '{typo}'", f"did you mean '{first}'")


def test_typos_version_and_real_process() -> None:
    from terraloc import __version__

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "terraloc", *args], capture_output=True, text=True, check=False)

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"terraloc {__version__}"
    r = run("predcit")
    assert r.returncode == 2 and "did you mean 'predict'" in r.stderr.lower() and "Traceback" not in r.stderr
    r = run("predict", "x.jpg", "--top-kk", "3")
    assert r.returncode == 2 and "did you mean --top-k?" in r.stderr and len(r.stderr.strip().splitlines()) == 2
    r = run("predict", "x.jpg", "-k", "abc")
    assert r.returncode == 2 and "invalid value for '--top-k'" in r.stderr and "Traceback" not in r.stderr
    r = run("predict")
    assert r.returncode == 2 and r.stderr.startswith("error: missing argument PATHS")
    assert "usage: terraloc predict [OPTIONS] PATHS..." in r.stderr


def test_renamed_option_still_works_with_a_warning(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # `db build --images` was renamed --photos: the old spelling works for one release, with a warning
    r = cli("db", "build", "--images", tmp_path / "nothing", "--out", tmp_path / "db")
    assert r.code == 2 and "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert lines[0].startswith("warning: --images is deprecated") and "use --photos" in lines[0]
    assert lines[1].startswith("error: ") and "no such file or folder" in lines[1]
    r = cli("db", "build", "--images", tmp_path / "a", "--photos", tmp_path / "b", "--out", tmp_path / "db")
    _assert_usage_error_after_warning(r, "give --photos or its old name --images, not both")
    r = cli("db", "build", "--out", tmp_path / "db")
    _assert_usage_error(r, "missing option '--photos'")


def _assert_usage_error_after_warning(r: Any, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert r.code == 2 and "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert lines[0].startswith("warning: ") and lines[1].startswith("error: ") and fragment in lines[1], r.err
    assert lines[2].startswith("usage: terraloc db build")


def test_docs_cli_md_lists_every_option_of_every_command() -> None:
    """docs/cli.md's reference is generated (python -m terraloc.cli.reference --write); a new option must be in it."""
    from terraloc.cli.reference import BEGIN, commands, visible_params

    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    ref = doc.split(BEGIN, 1)[1]
    sections = {chunk.split("\n", 1)[0].strip(): chunk for chunk in ref.split("### terraloc ")[1:]}
    fix = "run: python -m terraloc.cli.reference --write"
    for name, cmd in commands():
        assert name in sections, f"docs/cli.md has no section for `terraloc {name}` ({fix})"
        for p in visible_params(cmd):
            spelled = f"`{p.opts[0]}`" if p.param_type_name == "option" else f"`{p.name.upper()}`"
            assert spelled in sections[name], f"docs/cli.md: `terraloc {name}` lacks {spelled} ({fix})"
