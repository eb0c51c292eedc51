"""Reading pickles the project wrote (paddle.save of plain dicts) without letting them run code.

pickle calls whatever callable a file names, so a plain `paddle.load` of a downloaded model file
can execute arbitrary commands. What paddle.save of our dicts actually emits (checked with
pickletools on files written by Paddle 3.x and NumPy 1.x / 2.x) is: dicts, lists, tuples, str,
bytes, int, float, bool, None, and four NumPy globals -- ndarray, dtype, and from
numpy(._)core.multiarray `_reconstruct` (arrays) and `scalar` (NumPy scalars such as a float32
threshold); paddle.save(..., protocol=2 or 3) adds `_codecs.encode`, spelling bytes as latin-1
text. Only those globals are resolved; every other one (os.system, builtins.eval, a class
with a __reduce__, ...) is refused before anything is called, and so are persistent ids.
Containers nested deeper than MAX_NESTING, or holding themselves, are refused too: the unpickler
builds them without recursion, but repr, copy or paddle.save of them would end in a RecursionError.

Arrays can only be as large as the bytes the file holds: an array's data comes from the file
(ndarray.__setstate__ checks that its bytes match its shape), but a call of `numpy.ndarray(shape,
dtype)` or `_reconstruct(ndarray, shape, dtype)` allocates whatever shape it is given, and a 2 KB
file could declare gigabytes. Such declared shapes are checked against the file's size before
anything is allocated (paddle.save itself always declares shape (0,) and fills the array after).
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Any

import numpy as np

from utils.errors import UserError, first_line

# paddle.save (protocol 4) pickles at most this much per file for the models we write; the limit
# only bounds how much a hostile file can make us read before the unpickler even starts.
_MAX_BYTES = 8 * 2**30
# Our model dicts nest 4 deep (file -> config -> data -> mean); far below Python's recursion limit.
MAX_NESTING = 32


class RefusedContent(pickle.UnpicklingError):
    """The pickle names something a project file never holds (as opposed to being corrupt)."""


def _plain_dtype(*args: Any) -> np.dtype:
    """np.dtype, except object dtypes: their items are arbitrary pickled objects, never ours."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise RefusedContent("object arrays are not allowed")
    return dtype


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """_codecs.encode as protocol 2/3 pickles use it (array bytes spelt as latin-1 text), nothing else."""
    if encoding != "latin1" or not isinstance(text, str):
        raise RefusedContent("only latin-1 byte strings are allowed")
    return text.encode("latin1")


# Taken from NumPy's own reduction rather than named, so it is right for any NumPy version.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]


class _DeclaredArrays:
    """What the pickle gets for numpy.ndarray and _reconstruct: the same arrays, each declared
    shape checked against the bytes still unclaimed in the file before it is allocated."""

    def __init__(self, budget: int):
        self.budget = budget

    def claim(self, shape: Any, dtype: Any) -> None:
        shape = (shape,) if isinstance(shape, int) else shape
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise RefusedContent(f"an array shape is not a tuple of sizes: {shape!r:.60}")
        size = _plain_dtype(dtype).itemsize
        for n in shape:
            size *= n
        if size > self.budget:
            raise RefusedContent(f"an array declares shape {shape} ({size} bytes), more than the "
                                 f"{self.budget} bytes the file still holds")
        self.budget -= size

    def ndarray(self, shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> np.ndarray:
        if args or kwargs:   # buffer, offset, strides: a zero stride repeats a few bytes without end
            raise RefusedContent("an array is built from a buffer or strides, which a project file never does")
        self.claim(shape, dtype)
        return np.ndarray(shape, dtype)

    def reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype != self.ndarray:   # the bound method find_class gave for numpy.ndarray
            raise RefusedContent("an array of a type other than numpy.ndarray, which a project file never holds")
        self.claim(shape, dtype)
        return _RECONSTRUCT(np.ndarray, shape, dtype)


def _allowed_globals(arrays: _DeclaredArrays) -> dict[tuple[str, str], Any]:
    scalar = np.float32(0).__reduce__()[0]   # a scalar's value is bytes in the file: bounded by it
    allowed = {("numpy", "ndarray"): arrays.ndarray, ("numpy", "dtype"): _plain_dtype,
               ("_codecs", "encode"): _latin1_bytes}
    # Files written under NumPy 1.x name numpy.core, under 2.x numpy._core; both still load.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = arrays.reconstruct
        allowed[(module, "scalar")] = scalar
    return allowed


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self.allowed = _allowed_globals(_DeclaredArrays(len(data)))

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise RefusedContent(f"it names {module}.{name}, which a project file never holds") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedContent("it uses persistent ids, which a project file never holds")


def _children(node: Any) -> list[Any]:
    """The containers directly inside `node` (dict keys are str/int/tuple of those in our files)."""
    items = [*node.keys(), *node.values()] if isinstance(node, dict) else list(node)
    return [item for item in items if isinstance(item, (dict, list, tuple))]


def check_nesting(root: Any, limit: int = MAX_NESTING) -> None:
    """RefusedContent if containers nest deeper than `limit` or one contains itself.

    Iterative, and each container is walked once however often it is referenced, so a hostile
    file can make this neither recurse nor take exponential time.
    """
    if not isinstance(root, (dict, list, tuple)):
        return
    heights: dict[int, int] = {}            # id -> nesting height of a container fully walked
    path = [(root, iter(_children(root)))]  # the containers from root to the one being walked
    on_path = {id(root)}
    while path:
        node, pending = path[-1]
        child = next((c for c in pending if id(c) not in heights), None)
        if child is not None:
            if id(child) in on_path:
                raise RefusedContent("a container in it contains itself, which a project file never holds")
            if len(path) >= limit:
                raise RefusedContent(f"its containers nest more than {limit} deep, which a project file never does")
            path.append((child, iter(_children(child))))
            on_path.add(id(child))
            continue
        height = 1 + max((heights[id(c)] for c in _children(node)), default=0)
        if len(path) - 1 + height > limit:
            raise RefusedContent(f"its containers nest more than {limit} deep, which a project file never does")
        heights[id(node)] = height
        on_path.discard(id(node))
        path.pop()


def loads_plain(data: bytes) -> Any:
    """Unpickle `data`, allowing only plain containers, scalars and NumPy arrays (see module doc)."""
    content = _PlainUnpickler(data).load()
    check_nesting(content)
    return content


def load_plain_pickle(path: str | os.PathLike, what: str = "file") -> Any:
    """The object in the pickle at `path`; one-line UserError naming `what` and the path otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as err:
        raise UserError(f"cannot read {what} '{path}': {err.strerror or err}") from None
    if len(data) > _MAX_BYTES:
        raise UserError(f"{what} '{path}' is larger than {_MAX_BYTES // 2**30} GiB")
    if not data:
        raise UserError(f"{what} '{path}' is empty")
    try:
        return loads_plain(data)
    except RefusedContent as err:
        raise UserError(f"refusing {what} '{path}': {err}") from None
    except Exception as err:  # a truncated or corrupt pickle raises many types (EOFError, ValueError, ...)
        raise UserError(f"cannot read {what} '{path}': corrupt or truncated ({first_line(err)})") from None
