"""One labelling path: training's validation scores a checkpoint exactly as inference.py does."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from eoseg.checkpoint import load_checkpoint
from eoseg.config import load_config
from eoseg.infer import run_inference
from eoseg.labelling import label_rows, make_predictor, score_tile
from eoseg.models import model_from_config
from eoseg.normalization import Normalization
from eoseg.tiles import eval_truth, tile_stack
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


def test_validation_figures_equal_inference_to_the_pixel(holed_root, tmp_path):
    cfg = holed_config(holed_root, tmp_path, ITERATIONS=4, LOG_EVERY=2, VAL_EVERY=2, SNAPSHOT_EVERY=2, BASE_LR=0.1)
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
    labelled[HOLE] = False
    assert summary.metrics["pixels"] == logged["pixels"] == labelled.sum()
    with rasterio.open(summary.images[0].outputs["labels"]) as src:
        assert (src.read(1)[HOLE] == cfg.IGNORE_LABEL).all()


def test_label_rows_blocks_cover_the_tile_and_score_what_they_label(holed_root, tmp_path):
    cfg = holed_config(holed_root, tmp_path, INFER_BLOCK_ROWS=64)
    torch.manual_seed(0)
    model = model_from_config(cfg)
    predictor = make_predictor(cfg, model, Normalization.from_config(cfg), torch.device("cpu"))
    stack = tile_stack(cfg, "4")
    truth_source = eval_truth(cfg, "4", stack.info)
    blocks = list((rows.row, rows.labels.copy(), rows.confusion) for rows in label_rows(cfg, predictor, stack, truth_source))
    assert len(blocks) > 1 and [row for row, _, _ in blocks][0] == 0
    labels = np.concatenate([labels for _, labels, _ in blocks])
    assert labels.shape == (160, 160) and (labels[HOLE] == cfg.IGNORE_LABEL).all()
    assert (labels[~np.isin(np.arange(160), range(40, 90))] != cfg.IGNORE_LABEL).all()
    truth = truth_source.read_rows(cfg.palette, 0, 160)
    scored = (truth != cfg.IGNORE_LABEL) & (labels != cfg.IGNORE_LABEL)
    by_hand = np.zeros((6, 6), dtype=np.int64)
    np.add.at(by_hand, (truth[scored], labels[scored]), 1)
    np.testing.assert_array_equal(sum(confusion for _, _, confusion in blocks), by_hand)
    np.testing.assert_array_equal(score_tile(cfg, predictor, stack, truth_source), by_hand)
