"""The streaming sliding-window predictor: blending, blocks, edges, speed-ups."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from eoseg.errors import EosegError
from eoseg.geometry import sliding_windows
from eoseg.models import build_model
from eoseg.models.fuse import ConvReLU, SplitBfloat16Input, fold_batchnorm
from eoseg.normalization import Normalization
from eoseg.predict import Predictor, window_weights


RAW = Normalization((0.0,), (1.0,))


class WindowMean(torch.nn.Module):
    """Scores constant over each window: the mean of its first band (class 0) and minus it (class 1).

    A stand-in for a network with a bias that depends on the window's position.
    """

    num_classes = 2

    def forward(self, x):
        mean = x[:, :1].mean(dim=(-2, -1), keepdim=True).expand(-1, 1, *x.shape[-2:])
        return torch.cat([mean, -mean], dim=1)


def expected_blend(image: np.ndarray, window: int, stride: int, blend: str) -> np.ndarray:
    """Brute force: the weighted average over the windows covering each pixel."""
    _, height, width = image.shape
    weights = window_weights(window, blend).numpy().astype(np.float64)
    total = np.zeros((height, width))
    weight_sum = np.zeros((height, width))
    for r, c in sliding_windows(height, width, window, stride):
        total[r:r + window, c:c + window] += image[0, r:r + window, c:c + window].mean() * weights
        weight_sum[r:r + window, c:c + window] += weights
    return total / weight_sum


@pytest.fixture(scope="module")
def ramp():
    """A horizontal ramp plus noise: window means differ from window to window."""
    rng = np.random.default_rng(0)
    return (np.linspace(0, 100, 150)[None, None, :] + rng.normal(0, 5, (1, 70, 150))).astype(np.float32)


@pytest.mark.parametrize("blend", ["uniform", "gaussian"])
@pytest.mark.parametrize("block_rows", [16, 40, 1000])
def test_blend_is_the_weighted_average_of_covering_windows(ramp, blend, block_rows):
    predictor = Predictor(WindowMean(), RAW, 32, 12, batch_size=5, blend=blend)
    blocks = [(b.row, b.scores.clone(), b.pixels) for b in predictor.stream(lambda a, b: ramp[:, a:b], 70, 150, block_rows)]
    rows = [row for row, _, _ in blocks]
    assert rows == sorted(set(rows)) and rows[0] == 0
    scores = torch.cat([block_scores for _, block_scores, _ in blocks], dim=1)
    assert scores.shape == (2, 70, 150)
    np.testing.assert_allclose(scores[0].numpy(), expected_blend(ramp, 32, 12, blend), rtol=1e-5, atol=1e-4)
    assert np.array_equal(np.concatenate([pixels for _, _, pixels in blocks], axis=1), ramp)


def test_gaussian_blending_removes_seams():
    """At the borders of the regular windows, uniform averaging jumps; the Gaussian blend does not.

    The image is a ramp, so neighbouring windows' constants differ by ``step`` = stride x slope.
    """
    ramp = np.broadcast_to(np.linspace(0, 149, 150, dtype=np.float32), (1, 40, 150)).copy()
    window, stride = 32, 16
    step = stride * 1.0
    borders = range(stride, 150 - window, stride)  # window starts and ends of the regular grid
    seams = {}
    for blend in ("uniform", "gaussian"):
        row = Predictor(WindowMean(), RAW, window, stride, 4, blend=blend).scores(ramp)[0, 20].numpy()
        seams[blend] = max(abs(row[b] - row[b - 1]) for b in borders)
    assert seams["uniform"] > 0.4 * step
    assert seams["gaussian"] < 0.01 * step


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = build_model("segnet", 3, 6, 0.125)
    for module in model.modules():  # trained-looking batch norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).integers(0, 256, (3, 90, 110), dtype=np.uint8)


def test_results_equal_across_batch_sizes_and_block_heights(tiny_model, image):
    norm = Normalization((0.0,) * 3, (255.0,) * 3)
    reference = Predictor(tiny_model, norm, 32, 16, 1, optimize=False).scores(image)
    for batch, block_rows in ((3, 32), (7, 50), (64, 1000)):
        predictor = Predictor(tiny_model, norm, 32, 16, batch, optimize=False)
        scores = torch.cat([b.scores.clone() for b in predictor.stream(lambda a, b: image[:, a:b], 90, 110, block_rows)], dim=1)
        torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(20, 110), (90, 25), (7, 9), (32, 32), (33, 64)])
def test_edges_and_rasters_smaller_than_a_window(tiny_model, image, shape):
    small = np.ascontiguousarray(image[:, :shape[0], :shape[1]])
    labels = Predictor(tiny_model, Normalization((0.0,) * 3, (255.0,) * 3), 32, 16, 4).predict(small)
    assert labels.shape == shape and labels.max() < 6


def test_folded_batch_norm_and_channels_last_keep_the_labels(tiny_model, image):
    norm = Normalization((0.0,) * 3, (255.0,) * 3)
    plain = Predictor(tiny_model, norm, 32, 16, 4, optimize=False).scores(image)
    fast = Predictor(tiny_model, norm, 32, 16, 4, optimize=True).scores(image)
    torch.testing.assert_close(fast, plain, rtol=1e-3, atol=1e-4)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(tiny_model)(x), tiny_model(x), rtol=1e-4, atol=1e-5)


def test_tta_of_a_pixelwise_model_changes_nothing(image):
    pixelwise = torch.nn.Conv2d(3, 4, 1)
    norm = Normalization((0.0,) * 3, (255.0,) * 3)
    plain = Predictor(pixelwise, norm, 32, 16, 4).scores(image)
    augmented = Predictor(pixelwise, norm, 32, 16, 4, tta=("fliplr", "flipud", "rot90", "rot270")).scores(image)
    torch.testing.assert_close(augmented, plain, rtol=1e-5, atol=1e-5)


def test_tta_averages_the_transformed_predictions(tiny_model, image):
    norm = Normalization((0.0,) * 3, (255.0,) * 3)
    square = np.ascontiguousarray(image[:, :64, :64])
    plain = Predictor(tiny_model, norm, 64, 64, 1, optimize=False).scores(square)
    flipped = Predictor(tiny_model, norm, 64, 64, 1, optimize=False).scores(np.ascontiguousarray(square[..., ::-1])).flip(-1)
    both = Predictor(tiny_model, norm, 64, 64, 1, optimize=False, tta=("fliplr",)).scores(square)
    torch.testing.assert_close(both, (plain + flipped) / 2, rtol=1e-4, atol=1e-5)


def test_bfloat16_mostly_agrees(tiny_model, image):
    norm = Normalization((0.0,) * 3, (255.0,) * 3)
    full = Predictor(tiny_model, norm, 32, 16, 4).predict(image)
    low = Predictor(tiny_model, norm, 32, 16, 4, precision="bfloat16").predict(image)
    assert (full == low).mean() > 0.9


@pytest.mark.parametrize("name, bands, stream_bands", [("segnet", 3, None), ("unet", 4, None), ("fusenet", 5, 3)])
def test_bfloat16_reads_the_input_at_nearly_float32_precision(name, bands, stream_bands):
    """bfloat16 would round the normalised image to 8 significant bits: the layers that read it,
    one per stream, get it in float32 and split it and their weights into two bfloat16 parts;
    their output is then as close to float32's as its rounding to bfloat16 allows."""
    torch.manual_seed(0)
    model = build_model(name, bands, 6, 0.125, stream_bands, "resnet18" if name == "unet" else None).eval()
    norm = Normalization((100.0,) * bands, (30.0,) * bands)
    low = Predictor(model, norm, 64, 32, 4, precision="bfloat16")
    split = {n: m for n, m in low.model.named_modules() if isinstance(m, SplitBfloat16Input)}
    assert len(split) == (2 if stream_bands else 1)
    assert all(p.dtype == torch.bfloat16 for p in low.model.parameters())
    folded = fold_batchnorm(model, fuse_relu=True)
    image = np.random.default_rng(0).integers(0, 256, (bands, 96, 80)).astype(np.float32)
    for layer_name, module in split.items():
        band_slice = slice(stream_bands, None) if "aux" in layer_name else slice(0, stream_bands)  # a stream's bands
        inputs = norm.apply(torch.from_numpy(image[:, :64, :64])[None])[:, band_slice]
        layer = folded.get_submodule(layer_name)
        with torch.no_grad():
            target = layer(inputs).to(torch.bfloat16)  # float32's output, rounded to bfloat16
            plain = copy.deepcopy(layer).to(torch.bfloat16)(inputs.to(torch.bfloat16))
            got = module(inputs)
        active = target != 0  # the ReLU's zeros are equal anyway
        assert (got == target)[active].float().mean() > 0.9  # the bias's rounding and the dropped low x low product aside
        assert (plain == target)[active].float().mean() < 0.7
    full = Predictor(model, norm, 64, 32, 4).scores(image)
    torch.testing.assert_close(low.scores(image), full, rtol=0.05, atol=0.05)


def test_bfloat16_without_known_input_layers_runs_in_bfloat16_throughout():
    """A network that is not the registry's (no ``in_channels``): its input is cast with it."""
    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU()).eval()
    low = Predictor(conv, Normalization((0.0,) * 2, (1.0,) * 2), 16, 8, 2, precision="bfloat16")
    assert low.input_dtype == torch.bfloat16
    assert not any(isinstance(m, SplitBfloat16Input) for m in low.model.modules())
    assert low.predict(np.ones((2, 20, 20), np.float32)).shape == (20, 20)


def test_bfloat16_runs_unfused_where_onednn_has_no_bfloat16(tiny_model, image, monkeypatch):
    """An explicit INFER_PRECISION=bfloat16 on an AVX2-only CPU: oneDNN's fused bfloat16 kernel
    refuses such a CPU, so the convolutions stay unfused there (and run) instead of failing."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    norm = Normalization((0.0,) * 3, (255.0,) * 3)
    low = Predictor(tiny_model, norm, 32, 16, 4, precision="bfloat16")
    full = Predictor(tiny_model, norm, 32, 16, 4)
    assert not any(isinstance(module, ConvReLU) for module in low.model.modules())
    assert any(isinstance(module, ConvReLU) for module in full.model.modules())
    assert (low.predict(image) == full.predict(image)).mean() > 0.9


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_pixels_do_not_spread(tiny_model, bad):
    image = np.random.default_rng(2).random((3, 64, 64)).astype(np.float32)
    image[:, 10, 10] = bad
    scores = Predictor(tiny_model, Normalization((0.0,) * 3, (1.0,) * 3), 32, 16, 4).scores(image)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"tta": ("flip",)}, "TTA"), ({"precision": "int8"}, "INFER_PRECISION"), ({"blend": "cosine"}, "BLEND"),
])
def test_bad_settings_refused(kwargs, match):
    with pytest.raises(EosegError, match=match):
        Predictor(WindowMean(), RAW, 32, 16, 4, **kwargs)
    with pytest.raises(EosegError, match="STRIDE"):
        Predictor(WindowMean(), RAW, 32, 40, 4)


def test_windows_without_data_are_not_run_through_the_network(ramp):
    class Counting(WindowMean):
        windows = 0

        def forward(self, x):
            Counting.windows += x.shape[0]
            return super().forward(x)

    valid = np.zeros(ramp.shape[1:], dtype=bool)
    valid[:, :40] = True  # data in the first 40 columns only
    predictor = Predictor(Counting(), RAW, 32, 16, 5, optimize=False)

    def scores(valid_rows):
        Counting.windows = 0
        blocks = predictor.stream(lambda a, b: ramp[:, a:b], 70, 150, 40, valid_rows=valid_rows)
        return torch.cat([b.scores.clone() for b in blocks], dim=1), Counting.windows

    every, all_windows = scores(None)
    skipping, run = scores(lambda a, b: valid[a:b])
    # windows starting at columns 0, 16, 32 touch the data; of 9 columns of windows, 6 are skipped
    assert all_windows == len(list(sliding_windows(70, 150, 32, 16))) and run == all_windows // 9 * 3
    torch.testing.assert_close(skipping[:, valid], every[:, valid])
    _, none_run = scores(lambda a, b: np.zeros((b - a, 150), dtype=bool))
    assert none_run == 0
