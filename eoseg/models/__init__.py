"""The model registry: config MODEL names -> constructors."""

from __future__ import annotations

from torch import nn

from eoseg.errors import EosegError
from eoseg.models.segnet import SegNet

MODELS = {"segnet": SegNet}


def build_model(name: str, in_channels: int, num_classes: int, width: float = 1.0) -> nn.Module:
    if name not in MODELS:
        raise EosegError(f"unknown MODEL {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](in_channels=in_channels, num_classes=num_classes, width=width)


def model_from_config(cfg) -> nn.Module:
    return build_model(cfg.MODEL, cfg.num_bands, cfg.num_classes, cfg.MODEL_WIDTH)
