"""The one place where raw pixel values become network inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Normalization:
    """``(x[band_order] - mean) / std`` per band, on the raw value scale of the input.

    ``band_order`` (None = as read) reorders the configured bands before the network,
    e.g. RGB -> BGR for weights trained in Caffe; ``mean``/``std`` follow that order.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    band_order: tuple[int, ...] | None = None
    # data type of the pixels the weights were trained on (None: not recorded); not part of record()
    input_dtype: str | None = None

    @classmethod
    def from_config(cls, cfg) -> "Normalization":
        """Every stacked band's: NORM_MEAN/NORM_STD for BANDS, then each EXTRA_SOURCES entry's mean/std."""
        return cls(tuple(cfg.stacked_mean), tuple(cfg.stacked_std))

    @classmethod
    def from_record(cls, record: dict) -> "Normalization":
        order = record.get("band_order")
        return cls(tuple(record["mean"]), tuple(record["std"]), None if order is None else tuple(order))

    def record(self) -> dict:
        """How inputs are normalised, as recorded in LMDBs and weights files."""
        record = {"mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std]}
        if self.band_order is not None:
            record["band_order"] = [int(b) for b in self.band_order]
        return record

    def apply(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) raw values (any dtype) -> normalised float32."""
        if self.band_order is not None:
            batch = batch[:, list(self.band_order)]
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
        return (batch.float() - mean) / std

    def fill_invalid(self, pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(C, H, W) raw ``pixels`` with every band of each pixel where ``valid`` is False set to
        the raw value that normalises to 0 (the band's mean).

        A nodata value such as -9999 would otherwise reach the network as a huge input: it
        corrupts the activations of every window around it and, in training, batch norm's
        statistics. NaN is replaced alike (``valid`` is False there).
        """
        if valid.all():
            return pixels
        neutral = np.asarray(self.mean, dtype=np.float64)
        if self.band_order is not None:  # network band k is input band band_order[k]
            neutral = np.zeros(len(self.band_order))
            neutral[list(self.band_order)] = self.mean
        return np.where(valid[None], pixels, neutral.astype(pixels.dtype)[:, None, None])
