"""ONNX models for the Deepness QGIS plugin (https://github.com/PUTvision/qgis-plugin-deepness).

Deepness runs an ONNX segmentation model on any QGIS raster layer when the file's metadata
says how (its "creators" documentation, "Adding metadata to ONNX model"): each value is
JSON text under the keys ``model_type`` ("Segmentor"), ``class_names`` ({id: name}),
``resolution`` (cm per pixel), ``tile_size`` (px), ``tiles_overlap`` (percent of the tile),
``standardization_mean`` / ``standardization_std`` (per band) and ``seg_thresh``.

What the plugin does with a tile fixes what the model must be:

- it reads the layer's first N bands as uint8, divides by 255, then subtracts
  ``standardization_mean`` and divides by ``standardization_std``: eoseg's
  ``(x - mean) / std`` on the 0..255 scale is that with mean / 255 and std / 255, for
  models fed the image's first bands in order, with no band reordering and no extra
  sources (a DSM is not part of the layer);
- it zeroes every output below ``seg_thresh``, then takes the argmax over the classes: the
  model ends with a softmax (scores in 0..1) and the threshold is 0, so each pixel takes
  the class eoseg would give it from the same window;
- its tiles are square, of the model's fixed input size.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.grid import PIXEL_SIZE_TOLERANCE, pixel_size_range
from eoseg.io import raster_info
from eoseg.tiles import existing_path

MODEL_TYPE = "Segmentor"
UINT8_MAX = 255.0


class Softmaxed(nn.Module):
    """``model`` followed by a softmax over the classes: per-class probabilities, as Deepness expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.in_channels = model.in_channels
        self.num_classes = model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def check_deepness_inputs(cfg: Config, record: dict) -> None:
    """Refuse weights whose inputs the plugin cannot give them."""
    normalization = record["signature"]["normalization"]
    bands = len(normalization["mean"])
    trained_dtype = record["signature"].get("input_dtype")
    if trained_dtype not in (None, "uint8"):
        raise EosegError(f"these weights were trained on {trained_dtype} imagery, and Deepness feeds 8-bit values "
                         "(divided by 255): export weights trained on uint8 imagery")
    if normalization.get("band_order") is not None:
        raise EosegError("these weights reorder the image's bands (Caffe weights); Deepness feeds a layer's bands "
                         "in order, so convert them to eoseg weights trained on that order first")
    if list(cfg.stacked_band_names) != list(cfg.BAND_NAMES) or list(cfg.BANDS) != list(range(1, bands + 1)):
        raise EosegError(f"Deepness feeds a layer's first {bands} bands as they are; these weights take "
                         f"{list(cfg.stacked_band_names)} (BANDS {list(cfg.BANDS)}): export weights trained "
                         f"on bands 1..{bands} of the image and no other sources")


def training_resolution_cm(cfg: Config, record: dict) -> float | None:
    """Centimetres per pixel of the training imagery: as the weights ``record`` holds it, else from
    the training tiles' transforms; None when unknown (tiles not at hand or not georeferenced) or
    not one size."""
    sizes = record["signature"].get("pixel_size_m")
    if sizes is None:
        try:
            infos = [raster_info(existing_path(cfg, "IMAGE_PATTERN", tile_id, "image"), "image")
                     for tile_id in cfg.tile_ids("train")]
        except EosegError:
            return None
        sizes = pixel_size_range(infos)
    if sizes is None or sizes[1] > sizes[0] * PIXEL_SIZE_TOLERANCE:
        return None
    return round((sizes[0] + sizes[1]) / 2 * 100, 6)


def deepness_metadata(cfg: Config, record: dict, tile_size: int, resolution_cm: float) -> dict[str, str]:
    """The Deepness keys, each value JSON text, for an eoseg weights ``record`` exported with a
    ``tile_size`` px input; the overlap follows WINDOW and STRIDE."""
    normalization = record["signature"]["normalization"]
    if not resolution_cm > 0:
        raise EosegError(f"the resolution must be a positive number of cm per pixel, got {resolution_cm}")
    overlap = round(100 * (cfg.WINDOW - cfg.STRIDE) / cfg.WINDOW)
    values = {
        "model_type": MODEL_TYPE,
        "class_names": {str(i): name for i, name in enumerate(record["signature"]["class_names"])},
        "resolution": float(resolution_cm),
        "tile_size": int(tile_size),
        "tiles_overlap": int(overlap),
        "standardization_mean": [m / UINT8_MAX for m in normalization["mean"]],
        "standardization_std": [s / UINT8_MAX for s in normalization["std"]],
        "seg_thresh": 0.0,  # every pixel takes its best class, as in eoseg
    }
    return {key: json.dumps(value) for key, value in values.items()}
