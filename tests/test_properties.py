"""Properties over random shapes, strides and palettes, beyond test_geometry and test_palette.

The predictor's blend is checked against a brute-force average and a pixel-wise stand-in
model on rasters of any size (smaller than a window included), with any stride, block
height, batch size and blend; sparse training windows and the colour <-> label
conversion with colours outside the palette are checked on random cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eoseg.errors import EosegError
from eoseg.geometry import axis_starts, sliding_windows
from eoseg.normalization import Normalization
from eoseg.palette import Palette, pack_rgb
from eoseg.predict import Predictor

from .test_predict import RAW, WindowMean, expected_blend

pytestmark = pytest.mark.faults


@st.composite
def geometries(draw, min_side=None):
    """(height, width, window, stride, block_rows, batch_size, blend); sides >= min_side(window) if given."""
    window = draw(st.integers(2, 24))
    stride = draw(st.integers(1, window))
    low = 1 if min_side is None else min_side(window)
    height, width = draw(st.integers(low, 70)), draw(st.integers(low, 70))
    return (height, width, window, stride, draw(st.integers(1, 90)), draw(st.integers(1, 9)),
            draw(st.sampled_from(["uniform", "gaussian"])))


def streamed(predictor: Predictor, image: np.ndarray, block_rows: int) -> torch.Tensor:
    """Scores of ``image`` assembled from the predictor's blocks, checking they tile the rows in order."""
    _, height, width = image.shape
    blocks = [(block.row, block.scores.clone())
              for block in predictor.stream(lambda a, b: image[:, a:b], height, width, block_rows)]
    rows = [row for row, _ in blocks]
    assert rows[0] == 0 and all(row + scores.shape[1] == nxt for (row, scores), nxt in zip(blocks, rows[1:]))
    return torch.cat([scores for _, scores in blocks], dim=1)


@settings(max_examples=60, deadline=None)
@given(geometry=geometries(min_side=lambda window: window), seed=st.integers(0, 2**16))
def test_blend_is_the_weighted_average_of_covering_windows(geometry, seed):
    height, width, window, stride, block_rows, batch, blend = geometry
    image = np.random.default_rng(seed).normal(0, 10, (1, height, width)).astype(np.float32)
    predictor = Predictor(WindowMean(), RAW, window, stride, batch, blend=blend)
    scores = streamed(predictor, image, block_rows)
    assert scores.shape == (2, height, width)
    np.testing.assert_allclose(scores[0].numpy(), expected_blend(image, window, stride, blend), rtol=1e-4, atol=1e-4)


class PixelWise(torch.nn.Module):
    """Scores that depend on each pixel alone: blending any windows over it must give them back."""

    num_classes = 4

    def __init__(self, bands: int):
        super().__init__()
        self.mix = torch.nn.Conv2d(bands, self.num_classes, 1)
        with torch.no_grad():
            self.mix.weight.copy_(torch.linspace(-1, 1, self.num_classes * bands).view(self.num_classes, bands, 1, 1))
            self.mix.bias.copy_(torch.linspace(0, 0.5, self.num_classes))

    def forward(self, x):
        return self.mix(x)


@settings(max_examples=50, deadline=None)
@given(geometry=geometries(), bands=st.integers(1, 4), seed=st.integers(0, 2**16),
       tta=st.lists(st.sampled_from(["fliplr", "flipud", "rot90"]), unique=True, max_size=2))
def test_every_pixel_gets_its_own_scores_back(geometry, bands, seed, tta):
    """Any raster (smaller than a window too, padded), any stride, block height, batch and blend."""
    height, width, window, stride, block_rows, batch, blend = geometry
    image = np.random.default_rng(seed).integers(0, 256, (bands, height, width)).astype(np.uint8)
    norm = Normalization((10.0,) * bands, (50.0,) * bands)
    model = PixelWise(bands)
    scores = streamed(Predictor(model, norm, window, stride, batch, blend=blend, tta=tta), image, block_rows)
    with torch.no_grad():
        expected = model(norm.apply(torch.from_numpy(image)[None]))[0]
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(0, 500), window=st.integers(1, 64), stride=st.integers(1, 200))
def test_sparse_training_windows(length, window, stride):
    """With gaps allowed (training patches), windows still start at 0, end on the edge and step at most stride."""
    starts = axis_starts(length, window, stride, allow_gaps=True)
    if length <= window:
        assert starts == [0]
        return
    assert starts[0] == 0 and starts[-1] == length - window
    assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))
    windows = list(sliding_windows(length, length, window, stride, allow_gaps=True))
    assert windows == [(r, c) for r in starts for c in starts]


colour = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))


@st.composite
def coloured_images(draw):
    """A random palette (with or without an ignore colour) and an image of its colours and others."""
    colours = draw(st.lists(colour, min_size=3, max_size=12, unique=True))
    with_ignore = draw(st.booleans())
    ignore_color = colours[0] if with_ignore else None
    classes = colours[1:]
    # grey levels 1..number of classes would be class ids saved in three bands, refused before any colour (test_palette)
    class_id_grey = lambda c: c[0] == c[1] == c[2] and 1 <= c[0] < len(colours)  # noqa: E731
    others = draw(st.lists(colour.filter(lambda c: c not in colours and not class_id_grey(c)), max_size=4, unique=True))
    choices = classes + ([ignore_color] if with_ignore else []) + others
    h, w = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    picks = draw(st.lists(st.integers(0, len(choices) - 1), min_size=h * w, max_size=h * w))
    rgb = np.array([choices[i] for i in picks], dtype=np.uint8).reshape(h, w, 3)
    return classes, ignore_color, draw(st.integers(len(classes), 255)), rgb


@settings(max_examples=150, deadline=None)
@given(coloured_images())
def test_colours_outside_the_palette(case):
    classes, ignore_color, ignore_label, rgb = case
    palette = Palette(classes, ignore_color=ignore_color, ignore_label=ignore_label)
    lookup = {pack_rgb(np.array(c, np.uint8)): i for i, c in enumerate(classes)}
    packed = pack_rgb(rgb)
    expected = np.vectorize(lambda p: lookup.get(p, ignore_label), otypes=[np.uint8])(packed)
    unknown = np.vectorize(lambda p: p not in lookup, otypes=[bool])(packed)
    if ignore_color is not None:
        unknown &= packed != pack_rgb(np.array(ignore_color, np.uint8))
    np.testing.assert_array_equal(palette.to_labels(rgb, unknown_to_ignore=True), expected)
    if unknown.any():
        with pytest.raises(EosegError, match=rf"^tile: {int(unknown.sum())} pixels have colours outside the palette"):
            palette.to_labels(rgb, source="tile")
    else:
        np.testing.assert_array_equal(palette.to_labels(rgb), expected)
