"""User-facing errors: one clear line, no traceback, non-zero exit code."""
from __future__ import annotations

import _thread
import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Callable, NoReturn

from utils.launch import launched_world


class UserError(Exception):
    """A problem with the user's input (paths, files, arguments) that a one-line message explains."""


def first_line(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


def last_line(err: BaseException, limit: int = 160) -> str:
    """The last line of an exception's message (its type name if it has none): where Paddle, OpenVINO
    and ONNX Runtime put the actual error, after their C++ stack or context lines."""
    lines = str(err).strip().splitlines()
    return lines[-1][:limit] if lines else type(err).__name__


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (the usage text is what -h prints)."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} -h)")


def script_parser(description: str | None) -> argparse.ArgumentParser:
    """The parser of an entry script: its docstring as help text, one-line usage errors."""
    return OneLineArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


# What must still happen when a launched worker leaves with os._exit (fail): removing its output
# folder's .lock file (utils.io.output_lock). Registered and forgotten by their owners.
_FAST_EXIT_CLEANUPS: list[Callable[[], None]] = []


def on_fast_exit(cleanup: Callable[[], None]) -> None:
    _FAST_EXIT_CLEANUPS.append(cleanup)


def forget_fast_exit(cleanup: Callable[[], None]) -> None:
    if cleanup in _FAST_EXIT_CLEANUPS:
        _FAST_EXIT_CLEANUPS.remove(cleanup)


def fail(message: str, exit_code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    if launched_world()[1] > 1:
        # A worker of paddle.distributed.launch: the launcher stops the others as soon as one exits,
        # so leave now rather than after the interpreter's slow teardown (nothing is left to write).
        for cleanup in reversed(_FAST_EXIT_CLEANUPS):
            with contextlib.suppress(Exception):
                cleanup()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    raise SystemExit(exit_code)


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    """Run an entry script's main(): UserError and bad files become one line on stderr."""
    # A path that is not UTF-8 (an output folder on a GBK share) printed as-is would raise
    # UnicodeEncodeError; results files spell such bytes \xNN (utils.io.readable_text), and any
    # print that does not still prints, escaped, rather than stopping the run.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
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
    if _interrupt.received:
        # Something below swallowed the KeyboardInterrupt (a library's broad except): still stop as asked.
        fail("interrupted", exit_code=130)
    raise SystemExit(code or 0)


def describe_os_error(err: OSError) -> str:
    """One line for an OSError: what went wrong and on which file."""
    where = f": {err.filename}" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return f"no space left on device while writing{where}"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}"
    return f"{err.strerror or first_line(err)}{where}"


class _InterruptState:
    received = False       # Ctrl-C arrived at least once
    redelivered = 0        # times it was raised again after Python ignored it


_interrupt = _InterruptState()
# A Ctrl-C that keeps landing in finalisers is given up on after this many re-deliveries.
_MAX_REDELIVERIES = 3
_REDELIVERY_DELAY = 0.01   # seconds


def _exit_interrupted() -> NoReturn:
    print("error: interrupted", file=sys.stderr)
    sys.stderr.flush()
    os._exit(130)


def _inside_import(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    _interrupt.received = True
    if _inside_import(frame):
        # Raised inside an import, KeyboardInterrupt comes out of Paddle's native module as
        # "Can not import paddle core" and an ImportError traceback. Leave now instead: outputs
        # survive that as they survive kill -9 (atomic renames; the next run removes temporaries).
        _exit_interrupted()
    raise KeyboardInterrupt


def _on_unraisable(unraisable: "sys.UnraisableHookArgs") -> None:
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        # Ctrl-C landed in a finaliser or a weakref callback, where Python prints "Exception ignored"
        # and carries on: deliver it again so that it reaches the code that was running.
        if _interrupt.redelivered >= _MAX_REDELIVERIES:
            _exit_interrupted()
        _interrupt.redelivered += 1
        # A moment later, from another thread: delivered now it would land in this hook and be ignored again.
        redelivery = threading.Timer(_REDELIVERY_DELAY, _thread.interrupt_main)
        redelivery.daemon = True
        redelivery.start()
        return
    sys.__unraisablehook__(unraisable)


def _interrupt_hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        _exit_interrupted()
    sys.__excepthook__(kind, value, tb)


def install_interrupt_hook() -> None:
    """Ctrl-C is `error: interrupted` and exit 130 wherever it lands: during the entry scripts' slow
    imports (Paddle's would turn it into an import traceback), in a finaliser (Python would ignore
    it) or below a handler that swallows it (run_cli checks on the way out)."""
    # Only the main thread may set handlers; a SIGINT the parent chose to ignore (nohup, `&`) stays ignored.
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_interrupt)
    sys.unraisablehook = _on_unraisable
    sys.excepthook = _interrupt_hook
