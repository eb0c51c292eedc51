"""A category's output files written as one unit: all the new ones, or the previous run's.

The model file, the per-image test scores and the figures folder of a category are written under
temporary names first and moved into place together at the end, so a run that fails part way
(a full disk, Ctrl-C, a bad image) never leaves a new scores table beside an old model.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Callable

from utils.errors import UserError
from utils.io import ensure_writable_dir, remove_stale_temporaries, temp_prefix


def _unwritable(target: Path, err: OSError) -> UserError:
    return UserError(f"could not write {target}: {err.strerror or err}")


class CategoryOutputs:
    """Files and folders staged beside their targets; publish() moves them all into place."""

    def __init__(self, save_path: str, category: str):
        self.save_path, self.category = Path(save_path), category
        self._staged: list[tuple[Path, Path]] = []      # (temporary, target)

    def write(self, name: str, write: Callable[[Path], None]) -> Path:
        """Stage <save_path>/<name>: write(temporary path) writes its content."""
        target = self.save_path / name
        ensure_writable_dir(target.parent)
        # Keep the real suffix last: some writers (paddle.save, savefig) look at it.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target.stem),
                                        suffix=f".tmp{target.suffix}")
        os.close(fd)
        self._staged.append((Path(tmp_name), target))
        try:
            write(Path(tmp_name))
        except OSError as err:
            raise _unwritable(target, err) from None
        return target

    def figures_folder(self) -> Path:
        """A staged, empty <save_path>/pics/<category>: publishing replaces the old folder whole, so
        no figure of an earlier run stays beside the new ones."""
        target = self.save_path / "pics" / self.category
        ensure_writable_dir(target.parent)
        remove_stale_temporaries(target.parent)
        folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=temp_prefix(self.category), suffix=".tmp"))
        self._staged.append((folder, target))
        return folder

    def staged_file(self, folder: Path, name: str, write: Callable[[Path], None]) -> None:
        """Write one file into a staged folder, the error naming the file it was for."""
        try:
            write(folder / name)
        except OSError as err:
            raise _unwritable(self._target_of(folder) / name, err) from None

    def _target_of(self, staged: Path) -> Path:
        return next(target for tmp, target in self._staged if tmp == staged)

    def publish(self) -> None:
        """Move every staged file and folder onto its target (renames within a folder: no new space)."""
        for tmp, target in self._staged:
            os.chmod(tmp, 0o777 & ~_umask() if tmp.is_dir() else 0o666 & ~_umask())
            if tmp.is_dir():
                _replace_folder(tmp, target)
            else:
                os.replace(tmp, target)
        self._staged = []

    def discard(self) -> None:
        for tmp, _ in self._staged:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        self._staged = []

    def __enter__(self) -> "CategoryOutputs":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Whatever was not published (an error, or a worker that writes nothing) is removed.
        self.discard()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_folder(new: Path, target: Path) -> None:
    """Put folder `new` at `target`; an existing `target` is moved aside first, then deleted."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=temp_prefix(target.name), suffix=".tmp"))
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
