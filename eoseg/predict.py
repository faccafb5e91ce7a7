"""Sliding-window labeling of whole images with a trained network.

Windows are cut in batches, normalised, run through the network and their scores
summed into a float32 accumulator on the model's device; the class of a pixel is the
argmax of the summed scores (the method's uniform blending of overlapping windows).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eoseg.geometry import sliding_windows
from eoseg.normalization import Normalization


class Predictor:
    """Labels (C, H, W) images of any size with ``model`` using a sliding window."""

    def __init__(self, model: nn.Module, normalization: Normalization, window: int, stride: int, batch_size: int,
                 device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.normalization = normalization
        self.window = window
        self.stride = stride
        self.batch_size = batch_size
        self.device = torch.device(device)

    @torch.inference_mode()
    def scores(self, image: np.ndarray) -> torch.Tensor:
        """Summed class scores (num_classes, H, W), float32, on the model's device."""
        _, height, width = image.shape
        pixels = torch.from_numpy(np.ascontiguousarray(image))
        # an image smaller than the window is padded by reflection, then cropped back
        pad_h, pad_w = max(0, self.window - height), max(0, self.window - width)
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"  # reflect needs pad < size
            pixels = torch.nn.functional.pad(pixels[None].float(), (0, pad_w, 0, pad_h), mode=mode)[0]
        full_h, full_w = height + pad_h, width + pad_w
        windows = list(sliding_windows(full_h, full_w, self.window, self.stride))
        total = None
        w = self.window
        for start in range(0, len(windows), self.batch_size):
            batch_windows = windows[start:start + self.batch_size]
            batch = torch.stack([pixels[:, r:r + w, c:c + w] for r, c in batch_windows]).to(self.device)
            out = self.model(self.normalization.apply(batch)).float()
            if total is None:
                total = torch.zeros((out.shape[1], full_h, full_w), dtype=torch.float32, device=self.device)
            for (r, c), window_scores in zip(batch_windows, out):
                total[:, r:r + w, c:c + w] += window_scores
        return total[:, :height, :width]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class ids."""
        return self.scores(image).argmax(0).to(torch.uint8).cpu().numpy()
