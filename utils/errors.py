"""User-facing errors: one clear line, no traceback, non-zero exit code."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn


class UserError(Exception):
    """A problem with the user's input (paths, files, arguments) that a one-line message explains."""


def first_line(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def fail(message: str, exit_code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(exit_code)


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    """Run an entry script's main(): UserError and bad files become one line on stderr."""
    try:
        code = main()
    except UserError as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted", exit_code=130)
    raise SystemExit(code or 0)
