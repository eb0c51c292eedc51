"""Small synthetic data sets in the MVTec AD layout, generated offline and deterministically.

Why: the MVTec AD licence forbids shipping its images, yet the README demo, CI and the unit tests
need real-looking data on a machine without internet. This module draws such data itself:

    ROOT/CATEGORY/train/good/000.png ...
    ROOT/CATEGORY/test/good/000.png ...
    ROOT/CATEGORY/test/<defect>/000.png ...
    ROOT/CATEGORY/ground_truth/<defect>/000_mask.png   (uint8 0/255, one channel, image size)

Good test images have no mask, exactly as in MVTec. Two kinds of categories exist, like in MVTec:
"object" (a round part on a dark background, seen from the top like MVTec's bottle) and
"texture" (a woven fabric). Each good image carries small nuisance variation (shift, rotation,
brightness, noise) so the model must learn what "normal" looks like rather than memorise one image.

The module also builds small subsets of an existing (e.g. the real MVTec) category by symlinking,
and writes undecodable files for bad-input tests. It does not import Paddle, so it stays fast.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from datasets.preprocess import IMAGE_EXTENSIONS
from utils.errors import UserError
from utils.io import atomic_write, atomic_write_text

KINDS = ("object", "texture")
DEFECT_TYPES = ("scratch", "stain", "hole")
DEFAULT_CATEGORIES: dict[str, str] = {"synthetic_bottle": "object", "synthetic_fabric": "texture"}
# Defect area as a fraction of the image: MVTec's small defects are of this order, and the
# bounds keep every defect visible after the usual 256 -> 224 resize while staying "local".
DEFECT_AREA_RANGE = (0.005, 0.05)
MIN_IMAGE_SIZE = 32
# Marks folders this module created, so regeneration never deletes a folder of real data.
MARKER_NAME = ".patchcore_generated"

_MAX_PLACEMENT_TRIES = 200


# --------------------------------------------------------------------------------------------
# Random streams
# --------------------------------------------------------------------------------------------

def _rng(seed: int, category: str, *keys: int | str) -> np.random.Generator:
    """An independent stream per (seed, category, image): adding images never changes the others.

    zlib.crc32 rather than hash(): str hashes are salted per process and would break determinism.
    """
    entropy = [int(seed) & 0xFFFFFFFF, zlib.crc32(category.encode())]
    entropy += [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


# --------------------------------------------------------------------------------------------
# Good images
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Style:
    """What is constant within a category (the 'product'); images only vary around it."""

    kind: str
    size: int
    color: np.ndarray           # base RGB of the part / fabric, float 0..255
    radius: float               # object: part radius in pixels
    period: float               # texture: weave period in pixels
    angle: float                # texture: weave orientation (radians)
    grain: np.ndarray           # fixed fine texture of the product, HxW, zero mean, about +-1
    stain_color: np.ndarray
    scratch_color: np.ndarray


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def _make_style(kind: str, size: int, seed: int, category: str) -> _Style:
    rng = _rng(seed, category, "style")
    grain = _smooth_noise(rng, size, max(0.6, size / 200))
    if kind == "object":
        color = np.array([172.0, 128.0, 78.0]) + rng.uniform(-8, 8, 3)      # amber glass
        return _Style(kind, size, color, radius=size * rng.uniform(0.37, 0.40), period=0.0,
                      angle=0.0, grain=grain, stain_color=np.array([50.0, 95.0, 140.0]),
                      scratch_color=np.array([246.0, 244.0, 236.0]))
    color = np.array([196.0, 176.0, 136.0]) + rng.uniform(-8, 8, 3)          # undyed linen
    return _Style(kind, size, color, radius=0.0, period=size / rng.uniform(9.0, 11.0),
                  angle=rng.uniform(0, np.pi / 2), grain=grain,
                  stain_color=np.array([100.0, 40.0, 36.0]),
                  scratch_color=np.array([58.0, 46.0, 34.0]))


def _render_object(style: _Style, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A bottle seen from the top: bright rim, darker shoulder ring, lit bottom with a highlight."""
    s = style.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    cy, cx = s / 2 + rng.uniform(-0.015, 0.015, 2) * s          # ~2 px of placement jitter
    r = np.hypot(yy - cy, xx - cx) / style.radius             # 1.0 at the outer edge
    theta = np.arctan2(yy - cy, xx - cx)
    light = rng.uniform(0, 2 * np.pi)                         # direction of the lighting
    profile = (0.78
               + 0.30 * np.exp(-((r - 0.93) / 0.05) ** 2)      # rim
               - 0.22 * np.exp(-((r - 0.74) / 0.08) ** 2)      # shoulder
               + 0.18 * np.exp(-(r / 0.28) ** 2)               # bottom highlight
               + 0.04 * np.cos(theta - light) * r)
    profile = profile * (1 + 0.05 * style.grain)               # fine surface texture
    part = np.clip((1.0 - r) * style.radius + 0.5, 0.0, 1.0)   # anti-aliased edge coverage
    gain = rng.uniform(0.95, 1.05)
    fg = style.color[None, None, :] * profile[..., None] * gain
    bg_level = 22 + 6 * np.exp(-((np.hypot(yy - s / 2, xx - s / 2) / s) ** 2) * 4)
    bg = np.repeat(bg_level[..., None], 3, axis=2) * np.array([1.0, 0.97, 0.94])
    img = part[..., None] * fg + (1 - part[..., None]) * bg
    img += 2.5 * _smooth_noise(rng, s, 1.5)[..., None]          # low-frequency sensor noise
    img += rng.normal(0, 2.0, img.shape)                         # pixel noise
    # Defects go on the part, away from its edge, as in MVTec's object categories.
    allowed = r <= 0.85
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), allowed


def _render_texture(style: _Style, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A plain weave: alternating over/under thread segments with per-image shift and rotation."""
    s = style.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    a = style.angle + np.deg2rad(rng.uniform(-2, 2))
    shift = rng.uniform(0, style.period, 2)
    u = (xx * np.cos(a) + yy * np.sin(a) + shift[0]) / style.period
    v = (-xx * np.sin(a) + yy * np.cos(a) + shift[1]) / style.period
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    warp_on_top = ((iu + iv) % 2) == 0
    # Each visible thread is brightest along its axis and darker at the gaps between threads.
    across = np.where(warp_on_top, fu, fv)
    along = np.where(warp_on_top, fv, fu)
    thread = np.sin(np.pi * across) ** 0.6 * (0.85 + 0.15 * np.sin(np.pi * along))
    profile = 0.62 + 0.40 * thread + 0.06 * style.grain
    gain = rng.uniform(0.95, 1.05)
    img = style.color[None, None, :] * profile[..., None] * gain
    img += 3.0 * _smooth_noise(rng, s, 2.0)[..., None]
    img += rng.normal(0, 2.5, img.shape)
    margin = max(2, int(round(0.04 * s)))
    allowed = np.zeros((s, s), dtype=bool)
    allowed[margin:s - margin, margin:s - margin] = True
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), allowed


def _render_good(style: _Style, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return _render_object(style, rng) if style.kind == "object" else _render_texture(style, rng)


# --------------------------------------------------------------------------------------------
# Defects
# --------------------------------------------------------------------------------------------

def _blob(size: int, center: np.ndarray, radius: float, roughness: float, n_harmonics: int,
          rng: np.random.Generator) -> np.ndarray:
    """An irregular star-shaped region: a circle whose radius wobbles with a few harmonics."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - center[0], xx - center[1]
    theta = np.arctan2(dy, dx)
    wobble = np.ones_like(theta)
    for k in range(2, 2 + n_harmonics):
        wobble += roughness / k ** 0.7 * rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(dy, dx) <= radius * wobble


def _segment_distance(yy: np.ndarray, xx: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance of every pixel to a polyline."""
    best = np.full(yy.shape, np.inf)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-12), 0, 1)
        best = np.minimum(best, np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx)))
    return best


def _defect_shape(defect: str, size: int, center: np.ndarray, rng: np.random.Generator,
                  scale: float = 1.0) -> np.ndarray:
    """A defect mask; `scale` multiplies its lengths (its area by scale^2)."""
    if defect == "scratch":
        # A slightly curved thin line: a quadratic Bezier sampled into a polyline.
        length = size * scale * rng.uniform(0.20, 0.34)
        width = max(2.0, 0.03 * size * scale)
        a = rng.uniform(0, np.pi)
        direction = np.array([np.sin(a), np.cos(a)])
        normal = np.array([direction[1], -direction[0]])
        p0, p2 = center - direction * length / 2, center + direction * length / 2
        p1 = center + normal * length * rng.uniform(-0.15, 0.15)
        t = np.linspace(0, 1, 17)[:, None]
        points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        return _segment_distance(yy, xx, points) <= width / 2
    if defect == "stain":
        radius = size * scale * np.sqrt(rng.uniform(0.010, 0.030) / np.pi)
        return _blob(size, center, radius, roughness=0.22, n_harmonics=4, rng=rng)
    if defect == "hole":
        radius = size * scale * np.sqrt(rng.uniform(0.008, 0.025) / np.pi)
        return _blob(size, center, radius, roughness=0.30, n_harmonics=7, rng=rng)
    raise ValueError(f"unknown defect type {defect!r}; choose from {', '.join(DEFECT_TYPES)}")


def _paint(img: np.ndarray, mask: np.ndarray, defect: str, style: _Style,
           rng: np.random.Generator) -> np.ndarray:
    """Colour the masked pixels; every masked pixel changes clearly, no pixel outside changes."""
    out = img.astype(np.float64)
    n = int(mask.sum())
    if defect == "scratch":
        color = np.tile(style.scratch_color, (n, 1)) + rng.normal(0, 4, (n, 1))
    elif defect == "stain":
        # Semi-transparent contamination: the product shows through a little.
        opacity = rng.uniform(0.75, 0.9)
        color = opacity * style.stain_color + (1 - opacity) * out[mask] + rng.normal(0, 4, (n, 3))
    else:
        # A dark cavity, slightly lighter towards its border.
        dist = ndimage.distance_transform_edt(mask)[mask]
        depth = np.clip(dist / max(dist.max(), 1.0), 0, 1)
        color = (np.array([34.0, 28.0, 24.0]) - 20.0 * depth[:, None]) + rng.normal(0, 3, (n, 3))
    out[mask] = color
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _add_defect(img: np.ndarray, allowed: np.ndarray, defect: str, style: _Style,
                rng: np.random.Generator, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Place a defect fully inside `allowed` with an area inside DEFECT_AREA_RANGE (times scale^2,
    and at least a few pixels: a scratch keeps its 2-pixel width)."""
    size = img.shape[0]
    candidates = np.argwhere(allowed)
    lo, hi = (bound * scale**2 for bound in DEFECT_AREA_RANGE)
    hi = max(hi, 16.0 / size**2)
    for _ in range(_MAX_PLACEMENT_TRIES):
        center = candidates[rng.integers(len(candidates))].astype(np.float64)
        mask = _defect_shape(defect, size, center, rng, scale)
        fraction = mask.mean()
        if lo <= fraction <= hi and not np.any(mask & ~allowed):
            return _paint(img, mask, defect, style, rng), mask
    raise ValueError(f"could not place a '{defect}' defect in a {size}x{size} image; "
                     f"use image_size >= {MIN_IMAGE_SIZE}")


def render_sample(kind: str = "object", defect: str | None = None, *, image_size: int = 128,
                  seed: int = 0, category: str = "synthetic_bottle", index: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One test sample as (good HxWx3, defective HxWx3, mask HxW bool), all uint8 except the mask.

    `good` is the very same image before the defect was drawn, so callers (tests, docs) can check
    that a defect changes exactly the masked pixels. With defect=None both images are equal and
    the mask is empty. generate_category() writes exactly these pixels for the same arguments.
    """
    _check_kind_and_size(kind, image_size)
    style = _make_style(kind, image_size, seed, category)
    split, cls = ("test", defect) if defect else ("test", "good")
    rng = _rng(seed, category, split, cls, index)
    good, allowed = _render_good(style, rng)
    if defect is None:
        return good, good.copy(), np.zeros(good.shape[:2], dtype=bool)
    bad, mask = _add_defect(good, allowed, defect, style, rng)
    return good, bad, mask


def _check_kind_and_size(kind: str, image_size: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, not {image_size}")


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def _write_png(path: Path, array: np.ndarray) -> None:
    """Write atomically: a crash never leaves a half-written PNG under its final name."""
    # Pillow's PNG writer adds no timestamp, so equal arrays give byte-identical files.
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _write_marker(folder: Path, info: dict) -> None:
    atomic_write_text(folder / MARKER_NAME, json.dumps(info, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A fresh hidden sibling folder to build `target` in; swapped in whole when the block succeeds,
    removed when it fails, so readers never see a half-written or mixed category."""
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        _publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _publish(staging: Path, target: Path) -> None:
    """Swap the finished staging folder in, so readers never see a mix of old and new files."""
    if target.exists() or target.is_symlink():
        _check_target(target)       # again: the folder may have appeared while we were writing
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old)
    else:
        os.replace(staging, target)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _check_target(target: Path) -> None:
    """Fail before doing any work if the target is a folder we must not replace."""
    if target.exists() and not (target / MARKER_NAME).is_file() and not _is_empty_dir(target):
        raise UserError(f"refusing to overwrite {target}: it exists and was not generated "
                             f"by this tool (no {MARKER_NAME}); choose another output folder")


def generate_category(root: str | os.PathLike, category: str = "synthetic_bottle", *,
                      n_train: int = 20, n_test_good: int = 5, n_test_per_defect: int = 5,
                      defects: Sequence[str] = DEFECT_TYPES, image_size: int = 128, seed: int = 0,
                      kind: str = "object", defect_scale: float = 1.0,
                      on_image: Callable[[Path], None] | None = None) -> Path:
    """Write one synthetic category in the MVTec AD layout under root and return its folder.

    `defect_scale` < 1 draws smaller defects (lengths times the scale): at 0.2 on a 1024 px image
    a stain is about 20-40 px across, the small defects that need a higher input size.

    Deterministic: the same arguments give byte-identical PNGs. Every image has its own random
    stream, so e.g. n_train does not change the test images. An existing folder written by this
    function is replaced as a whole; any other existing non-empty folder is left alone and a
    UserError is raised. `on_image` is called after each written image (progress bars).
    """
    _check_kind_and_size(kind, image_size)
    for name, value in (("n_train", n_train), ("n_test_good", n_test_good),
                        ("n_test_per_defect", n_test_per_defect)):
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0, not {value}")
    if n_train < 1:
        raise ValueError("n_train must be at least 1: a model needs good training images")
    defects = tuple(defects)
    for defect in defects:
        if defect not in DEFECT_TYPES:
            raise ValueError(f"unknown defect type {defect!r}; choose from {', '.join(DEFECT_TYPES)}")
    if len(set(defects)) != len(defects):
        raise ValueError(f"defects must not repeat: {defects}")
    if not category or os.sep in category or category.startswith("."):
        raise ValueError(f"invalid category name {category!r}")

    root = Path(root)
    target = root / category
    root.mkdir(parents=True, exist_ok=True)
    _check_target(target)
    style = _make_style(kind, image_size, seed, category)
    with _staged(target) as staging:
        def emit(path: Path, array: np.ndarray) -> None:
            _write_png(path, array)
            if on_image is not None:
                on_image(target / path.relative_to(staging))

        for i in range(n_train):
            img, _ = _render_good(style, _rng(seed, category, "train", "good", i))
            emit(staging / "train" / "good" / f"{i:03d}.png", img)
        (staging / "test" / "good").mkdir(parents=True, exist_ok=True)
        for i in range(n_test_good):
            img, _ = _render_good(style, _rng(seed, category, "test", "good", i))
            emit(staging / "test" / "good" / f"{i:03d}.png", img)
        for defect in defects:
            for i in range(n_test_per_defect):
                rng = _rng(seed, category, "test", defect, i)
                good, allowed = _render_good(style, rng)
                bad, mask = _add_defect(good, allowed, defect, style, rng, defect_scale)
                emit(staging / "test" / defect / f"{i:03d}.png", bad)
                _write_png(staging / "ground_truth" / defect / f"{i:03d}_mask.png",
                           mask.astype(np.uint8) * 255)
        _write_marker(staging, {"generator": "datasets.synthetic.generate_category",
                                "category": category, "kind": kind, "seed": int(seed),
                                "image_size": int(image_size), "n_train": int(n_train),
                                "n_test_good": int(n_test_good),
                                "n_test_per_defect": int(n_test_per_defect),
                                "defects": list(defects),
                                **({"defect_scale": float(defect_scale)} if defect_scale != 1.0 else {})})
    return target


# --------------------------------------------------------------------------------------------
# Helpers for tests and the TIPC lite-data step
# --------------------------------------------------------------------------------------------

def write_corrupt_image(path: str | os.PathLike, *, truncated: bool = False) -> Path:
    """Write a file with an image name that no decoder accepts, for bad-input tests.

    Default: bytes that are not any image format (PIL.Image.open fails). truncated=True: a real
    PNG cut in the middle of its pixel data, so the header opens but decoding fails — the harder
    case of a partially copied file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if truncated:
        buffer = io.BytesIO()
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(buffer, format="PNG")
        data = buffer.getvalue()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"this is not an image: corrupt test file written by datasets.synthetic\n")
    return path


def write_crafted_tiff(path: str | os.PathLike) -> Path:
    """Write an 8x8 TIFF whose StripOffsets tag is stored as a DOUBLE: the header opens, and Pillow's
    decoder then raises TypeError (not an OSError), the case of a hostile or broken camera file."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    first_ifd = struct.unpack_from("<I", data, 4)[0]            # Pillow writes little-endian ("II")
    for entry in range(struct.unpack_from("<H", data, first_ifd)[0]):
        offset = first_ifd + 2 + 12 * entry
        tag, _, count, _ = struct.unpack_from("<HHII", data, offset)
        if tag == 273:    # StripOffsets: type 12 (DOUBLE), its 8-byte value appended to the file
            data += struct.pack("<d", 8.0)
            struct.pack_into("<HHII", data, offset, tag, 12, count, len(data) - 8)
    path = Path(path)
    path.write_bytes(bytes(data))
    return path


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def _choose(files: list[Path], n: int, rng: np.random.Generator | None) -> list[Path]:
    if n >= len(files):
        return files
    if rng is None:
        return files[:n]
    return [files[i] for i in sorted(rng.choice(len(files), size=n, replace=False))]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst)
    except (OSError, NotImplementedError):
        # E.g. Windows without developer mode, or a file system without symlinks.
        shutil.copy2(src, dst)


def subset_category(src_category_dir: str | os.PathLike, dst_root: str | os.PathLike,
                    n_train: int, n_test_per_class: int, seed: int | None = 0) -> Path:
    """A small MVTec-layout copy of an existing category at dst_root/<category name>.

    Takes n_train training images and n_test_per_class images of every test class (good and
    each defect; fewer if a folder has fewer), plus the ground-truth masks of the chosen defect
    images. File names are kept so images and masks still pair up. The files are symlinks to the
    source (copies where symlinks fail); the source is only read. seed=None takes the first files
    in name order, an int takes a seeded random choice. Returns the new category folder.
    """
    src = Path(src_category_dir)
    if not (src / "train" / "good").is_dir() or not (src / "test").is_dir():
        raise UserError(f"not a category in MVTec layout (train/good and test): {src}")
    if n_train < 1 or n_test_per_class < 1:
        raise ValueError("n_train and n_test_per_class must be at least 1")
    dst_root = Path(dst_root)
    target = dst_root / src.resolve().name
    if target.resolve() == src.resolve() or src.resolve() in target.resolve().parents:
        raise UserError(f"the subset {target} must not overwrite or lie inside its source {src}")
    dst_root.mkdir(parents=True, exist_ok=True)
    _check_target(target)
    rng = None if seed is None else np.random.default_rng(seed)
    with _staged(target) as staging:
        counts: dict[str, int] = {}
        for path in _choose(_images(src / "train" / "good"), n_train, rng):
            _link_or_copy(path, staging / "train" / "good" / path.name)
        counts["train/good"] = min(n_train, len(_images(src / "train" / "good")))
        for cls_dir in sorted(d for d in (src / "test").iterdir() if d.is_dir()):
            chosen = _choose(_images(cls_dir), n_test_per_class, rng)
            (staging / "test" / cls_dir.name).mkdir(parents=True, exist_ok=True)
            for path in chosen:
                _link_or_copy(path, staging / "test" / cls_dir.name / path.name)
                if cls_dir.name != "good":
                    for mask in _matching_masks(src / "ground_truth" / cls_dir.name, path.stem):
                        _link_or_copy(mask, staging / "ground_truth" / cls_dir.name / mask.name)
            counts[f"test/{cls_dir.name}"] = len(chosen)
        for extra in ("license.txt", "readme.txt"):       # keep the licence next to the images
            if (src / extra).is_file():
                _link_or_copy(src / extra, staging / extra)
        _write_marker(staging, {"generator": "datasets.synthetic.subset_category",
                                "source": str(src.resolve()), "seed": seed, "counts": counts})
    return target


def _matching_masks(folder: Path, stem: str) -> Iterable[Path]:
    if not folder.is_dir():
        return []
    return [p for p in _images(folder) if p.stem == f"{stem}_mask"]


# --------------------------------------------------------------------------------------------
# Elongated parts (aspect-ratio experiments: --resize auto against a square geometry)
# --------------------------------------------------------------------------------------------

def _render_rod(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A horizontal metal rod filling the image's long side: shaded across, grain along its length."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    top, bottom = height * (0.22 + rng.uniform(-0.01, 0.01)), height * (0.78 + rng.uniform(-0.01, 0.01))
    across = np.clip((yy - top) / (bottom - top), 0, 1)
    inside = (yy >= top) & (yy <= bottom) & (xx >= width * 0.03) & (xx <= width * 0.97)
    shade = 120 + 90 * np.sin(np.pi * across) ** 0.6 + 6 * np.sin(xx / width * 40 + rng.uniform(0, 6))
    grain = ndimage.gaussian_filter1d(rng.standard_normal((height, width)), 6, axis=1) * 8
    img = np.where(inside, shade + grain, 30.0)
    img = np.repeat(img[..., None], 3, axis=2) * np.array([1.0, 0.98, 0.95]) + rng.normal(0, 2.0, (height, width, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _thin_scratch(height: int, width: int, rng: np.random.Generator, across: bool = False) -> np.ndarray:
    """A thin (1-2 px) scratch along the rod's long side, 15-30 % of its length; `across`: a crack
    across the rod instead (thin along the long side, which a square resize compresses most)."""
    if across:
        return _thin_scratch(width, height, rng).T
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    row = height * rng.uniform(0.35, 0.65)
    length = width * rng.uniform(0.15, 0.30)
    start = rng.uniform(width * 0.08, width * 0.92 - length)
    slope = rng.uniform(-0.02, 0.02)
    line = row + slope * (xx - start)
    return (np.abs(yy - line) <= rng.uniform(0.5, 1.0)) & (xx >= start) & (xx <= start + length)


def specular_highlight(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A harmless one-off reflection of a lamp: a hard-edged, near-saturated ellipse (brightness to
    add, H x W) of random size, elongation and orientation, somewhere inside the image."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    short = min(height, width)
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.2, 0.8) * width
    a, b = short * rng.uniform(0.12, 0.20), short * rng.uniform(0.04, 0.07)
    angle = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    inside = (u / a) ** 2 + (v / b) ** 2
    return 255.0 * np.clip(1.5 - inside, 0, 1)          # flat (saturating) core, a 1/3-radius soft edge


def _good_outliers(n: int, rate: float, rng: np.random.Generator) -> set[int]:
    """Which of n good images carry a one-off benign variation: each with probability `rate`
    (independently, so the count is binomial, e.g. 0-4 of 300 at 1/150)."""
    return set(np.flatnonzero(rng.random(n) < rate).tolist())


def generate_elongated_category(root: str | os.PathLike, category: str = "synthetic_rod", *,
                                n_train: int = 20, n_test_good: int = 5, n_test_defect: int = 10,
                                height: int = 160, aspect: float = 2.5, contrast: float = 70.0,
                                across: bool = False, outlier_rate: float = 0.0, seed: int = 0) -> Path:
    """An MVTec-layout category of width = aspect x height rods with thin scratches along them,
    `contrast` grey levels brighter than the rod (`across`: thin cracks across the rod instead).
    `outlier_rate`: each good image (train and test) carries a specular highlight with this
    probability (rare good outliers; the marker file lists which)."""
    width = int(round(height * aspect))
    target = Path(root) / category
    Path(root).mkdir(parents=True, exist_ok=True)
    _check_target(target)
    outliers: dict[str, list[str]] = {}
    with _staged(target) as staging:
        for split, folder, n in (("train", "train", n_train), ("good", "test", n_test_good)):
            chosen = _good_outliers(n, outlier_rate, _rng(seed, category, split, "outliers"))
            outliers[f"{folder}/good"] = [f"{i:03d}.png" for i in sorted(chosen)]
            for i in range(n):
                rng = _rng(seed, category, split, i)
                image = _render_rod(height, width, rng)
                if i in chosen:
                    image = np.clip(image + specular_highlight(height, width, rng)[..., None], 0, 255).astype(np.uint8)
                _write_png(staging / folder / "good" / f"{i:03d}.png", image)
        for i in range(n_test_defect):
            rng = _rng(seed, category, "scratch", i)
            img, mask = _render_rod(height, width, rng), _thin_scratch(height, width, rng, across)
            img[mask] = np.clip(img[mask].astype(np.float64) + contrast, 0, 255).astype(np.uint8)
            _write_png(staging / "test" / "scratch" / f"{i:03d}.png", img)
            _write_png(staging / "ground_truth" / "scratch" / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
        _write_marker(staging, {"generator": "datasets.synthetic.generate_elongated_category", "category": category,
                                "seed": int(seed), "height": int(height), "aspect": float(aspect),
                                "contrast": float(contrast), "across": bool(across),
                                "outlier_rate": float(outlier_rate), "outliers": outliers})
    return target
