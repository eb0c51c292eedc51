"""User-facing errors: one clear line, no traceback, non-zero exit code."""
from __future__ import annotations

import argparse
import errno
import os
import sys
from types import TracebackType
from typing import Callable, NoReturn

from utils.launch import launched_world


class UserError(Exception):
    """A problem with the user's input (paths, files, arguments) that a one-line message explains."""


def first_line(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (the usage text is what -h prints)."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} -h)")


def script_parser(description: str | None) -> argparse.ArgumentParser:
    """The parser of an entry script: its docstring as help text, one-line usage errors."""
    return OneLineArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def fail(message: str, exit_code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    if launched_world()[1] > 1:
        # A worker of paddle.distributed.launch: the launcher stops the others as soon as one exits,
        # so leave now rather than after the interpreter's slow teardown (nothing is left to write).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    raise SystemExit(exit_code)


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    """Run an entry script's main(): UserError and bad files become one line on stderr."""
    try:
        code = main()
    except UserError as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted", exit_code=130)
    except OSError as err:
        # Reading or writing failed below the pipeline's own checks (permissions, a full disk, ...).
        fail(describe_os_error(err))
    except MemoryError:
        fail("out of memory: try a smaller --batch_size (or --resize / --crop_size)")
    raise SystemExit(code or 0)


def describe_os_error(err: OSError) -> str:
    """One line for an OSError: what went wrong and on which file."""
    where = f": {err.filename}" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return f"no space left on device while writing{where}"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}"
    return f"{err.strerror or first_line(err)}{where}"


def _interrupt_hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)
    sys.__excepthook__(kind, value, tb)


def install_interrupt_hook() -> None:
    """Ctrl-C before run_cli is reached (the entry scripts' slow imports): one line, not a traceback."""
    sys.excepthook = _interrupt_hook
