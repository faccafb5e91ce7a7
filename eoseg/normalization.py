"""The one place where raw pixel values become network inputs."""

from __future__ import annotations

import numpy as np
import torch


def normalization_record(mean, std) -> dict:
    """How inputs were normalised, as recorded in LMDBs and checkpoints."""
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def normalize(batch: torch.Tensor, mean, std) -> torch.Tensor:
    """(N, C, H, W) raw values (any dtype) -> float32 ``(x - mean) / std`` per band."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return (batch.float() - mean_t) / std_t


def normalize_numpy(image: np.ndarray, mean, std) -> np.ndarray:
    """(C, H, W) raw values -> float32 normalised array (for plots and small tools)."""
    mean_a = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return (image.astype(np.float32) - mean_a) / std_a
