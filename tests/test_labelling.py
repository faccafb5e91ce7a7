"""One labelling path: training's validation scores a checkpoint exactly as inference.py does."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window

from eoseg.checkpoint import load_checkpoint
from eoseg.config import load_config
from eoseg.infer import run_inference
from eoseg.io import RasterInfo, raster_info
from eoseg.labelling import _on_image_grid, _resampling_indices, label_rows, labelling_stack, make_predictor, score_tile
from eoseg.metrics import UNSCORED
from eoseg.models import model_from_config
from eoseg.normalization import Normalization
from eoseg.tiles import eval_truth, image_stack, tile_stack
from eoseg.train import train

from .conftest import as_arguments, tiny_overrides

HOLE = (slice(40, 90), slice(20, 70))  # rows, columns of tile 4 declared nodata


@pytest.fixture(scope="module")
def holed_root(sample_root, tmp_path_factory) -> Path:
    """The tiny dataset with a nodata hole (value 0, declared in the GeoTIFF) in validation tile 4."""
    root = tmp_path_factory.mktemp("holed")
    shutil.copytree(sample_root / "data", root / "data")
    cfg = load_config(overrides=as_arguments({**tiny_overrides(root)}))
    path = cfg.tile_path("IMAGE_PATTERN", "4")
    with rasterio.open(path) as src:
        profile, pixels = src.profile, src.read()
    pixels[(slice(None), *HOLE)] = 0
    with rasterio.open(path, "w", **{**profile, "nodata": 0}) as dst:
        dst.write(pixels)
    return root


def holed_config(root: Path, out: Path, **extra):
    settings = {**tiny_overrides(out), "DATA_ROOT": str(root / "data"), "TRAIN_SOURCE": "tiles", "BLEND": "gaussian",
                "TTA": ["fliplr", "rot90"], "INFER_BLOCK_ROWS": 96, "WRITE_PREVIEW": False, **extra}
    return load_config(overrides=as_arguments(settings))


@pytest.mark.parametrize("pixel_size", [None, 0.06])  # the training tiles' 0.09 m, or labelled on a finer grid
def test_validation_figures_equal_inference_to_the_pixel(holed_root, tmp_path, pixel_size):
    cfg = holed_config(holed_root, tmp_path, ITERATIONS=4, LOG_EVERY=2, VAL_EVERY=2, SNAPSHOT_EVERY=2, BASE_LR=0.1,
                       INFER_PIXEL_SIZE=pixel_size)
    train(cfg, progress=False)
    best_path = Path(cfg.TRAIN_DIR) / "checkpoints" / "best.pt"
    best = load_checkpoint(best_path)
    logged = best["validation"]
    summary = run_inference(cfg, best_path, tmp_path / "inference", cfg.tile_ids("test"), progress=False)
    assert summary.metrics["confusion_matrix"] == logged["confusion_matrix"]
    with open(Path(cfg.TRAIN_DIR) / "log.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if int(r["iteration"]) == best["iteration"])
    for name in ("overall_accuracy", "mean_f1", "mean_iou"):
        assert float(row[f"val_{name}"]) == pytest.approx(summary.metrics[name], abs=5e-6)
    # the hole's pixels are left out of both: scored are the labelled pixels outside it
    truth = eval_truth(cfg, "4", tile_stack(cfg, "4").info).read_rows(cfg.palette, 0, 160)
    labelled = truth != cfg.IGNORE_LABEL
    assert labelled[HOLE].any()
    with rasterio.open(summary.images[0].outputs["labels"]) as src:
        assert (src.width, src.height, src.transform) == (160, 160, tile_stack(cfg, "4").info.transform)
        labels = src.read(1)
    if pixel_size is None:
        assert summary.metrics[UNSCORED] == summary.images[0].metrics[UNSCORED] == labelled[HOLE].sum()
        assert f"not scored: {labelled[HOLE].sum()} px of ground truth where the image holds no data" in \
            (tmp_path / "inference" / "metrics.txt").read_text()
        labelled[HOLE] = False
        assert summary.metrics["pixels"] == logged["pixels"] == labelled.sum()
        assert (labels[HOLE] == cfg.IGNORE_LABEL).all()
    else:  # the hole's edge interpolated from the pixels beside it
        assert (labels[HOLE][2:-2, 2:-2] == cfg.IGNORE_LABEL).all()
        assert summary.metrics["pixels"] == logged["pixels"] == (labelled & (labels != cfg.IGNORE_LABEL)).sum()


def test_label_rows_blocks_cover_the_tile_and_score_what_they_label(holed_root, tmp_path):
    cfg = holed_config(holed_root, tmp_path, INFER_BLOCK_ROWS=64)
    torch.manual_seed(0)
    model = model_from_config(cfg)
    predictor = make_predictor(cfg, model, Normalization.from_config(cfg), torch.device("cpu"))
    stack = tile_stack(cfg, "4")
    truth_source = eval_truth(cfg, "4", stack.info)
    blocks, unscored = [], 0
    for rows in label_rows(cfg, predictor, stack, truth_source):
        blocks.append((rows.row, rows.labels.copy(), rows.confusion))
        unscored += rows.unscored
    assert len(blocks) > 1 and [row for row, _, _ in blocks][0] == 0
    labels = np.concatenate([labels for _, labels, _ in blocks])
    assert labels.shape == (160, 160) and (labels[HOLE] == cfg.IGNORE_LABEL).all()
    assert (labels[~np.isin(np.arange(160), range(40, 90))] != cfg.IGNORE_LABEL).all()
    truth = truth_source.read_rows(cfg.palette, 0, 160)
    scored = (truth != cfg.IGNORE_LABEL) & (labels != cfg.IGNORE_LABEL)
    by_hand = np.zeros((6, 6), dtype=np.int64)
    np.add.at(by_hand, (truth[scored], labels[scored]), 1)
    np.testing.assert_array_equal(sum(confusion for _, _, confusion in blocks), by_hand)
    assert unscored == ((truth != cfg.IGNORE_LABEL) & (labels == cfg.IGNORE_LABEL)).sum() > 0
    confusion, none = score_tile(cfg, predictor, stack, truth_source)
    np.testing.assert_array_equal(confusion, by_hand)
    assert none is None
    crop = Window(30, 50, 70, 100)  # across blocks of 64 rows
    confusion, kept = score_tile(cfg, predictor, stack, truth_source, crop)
    np.testing.assert_array_equal(confusion, by_hand)
    np.testing.assert_array_equal(kept, labels[50:150, 30:100])


class BrightIsClassOne(torch.nn.Module):
    """Class 1 where the first band is above its mean, else class 0: labels that do not depend on scale."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x[:, :1], x[:, :1]], dim=1)


@pytest.mark.parametrize("pixel_size", [0.075, 0.5])  # a finer grid (bilinear), a coarser one (average)
def test_an_image_labelled_on_another_grid_gets_its_labels_on_its_own(tmp_path, pixel_size):
    cfg = load_config(overrides=as_arguments({**tiny_overrides(tmp_path), "INFER_OPTIMIZE": False, "WINDOW": 32,
                                              "STRIDE": 16, "INFER_PIXEL_SIZE": pixel_size}))
    rows, cols = 150, 170
    yy, xx = np.mgrid[:rows, :cols]
    bright = ((yy // 12 + xx // 12) % 2).astype(bool)
    image = np.repeat(np.where(bright, 200, 50).astype(np.uint8)[None], 3, axis=0)
    image[:, 101:127, 43:89] = 0  # declared nodata, edges off the grids' pixels
    path = tmp_path / "image.tif"
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=3, dtype="uint8", nodata=0,
                       crs="EPSG:32632", transform=from_origin(500000, 5400000, 0.2, 0.2)) as dst:
        dst.write(image)
    stack = image_stack(cfg, raster_info(path, "image"))
    on_grid = labelling_stack(cfg, stack, None)
    assert on_grid.grid is not stack.grid and on_grid.info == stack.info
    predictor = make_predictor(cfg, BrightIsClassOne(), Normalization((128.0,) * 3, (64.0,) * 3), torch.device("cpu"))
    labelled = []
    for block_rows in (32, 4096):  # streamed by blocks of rows or in one
        blocks = list(label_rows(cfg.replace(INFER_BLOCK_ROWS=block_rows), predictor, on_grid))
        assert [b.row for b in blocks] == sorted(b.row for b in blocks) and all(b.labels.shape[0] <= block_rows for b in blocks)
        labelled.append(np.concatenate([b.labels for b in blocks]))
        assert all(b.scores.shape == (2, *b.labels.shape) for b in blocks)
    np.testing.assert_array_equal(labelled[0], labelled[1])
    labels = labelled[0]
    assert labels.shape == (rows, cols)
    hole = np.zeros((rows, cols), dtype=bool)
    hole[101:127, 43:89] = True
    near_hole = np.zeros_like(hole)
    near_hole[98:130, 40:92] = True
    assert (labels[hole] == cfg.IGNORE_LABEL).all()  # to the pixel, whichever grid labelled it
    # away from the squares' edges and the hole, each pixel keeps its own class
    edge = (np.abs(yy % 12 - 5.5) > 3.5) | (np.abs(xx % 12 - 5.5) > 3.5)
    inside = ~edge & ~near_hole
    np.testing.assert_array_equal(labels[inside], bright[inside].astype(np.uint8))
    assert (labels[~hole & ~near_hole] != cfg.IGNORE_LABEL).all()


@pytest.mark.parametrize("factor", [0.1, 0.4, 0.45, 2.0])  # grid pixels of 1/10 .. 2 image pixels
@pytest.mark.parametrize("grid_block_rows", [7, 64, 96])
def test_scores_brought_back_to_the_image_grid_read_the_right_grid_rows(factor, grid_block_rows):
    """Each image row gets the bilinear mix of the grid rows around its centre, however the grid's rows arrive."""
    image = RasterInfo(Path("image.tif"), 60, 90, 1, "uint8", None, Affine(0.3, 0, 500000, 0, -0.3, 5000000), None)
    grid_height, grid_width = int(np.ceil(90 / factor - 1e-6)), int(np.ceil(60 / factor - 1e-6))
    grid = RasterInfo(Path("grid"), grid_width, grid_height, 1, "uint8", None, image.transform * Affine.scale(factor), None)
    row_index = torch.arange(grid_height, dtype=torch.float32)[None, :, None].expand(1, grid_height, grid_width)
    valid = np.ones((grid_height, grid_width), dtype=bool)
    blocks = ((row, row_index[:, row:row + grid_block_rows].clone(), valid[row:row + grid_block_rows])
              for row in range(0, grid_height, grid_block_rows))
    out = list(_on_image_grid(blocks, grid, image, 16))
    starts = [row for row, _, _ in out]
    assert starts == list(np.cumsum([0] + [s.shape[1] for _, s, _ in out])[:-1]) and max(s.shape[1] for _, s, _ in out) <= 16
    below, above, weight, _ = _resampling_indices(90, factor, grid_height)
    scores = torch.cat([s for _, s, _ in out], dim=1)[0]
    np.testing.assert_allclose(scores.numpy(), np.repeat((below * (1 - weight) + above * weight)[:, None], 60, 1), atol=1e-4)
