"""The model registry: config MODEL names -> constructors."""

from __future__ import annotations

from torch import nn

from eoseg.errors import EosegError
from eoseg.models.fusion import FuseNet, LateFusionSegNet
from eoseg.models.multiscale import MultiScaleSegNet
from eoseg.models.resnet import RESNETS
from eoseg.models.segnet import SegNet
from eoseg.models.unet import UNet
from eoseg.models.unetformer import UNetFormer

MODELS = {
    "segnet": SegNet,  # SegNet on all stacked bands (early fusion when they come from several sources)
    "segnet_multiscale": MultiScaleSegNet,  # + predictions at 1/8, 1/4, 1/2 scale, deep supervision
    "fusenet": FuseNet,  # two encoders (optical, auxiliary) summed at every block, one decoder
    "segnet_late_fusion": LateFusionSegNet,  # a SegNet per source, averaged, plus residual correction
    "unet": UNet,  # U-Net decoder on a ResNet encoder (ENCODER)
    "unetformer": UNetFormer,  # UNetFormer (Wang et al. 2022): ResNet encoder, global-local transformer decoder, auxiliary head
}


def build_model(name: str, in_channels: int, num_classes: int, width: float = 1.0,
                stream_bands: int | None = None, encoder: str | None = None) -> nn.Module:
    """A model of the registry; two-stream models feed their first ``stream_bands`` bands to the optical stream,
    models with a choice of encoder (``encoder_choice``) are built on ``encoder`` (a name of RESNETS)."""
    if name not in MODELS:
        raise EosegError(f"unknown MODEL {name!r}; available: {', '.join(sorted(MODELS))}")
    constructor = MODELS[name]
    if uses_encoder(name):
        if encoder not in RESNETS:
            raise EosegError(f"MODEL {name!r} needs ENCODER, one of {', '.join(RESNETS)}; got {encoder!r}")
        return constructor(in_channels=in_channels, num_classes=num_classes, width=width, encoder=encoder)
    if not constructor.two_stream:
        return constructor(in_channels=in_channels, num_classes=num_classes, width=width)
    if stream_bands is None or not 0 < stream_bands < in_channels:
        raise EosegError(f"MODEL {name!r} has two streams: it needs bands for each, but STREAM_BANDS gives "
                         f"{stream_bands} of {in_channels} bands to the first; add an auxiliary source (EXTRA_SOURCES) "
                         "or set STREAM_BANDS")
    return constructor(in_channels=in_channels, num_classes=num_classes, width=width, stream_bands=stream_bands)


def uses_encoder(name: str) -> bool:
    """Whether registry model ``name`` is built on an encoder that ENCODER chooses."""
    return getattr(MODELS.get(name), "encoder_choice", False)


def first_stream_bands(cfg) -> int:
    """Bands of a two-stream model's first (optical) stream: STREAM_BANDS, or the image's own BANDS."""
    return cfg.STREAM_BANDS or len(cfg.BANDS)


def model_from_config(cfg) -> nn.Module:
    return build_model(cfg.MODEL, cfg.num_bands, cfg.num_classes, cfg.MODEL_WIDTH, first_stream_bands(cfg), cfg.ENCODER)
