"""The one place where raw pixel values become network inputs."""

from __future__ import annotations

from dataclasses import dataclass

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
