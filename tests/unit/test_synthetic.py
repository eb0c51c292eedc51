"""The synthetic MVTec-layout generator: layout, determinism, learnable defects, subsets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]

from datasets.synthetic import (DEFECT_AREA_RANGE, MARKER_NAME, generate_category,  # noqa: E402
                                render_sample, subset_category, write_corrupt_image)
from helpers import run_in_process  # noqa: E402
from utils.errors import UserError  # noqa: E402

SIZE = 64               # small images keep the whole file well under a few seconds
DEFECTS = ("scratch", "stain", "hole")
KW = dict(n_train=6, n_test_good=3, n_test_per_defect=3, defects=DEFECTS, image_size=SIZE)


def _shared() -> Path:
    return Path(os.environ.get("PATCHCORE_SHARED", ROOT.parent / "shared"))


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def _files(folder: Path) -> list[str]:
    """Every file below folder as a relative posix path, hidden bookkeeping files excluded."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC via ranks (ties get the average rank)."""
    from scipy.stats import rankdata
    ranks = rankdata(scores)
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module", params=["object", "texture"])
def category(request, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(f"syn_{request.param}")
    return generate_category(root, f"demo_{request.param}", kind=request.param, seed=0, **KW)


def test_layout_is_mvtec(category: Path) -> None:
    expected = [f"train/good/{i:03d}.png" for i in range(6)]
    expected += [f"test/good/{i:03d}.png" for i in range(3)]
    for d in DEFECTS:
        expected += [f"test/{d}/{i:03d}.png" for i in range(3)]
        expected += [f"ground_truth/{d}/{i:03d}_mask.png" for i in range(3)]
    assert _files(category) == sorted(expected)
    assert not (category / "ground_truth" / "good").exists()     # good images have no masks
    assert sorted(p.name for p in category.iterdir() if not p.name.startswith(".")) == \
        ["ground_truth", "test", "train"]
    # No staging or temp folders are left next to the category.
    assert [p.name for p in category.parent.iterdir()] == [category.name]

    for path in category.glob("t*/*/*.png"):
        with Image.open(path) as img:
            assert img.mode == "RGB" and img.size == (SIZE, SIZE), path
    for d in DEFECTS:
        for i in range(3):
            mask = _load(category / "ground_truth" / d / f"{i:03d}_mask.png")
            assert mask.dtype == np.uint8 and mask.shape == (SIZE, SIZE)
            assert set(np.unique(mask)) == {0, 255}


def test_defects_are_local_and_learnable(category: Path) -> None:
    lo, hi = DEFECT_AREA_RANGE
    train = np.stack([_load(p).astype(np.float64) for p in sorted(category.glob("train/good/*.png"))])
    mean = train.mean(axis=0)
    scores, labels = [], []
    for path in sorted(category.glob("test/*/*.png")):
        image = _load(path).astype(np.float64)
        # Light smoothing so that single noisy pixels do not decide the image score.
        scores.append(ndimage.gaussian_filter(np.abs(image - mean).mean(axis=-1), 1.5).max())
        labels.append(int(path.parent.name != "good"))
        if path.parent.name == "good":
            continue
        mask = _load(category / "ground_truth" / path.parent.name / f"{path.stem}_mask.png") > 127
        assert lo <= mask.mean() <= hi, (path, mask.mean())
        diff = np.abs(image - mean).mean(axis=-1)
        assert diff[mask].mean() > 2 * diff[~mask].mean() + 20, path
    # Even a crude detector (max distance to the mean good image) separates good from defective.
    assert _auroc(np.array(scores), np.array(labels)) >= 0.95


@pytest.mark.parametrize("kind", ["object", "texture"])
@pytest.mark.parametrize("defect", DEFECTS)
def test_defect_changes_exactly_the_masked_pixels(kind: str, defect: str) -> None:
    good, bad, mask = render_sample(kind, defect, image_size=SIZE, seed=3, index=1)
    diff = np.abs(bad.astype(int) - good.astype(int)).sum(axis=-1)
    assert mask.any()
    assert not diff[~mask].any()                      # nothing outside the mask changed
    assert (diff[mask] > 30).mean() > 0.95            # virtually every masked pixel changed clearly
    assert diff[mask].mean() / 3 > 40


def test_render_sample_matches_written_files(tmp_path: Path) -> None:
    folder = generate_category(tmp_path, "c", kind="object", seed=5, **KW)
    _, bad, mask = render_sample("object", "stain", image_size=SIZE, seed=5, category="c", index=2)
    assert np.array_equal(_load(folder / "test/stain/002.png"), bad)
    assert np.array_equal(_load(folder / "ground_truth/stain/002_mask.png") > 127, mask)


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    kw = dict(KW, n_train=3, n_test_per_defect=1)
    a = generate_category(tmp_path / "a", "c", kind="texture", seed=1, **kw)
    b = generate_category(tmp_path / "b", "c", kind="texture", seed=1, **kw)
    c = generate_category(tmp_path / "c", "c", kind="texture", seed=2, **kw)
    names = _files(a)
    assert names == _files(b) == _files(c)
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert all((a / n).read_bytes() != (c / n).read_bytes() for n in names if n.endswith("0.png"))
    # Good images of one category are not copies of each other (nuisance variation).
    train = [_load(p).astype(int) for p in sorted(a.glob("train/good/*.png"))]
    assert np.abs(train[0] - train[1]).mean() > 1.0


def test_regenerate_replaces_whole_category(tmp_path: Path) -> None:
    big = generate_category(tmp_path, "c", kind="object", seed=0, **KW)
    first = (big / "train/good/000.png").read_bytes()
    small = generate_category(tmp_path, "c", kind="object", seed=0,
                              **dict(KW, n_train=2, defects=("hole",)))
    assert small == big
    assert _files(small) == sorted(["train/good/000.png", "train/good/001.png",
                                    "test/good/000.png", "test/good/001.png", "test/good/002.png",
                                    "test/hole/000.png", "test/hole/001.png", "test/hole/002.png",
                                    "ground_truth/hole/000_mask.png", "ground_truth/hole/001_mask.png",
                                    "ground_truth/hole/002_mask.png"])
    assert (small / "train/good/000.png").read_bytes() == first     # per-image random streams


def test_refuses_to_overwrite_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "c" / "train" / "good"
    foreign.mkdir(parents=True)
    (foreign / "keep.png").write_bytes(b"user data")
    with pytest.raises(UserError, match="refusing to overwrite"):
        generate_category(tmp_path, "c", **KW)
    assert (foreign / "keep.png").read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        generate_category(tmp_path, "c", kind="liquid")
    with pytest.raises(ValueError, match="defect"):
        generate_category(tmp_path, "c", defects=("dent",))
    with pytest.raises(ValueError, match="image_size"):
        generate_category(tmp_path, "c", image_size=8)


def test_subset_of_generated_category(tmp_path: Path) -> None:
    src = generate_category(tmp_path / "full", "c", kind="object", seed=0, **KW)
    before = {n: (src / n).read_bytes() for n in _files(src)}
    sub = subset_category(src, tmp_path / "lite", n_train=2, n_test_per_class=2, seed=0)
    assert sub == tmp_path / "lite" / "c"
    files = _files(sub)
    assert len([f for f in files if f.startswith("train/good/")]) == 2
    for cls in ("good",) + DEFECTS:
        images = [f for f in files if f.startswith(f"test/{cls}/")]
        assert len(images) == 2
        for f in images:
            assert (sub / f).read_bytes() == (src / f).read_bytes()
            mask = f"ground_truth/{cls}/{Path(f).stem}_mask.png"
            assert (mask in files) == (cls != "good")
    assert not (sub / "ground_truth" / "good").exists()
    assert len([f for f in files if f.startswith("ground_truth/")]) == 2 * len(DEFECTS)
    assert (sub / MARKER_NAME).is_file()
    # Same seed -> same choice; seed=None -> the first files by name; the source is untouched.
    again = subset_category(src, tmp_path / "lite2", n_train=2, n_test_per_class=2, seed=0)
    assert _files(again) == files
    first = subset_category(src, tmp_path / "lite3", n_train=2, n_test_per_class=5, seed=None)
    assert [f for f in _files(first) if f.startswith("train/")] == \
        ["train/good/000.png", "train/good/001.png"]
    assert len([f for f in _files(first) if f.startswith("test/hole/")]) == 3   # all there are
    assert {n: (src / n).read_bytes() for n in _files(src)} == before


def test_subset_rejects_non_category(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="MVTec layout"):
        subset_category(tmp_path, tmp_path / "out", n_train=1, n_test_per_class=1)


def test_subset_of_real_mvtec_bottle(tmp_path: Path) -> None:
    bottle = _shared() / "data" / "mvtec" / "bottle"
    if not (bottle / "train" / "good").is_dir():
        pytest.skip(f"MVTec bottle not available at {bottle}")
    sub = subset_category(bottle, tmp_path, n_train=3, n_test_per_class=1, seed=0)
    classes = sorted(p.name for p in (sub / "test").iterdir())
    assert "good" in classes and len(classes) >= 2
    assert len(list((sub / "train" / "good").iterdir())) == 3
    for cls in classes:
        (image,) = list((sub / "test" / cls).iterdir())
        masks = list((sub / "ground_truth" / cls).glob("*")) if cls != "good" else []
        if cls != "good":
            assert [m.name for m in masks] == [f"{image.stem}_mask.png"]
            with Image.open(image) as img, Image.open(masks[0]) as m:
                assert img.size == m.size
    assert not (sub / "ground_truth" / "good").exists()


@pytest.mark.parametrize("truncated", [False, True])
def test_write_corrupt_image(tmp_path: Path, truncated: bool) -> None:
    path = write_corrupt_image(tmp_path / "sub" / "broken.png", truncated=truncated)
    assert path.name == "broken.png" and path.stat().st_size > 0
    with pytest.raises((UnidentifiedImageError, OSError, SyntaxError, ValueError)):
        with Image.open(path) as img:
            img.load()


def test_cli_writes_demo_and_reports_errors(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run = run_in_process("tools/make_demo_data.py", "--out", str(out), "--n_train", "2",
                         "--n_test_good", "1", "--n_test_per_defect", "1", "--image_size", "32")
    assert run.returncode == 0, run.stderr
    categories = sorted(p.name for p in out.iterdir())
    assert len(categories) == 2 and all(str(out / c) in run.stdout for c in categories)
    assert all((out / c / "train" / "good" / "001.png").is_file() for c in categories)

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    run = run_in_process("tools/make_demo_data.py", "--out", str(blocker / "demo"))
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and run.stderr.startswith("error: ")
    assert "Traceback" not in run.stderr


def test_defect_scale_draws_smaller_defects(tmp_path: Path) -> None:
    def areas(scale: float) -> list[float]:
        folder = generate_category(tmp_path / str(scale), "part", n_train=1, n_test_good=0, n_test_per_defect=2,
                                   image_size=256, defect_scale=scale)
        return [np.asarray(Image.open(p)).astype(bool).mean() for p in sorted(folder.glob("ground_truth/*/*.png"))]

    full, small = areas(1.0), areas(0.25)
    assert all(DEFECT_AREA_RANGE[0] <= a <= DEFECT_AREA_RANGE[1] for a in full)
    # Lengths x0.25: areas about x1/16 (a scratch keeps its 2-pixel minimum width, so a little more).
    assert all(0 < a <= DEFECT_AREA_RANGE[1] / 16 + 16 / 256**2 for a in small)
    assert np.mean(small) < np.mean(full) / 6


@pytest.mark.parametrize("kind", ["surface", "rod"])
def test_rare_good_outliers_are_listed_deterministic_and_only_on_good_images(tmp_path: Path, kind: str) -> None:
    import json

    from datasets.line_cases import generate_outlier_surface_category
    from datasets.synthetic import generate_elongated_category

    def make(root: Path, rate: float) -> Path:
        if kind == "surface":
            return generate_outlier_surface_category(root, "c", n_train=12, n_test_good=6, n_test_defect=1,
                                                     outlier_rate=rate, outlier_kind="highlight", image_size=64)
        return generate_elongated_category(root, "c", n_train=12, n_test_good=6, n_test_defect=1, height=64,
                                           outlier_rate=rate)

    first, again, plain = make(tmp_path / "a", 0.3), make(tmp_path / "b", 0.3), make(tmp_path / "c", 0.0)
    outliers = json.loads((first / MARKER_NAME).read_text())["outliers"]
    assert outliers == json.loads((again / MARKER_NAME).read_text())["outliers"]
    assert 0 < len(outliers["train/good"]) < 12
    for folder, names in outliers.items():
        for name in sorted(os.listdir(first / folder)):
            image = np.asarray(Image.open(first / folder / name), dtype=np.int16)
            assert np.array_equal(image, np.asarray(Image.open(again / folder / name)))
            # an outlier is its plain image plus a bright highlight (clipped at 255); the others are unchanged
            difference = image - np.asarray(Image.open(plain / folder / name), dtype=np.int16)
            assert (difference.max() > 30) == (name in names) and difference.min() >= 0


def test_unknown_outlier_kind_is_refused(tmp_path: Path) -> None:
    from datasets.line_cases import generate_outlier_surface_category
    with pytest.raises(ValueError, match="outlier_kind"):
        generate_outlier_surface_category(tmp_path, "c", outlier_kind="sticker")
