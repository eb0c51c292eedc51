"""--aggregation unfold against a slow, loop-by-loop NumPy version; settings, fingerprint, model file."""
import numpy as np
import paddle
import pytest

from models.feature_extractor import build_extractor, unfold_aggregate
from models.model_file import AnomalyModel
from models.registry import check_aggregation
from utils.config import Config, ModelConfig
from utils.errors import UserError


def adaptive_mean(values, length):
    """1-D adaptive average pooling: bin i averages values[floor(i*L/D) : ceil((i+1)*L/D)]."""
    size = len(values)
    out = np.empty(length)
    for i in range(length):
        start = (i * size) // length
        end = -(-((i + 1) * size) // length)
        out[i] = values[start:end].mean()
    return out


def neighbourhoods(fmap):
    """[C, H, W] -> [C*9, H, W]: each position's zero-padded 3x3 neighbourhood, channel-major."""
    channels, height, width = fmap.shape
    out = np.zeros((channels * 9, height, width))
    for y in range(height):
        for x in range(width):
            for c in range(channels):
                for dy in range(3):
                    for dx in range(3):
                        yy, xx = y + dy - 1, x + dx - 1
                        inside = 0 <= yy < height and 0 <= xx < width
                        out[c * 9 + dy * 3 + dx, y, x] = fmap[c, yy, xx] if inside else 0.0
    return out


def bilinear(grid, height, width):
    """[K, h, w] -> [K, height, width], half-pixel centres, edges clamped (align_corners=False)."""
    _, h, w = grid.shape

    def taps(size_in, size_out, i):
        src = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
        low = min(int(np.floor(src)), size_in - 1)
        high = min(low + 1, size_in - 1)
        return low, high, src - low

    out = np.empty((grid.shape[0], height, width))
    for y in range(height):
        y0, y1, fy = taps(h, height, y)
        for x in range(width):
            x0, x1, fx = taps(w, width, x)
            top = grid[:, y0, x0] * (1 - fx) + grid[:, y0, x1] * fx
            bottom = grid[:, y1, x0] * (1 - fx) + grid[:, y1, x1] * fx
            out[:, y, x] = top * (1 - fy) + bottom * fy
    return out


def reference(maps, pretrain_dim, target_dim):
    """The official PatchCore aggregation, one image and one patch at a time."""
    batch, _, height, width = maps[0].shape
    out = np.empty((batch, target_dim, height, width))
    for b in range(batch):
        grids = [bilinear(neighbourhoods(m[b]), height, width) for m in maps]
        for y in range(height):
            for x in range(width):
                stages = [adaptive_mean(g[:, y, x], pretrain_dim) for g in grids]
                out[b, :, y, x] = adaptive_mean(np.concatenate(stages), target_dim)
    return out


def test_adaptive_mean_bins_are_the_documented_ones():
    values = np.arange(5.0)
    np.testing.assert_allclose(adaptive_mean(values, 3), [0.5, 2.0, 3.5])          # overlapping bins
    np.testing.assert_allclose(adaptive_mean(values, 8), [0, 0.5, 1, 1.5, 2.5, 3, 3.5, 4])   # D > L


@pytest.mark.parametrize("shapes, dims", [
    (((3, 6, 6), (5, 3, 3)), (10, 7)),      # 27 -> 10, 45 -> 10, 20 -> 7: no length divides
    (((3, 6, 6), (5, 3, 3)), (40, 33)),     # 27 -> 40 (output longer than input), 80 -> 33
    (((2, 7, 5), (4, 4, 3)), (18, 36)),     # 18 -> 18 exact, 36 -> 18, 36 -> 36; 4x3 -> 7x5 resize
    (((4, 5, 5),), (9, 4)),                 # one stage: 36 -> 9 -> 4
])
def test_unfold_aggregate_matches_the_numpy_loops(shapes, dims):
    rng = np.random.default_rng(len(shapes) + sum(dims))
    maps = [rng.standard_normal((2, *shape)).astype(np.float32) for shape in shapes]
    with paddle.no_grad():
        out = unfold_aggregate([paddle.to_tensor(m) for m in maps], *dims).numpy()
    expected = reference([m.astype(np.float64) for m in maps], *dims)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_extractor_output_is_the_aggregate_of_its_stages():
    extractor = build_extractor(ModelConfig(arch="mobilenet_v2", pretrained="none", aggregation="unfold",
                                            pretrain_embed_dim=64, target_embed_dim=48))
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32))
    with paddle.no_grad():
        out = extractor(x).numpy()
        s1 = extractor.stages[1](extractor.stages[0](x))
        s2 = extractor.stages[2](s1)
        expected = reference([s1.numpy().astype(np.float64), s2.numpy().astype(np.float64)], 64, 48)
    assert out.shape == (1, 48, 8, 8)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fingerprint_covers_the_aggregation_and_avgpool_keeps_its_state():
    def extractor(**settings):
        return build_extractor(ModelConfig(arch="resnet18", pretrained="none", **settings))

    avg = extractor()
    assert "unfold_embed_dims" not in avg.state_dict()      # avgpool fingerprints are unchanged
    prints = {avg.fingerprint(), extractor(aggregation="unfold").fingerprint(),
              extractor(aggregation="unfold", pretrain_embed_dim=512).fingerprint(),
              extractor(aggregation="unfold", target_embed_dim=512).fingerprint()}
    assert len(prints) == 4


def test_model_file_round_trip_and_older_files_load_as_avgpool(tmp_path):
    config = Config(model=ModelConfig(aggregation="unfold", pretrain_embed_dim=64, target_embed_dim=32))
    model = AnomalyModel(config, "part", {"memory_bank": np.ones((16, 32), np.float32)}, "abc", (28, 28))
    model.save(tmp_path / "m.pdparams")
    loaded = AnomalyModel.load(tmp_path / "m.pdparams").config.model
    assert (loaded.aggregation, loaded.pretrain_embed_dim, loaded.target_embed_dim) == ("unfold", 64, 32)
    model.save_stats(tmp_path / "stats.npz", {"program_sha256": "0f", "params_sha256": "0f"})
    assert AnomalyModel.load_stats(tmp_path / "stats.npz")[0].config == config
    old = Config().to_dict()
    for name in ("aggregation", "pretrain_embed_dim", "target_embed_dim"):
        del old["model"][name]
    assert Config.from_dict(old).model.aggregation == "avgpool"


@pytest.mark.parametrize("settings, fragment", [
    (dict(method="padim", aggregation="unfold"), "padim has no local aggregation"),
    (dict(aggregation="unfold", local_aggregation=False), "cannot go with --local_aggregation False"),
    (dict(aggregation="unfold", target_embed_dim=0), "must be at least 1"),
    (dict(aggregation="mean"), "unknown --aggregation"),
])
def test_bad_aggregation_settings_are_one_line_errors(settings, fragment):
    with pytest.raises(UserError, match=fragment):
        check_aggregation(ModelConfig(**settings))
    check_aggregation(ModelConfig(method="padim", local_aggregation=False))   # padim's own path is fine
