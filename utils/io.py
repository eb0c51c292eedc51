"""Writing outputs safely: a file is either complete or absent, never half-written."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from utils.errors import UserError, forget_fast_exit, on_fast_exit


def is_safe_name(name: str) -> bool:
    """A name usable as one file or folder inside another: no separator, no '..', nothing hidden."""
    return (bool(name) and name not in (".", "..") and not name.startswith(".")
            and "/" not in name and "\\" not in name and "\0" not in name)


def readable_text(text: str) -> str:
    """`text` (a file name, or a message holding one) as valid UTF-8, for results files and the terminal.

    A name that is not UTF-8 on disk (b'bad\\xff\\xfe.png', e.g. from a GBK share) reaches Python with
    its undecodable bytes as lone surrogates (os.fsdecode's surrogateescape), which no UTF-8 writer
    accepts. Each such byte is written as a backslash escape instead: 'bad\\xff\\xfe.png' (the same
    spelling as Python's repr), so the exact bytes can be read back. Other text is unchanged.
    """
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:   # a surrogate that stands for no byte: escape the code point itself
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check that files can be written into it."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=temp_prefix("write-test"), suffix=".tmp"):
            pass
    except OSError as err:
        raise UserError(f"cannot write to output folder '{folder}': {err.strerror or err}") from None
    return folder


# The repository's root: the folder that holds this utils package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def source_package_of(path: str | os.PathLike) -> Path | None:
    """The project's Python package (a folder of the repository with an __init__.py) that `path`
    lies in, or None. Outputs written there show in `git status` and `git clean` deletes them."""
    target = Path(path).resolve()
    try:
        parts = target.relative_to(PROJECT_ROOT).parts
    except ValueError:
        return None
    folder = PROJECT_ROOT
    for part in parts:
        folder = folder / part
        if (folder / "__init__.py").is_file():
            return folder
    return None


def refuse_source_package(path: str | os.PathLike, option: str) -> None:
    """A one-line UserError when an output folder given as `option` lies inside a source package."""
    package = source_package_of(path)
    if package is not None:
        raise UserError(f"{option} {path} is inside the source package {package.relative_to(PROJECT_ROOT)}/ "
                        "(git clean would delete what is written there): use a folder under output/")


LOCK_FILE = ".lock"


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold `folder`/.lock while a run writes there: a second run into the same folder is refused
    (two runs would mix their models, tables and results).

    flock is released by the kernel when the holder exits, even by kill -9, so a killed run never
    leaves the folder locked; a left-over .lock file is simply taken over by the next run.
    """
    ensure_writable_dir(folder)
    path = os.path.join(folder, LOCK_FILE)
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise UserError(f"another run ({owner}) is writing to '{folder}': wait for it to finish "
                            f"or choose another output folder") from None
        # The holder before us may have deleted the file between our open and our lock: then the
        # lock is on a file nobody else will see, so start again on the current one.
        try:
            current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()
    def release() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        handle.close()

    # A launched worker's one-line error leaves with os._exit (utils.errors.fail), past this
    # `finally`: it removes the lock file on its way out instead.
    on_fast_exit(release)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        forget_fast_exit(release)
        release()


@contextlib.contextmanager
def naming_the_file(path: str | os.PathLike) -> Iterator[None]:
    """OSErrors raised inside (ENOSPC from write() or flush() has no file name) name `path`."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            raise OSError(err.errno, err.strerror or str(err), os.fspath(path)) from None
        raise


def temp_prefix(stem: str) -> str:
    """Prefix of a temporary file or folder beside the outputs: hidden, and naming the process that
    owns it, so a later run can tell a killed run's leftovers from a live run's work in progress."""
    return f".{stem}.pid{os.getpid()}."


# Temporaries of this module (.<stem>.pid<N>.<random>.tmp<.ext>) and of the export
# (.export.pid<N>.<random>); older versions wrote the same names without the pid<N> part.
_TEMPORARY = re.compile(r"^\.(?:export[.-]|.*\.tmp(?:\.[^.]*)?$)")
_OWNER = re.compile(r"\.pid(\d+)\.")
# Without an owner pid (older versions), a temporary this old is taken as left by a killed run.
STALE_AFTER_SECONDS = 3600


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True    # exists, owned by someone else
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete temporaries left in `folder` by killed runs (their owner process is gone); returns their names.

    Temporaries of live runs, including concurrent ones writing to the same folder, are kept.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not _TEMPORARY.match(name):
            continue
        path = os.path.join(folder, name)
        owner = _OWNER.search(name)
        try:
            if owner:
                if _owner_alive(int(owner.group(1))):
                    continue
            elif time.time() - os.path.getmtime(path) < STALE_AFTER_SECONDS:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(name)
        except OSError:
            continue   # vanished meanwhile, or not ours to delete: leave it
    if removed:
        print(f"removed {len(removed)} temporary file(s) left by killed runs in {folder}")
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    ensure_writable_dir(target.parent)
    # Keep the real suffix last: some writers (paddle.save, savefig) look at it.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target.stem), suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates owner-only files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_path) and move the result onto `target` in one step."""
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()
