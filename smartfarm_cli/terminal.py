"""Where farmctl writes, and how a command ends when something goes wrong.

Results go to stdout, messages to stderr. Every failure a user can meet ends with exactly one
line, `error: ...`, never wrapped and never a traceback: exit code 2 when the user asked for
something that cannot work as given, 1 when the system (disk, AWS, network) failed.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import typer

# typer >= 0.26 vendors click as typer._click; its exceptions are what commands raise.
from typer._click import exceptions as click
from typer.core import TyperGroup

from .errors import FarmctlError, UserError

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A rich Console made on first use: a command that prints only JSON or CSV (`trend -o
    csv` in a script) never imports rich (~15 ms of its start-up)."""

    def __init__(self, **options: Any):
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_console", None)

    @property
    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            object.__setattr__(self, "_console", Console(**self._options))
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.real, name, value)


console = LazyConsole(soft_wrap=True)  # prose is never hard-wrapped; tables fit the width
err_console = LazyConsole(stderr=True, soft_wrap=True)


def print_error(message: str) -> None:
    """One line on stderr (soft-wrapped: piped, it stays one greppable line)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> NoReturn:
    print_error(message)
    raise typer.Exit(code)


def exit_code(exc: BaseException) -> int | None:
    """2 for the user's mistakes, 1 for system failures, None for bugs (let them show)."""
    from .core.queries import QueryError
    from .core.rules import RulesError

    if isinstance(exc, QueryError | RulesError):
        return UserError.exit_code
    if isinstance(exc, FarmctlError):
        return exc.exit_code
    if isinstance(exc, OSError):
        return 1
    return None


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror.lower()}{where}"
    return str(exc)


def guarded(fn):
    """Run a command so that known failures end in one line (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        try:
            return fn(*args, **kw)
        except (typer.Exit, typer.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None  # 128 + SIGPIPE, what a shell shows for cat
        except Exception as exc:
            code = exit_code(exc)
            if code is None:
                raise
            fail(describe(exc), code)

    return wrapper


class FarmctlGroup(TyperGroup):
    """Click's usage errors in the same one-line `error:` form as farmctl's own."""

    def main(self, *args, standalone_mode: bool = True, **kw):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kw)
        try:
            result = super().main(*args, standalone_mode=False, **kw)
        except click.NoArgsIsHelpError as exc:  # bare `farmctl`: the help, as click shows it
            err_console.out(exc.format_message(), highlight=False)
            raise SystemExit(exc.exit_code) from None
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "farmctl"
            print_error(f"{exc.format_message()} (see `{where} --help`)")
            raise SystemExit(exc.exit_code) from None
        except click.ClickException as exc:
            print_error(exc.format_message())
            raise SystemExit(exc.exit_code) from None
        except typer.Abort:
            print_error("aborted")
            raise SystemExit(1) from None
        raise SystemExit(result if isinstance(result, int) else 0)
