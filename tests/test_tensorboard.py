"""TensorBoard: training writes its curves and validation previews there when tensorboard is
installed, and trains exactly as before when it is not."""

from __future__ import annotations

import csv
import importlib.util
import sys

import pytest

from eoseg.config import load_config
from eoseg.train import train

from .conftest import TINY_TILE_SIZE, as_arguments, tiny_overrides


def tiny_training(sample_root, out, **extra):
    overrides = {**tiny_overrides(out), "DATA_ROOT": str(sample_root / "data"), "TRAIN_SOURCE": "tiles",
                 "ITERATIONS": 4, "LOG_EVERY": 2, "VAL_EVERY": 2, "SNAPSHOT_EVERY": 4, **extra}
    return load_config(overrides=as_arguments(overrides))


def log_rows(cfg) -> list[dict]:
    with open(f"{cfg.TRAIN_DIR}/log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# the sample's 0.09 m, or validation labelled on a grid twice as coarse: the preview stays on the image's
@pytest.mark.parametrize("pixel_size", ["image", 0.18])
def test_training_writes_scalars_and_a_validation_preview(sample_root, tmp_path, pixel_size):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    cfg = tiny_training(sample_root, tmp_path, INFER_PIXEL_SIZE=pixel_size)
    train(cfg, progress=False)
    events = event_accumulator.EventAccumulator(f"{cfg.TRAIN_DIR}/tensorboard", size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    rows = log_rows(cfg)
    for column, tag in (("loss", "train/loss"), ("lr", "train/learning_rate"), ("val_mean_f1", "validation/mean_f1"),
                        ("val_overall_accuracy", "validation/overall_accuracy"), ("val_mean_iou", "validation/mean_iou")):
        logged = [(event.step, event.value) for event in events.Scalars(tag)]
        assert logged == [(int(r["iteration"]), pytest.approx(float(r[column]), rel=1e-6)) for r in rows], tag
    assert [event.step for event in events.Scalars("train/loss")] == [2, 4]
    per_class = [tag for tag in events.Tags()["scalars"] if tag.startswith("validation_iou/")]
    assert per_class and set(per_class) <= {f"validation_iou/{name}" for name in cfg.CLASS_NAMES}
    previews = events.Images("validation/image_truth_prediction")
    assert [image.step for image in previews] == [2, 4]
    assert (previews[0].width, previews[0].height) == (3 * TINY_TILE_SIZE, TINY_TILE_SIZE)  # image | truth | prediction
    assert (tmp_path / "train" / "loss.png").is_file()  # the CSV and the plot stay


def test_without_tensorboard_training_runs_as_before(sample_root, tmp_path, monkeypatch):
    has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    with_board = tiny_training(sample_root, tmp_path / "with")
    train(with_board, progress=False)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    with pytest.raises(ImportError):
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    without = tiny_training(sample_root, tmp_path / "without")
    train(without, progress=False)
    assert not (tmp_path / "without" / "train" / "tensorboard").exists()
    assert (tmp_path / "with" / "train" / "tensorboard").is_dir() == has_tensorboard
    columns = ("iteration", "loss", "lr", "val_overall_accuracy", "val_mean_f1", "val_mean_iou")
    assert [[r[c] for c in columns] for r in log_rows(without)] == [[r[c] for c in columns] for r in log_rows(with_board)]
