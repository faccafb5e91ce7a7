"""Training curves and validation previews for TensorBoard, when it is installed.

TensorBoard is optional (the ``tensorboard`` extra): :meth:`TensorBoardLog.open` returns
None without it and training writes its CSV and PNG alone, as ever. With it, the training
process writes to ``TRAIN_DIR/tensorboard/``: every log row's loss, learning rate and
validation OA / mean F1 / mean IoU, each class's F1 and IoU at each validation, and an
image of one validation tile (image | ground truth | prediction)::

    tensorboard --logdir runs/sample/train/tensorboard
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# log.csv column -> TensorBoard tag
SCALARS = {"loss": "train/loss", "lr": "train/learning_rate", "patches_per_s": "train/patches_per_s",
           "val_overall_accuracy": "validation/overall_accuracy", "val_mean_f1": "validation/mean_f1",
           "val_mean_iou": "validation/mean_iou"}


class TensorBoardLog:
    """Event files in one folder, written by the training's main process."""

    def __init__(self, writer):
        self.writer = writer

    @classmethod
    def open(cls, folder: str | Path, first_iteration: int = 0) -> "TensorBoardLog | None":
        """A log in ``folder``, or None when tensorboard is not installed.

        A resumed run starts at ``first_iteration`` + 1: events a killed run wrote after its
        checkpoint are dropped (TensorBoard's purge step), as their CSV rows are."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises it when the tensorboard package is missing
            return None
        return cls(SummaryWriter(log_dir=str(folder), purge_step=first_iteration + 1 if first_iteration else None))

    def add_row(self, row: dict) -> None:
        """The numbers of a log.csv row (strings or numbers), at its iteration."""
        step = int(row["iteration"])
        for column, tag in SCALARS.items():
            if row.get(column) not in (None, ""):
                self.writer.add_scalar(tag, float(row[column]), step)

    def add_validation(self, iteration: int, metrics: dict, preview: np.ndarray | None = None) -> None:
        """Each class's F1 and IoU (metrics of eoseg.metrics) and an (H, W, 3) uint8 ``preview``."""
        for name, scores in metrics["per_class"].items():
            for measure in ("f1", "iou"):
                if scores[measure] is not None:  # None: the class is not in the validation ground truth
                    self.writer.add_scalar(f"validation_{measure}/{name}", scores[measure], iteration)
        if preview is not None:
            self.writer.add_image("validation/image_truth_prediction", preview, iteration, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
