"""The method's networks for two co-registered inputs: optical bands and an auxiliary source.

The first ``stream_bands`` bands of the stacked input (the image's BANDS by default) feed
the optical stream, the rest (nDSM, DSM, NDVI, the method's composite...) the auxiliary
stream. Stacking both into one SegNet is early fusion: plain ``segnet`` with more bands.

- :class:`FuseNet`: two VGG16 encoders; after each encoder block the auxiliary features
  are added to the optical ones, which then pool and feed one SegNet decoder (Hazirbas et
  al., ACCV 2016, as used by Audebert et al., ISPRS J. 2018).
- :class:`LateFusionSegNet`: two full SegNets, one per source; their score maps are
  averaged and a small residual correction network reading both streams' last features
  adds what the average gets wrong (Audebert et al., ACCV 2016). In training mode the
  streams' own scores are returned too, so that each stream is supervised.
"""

from __future__ import annotations

import torch
from torch import nn

from eoseg.models.segnet import CLASSIFIER, DECODER, ENCODER, LayeredNet, SegNet, scaled


class TwoStreamNet(LayeredNet):
    """A network whose first ``stream_bands`` input bands feed one stream and the rest another."""

    two_stream = True

    def __init__(self, in_channels: int, num_classes: int, width: float, stream_bands: int):
        super().__init__()
        self.in_channels, self.num_classes, self.width = in_channels, num_classes, width
        self.stream_bands = stream_bands

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(optical bands, auxiliary bands) of a stacked batch."""
        return x[:, :self.stream_bands], x[:, self.stream_bands:]


class FuseNet(TwoStreamNet):
    def __init__(self, in_channels: int, num_classes: int = 6, width: float = 1.0, stream_bands: int = 3):
        super().__init__(in_channels, num_classes, width, stream_bands)
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.encoder_blocks, channels = self.add_blocks(ENCODER, stream_bands, width)
        self.auxiliary_blocks, _ = self.add_blocks(ENCODER, in_channels - stream_bands, width, prefix="aux_")
        self.decoder_blocks, channels = self.add_blocks(DECODER, channels, width)
        self.add_module(CLASSIFIER, nn.Conv2d(channels, num_classes, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        optical, auxiliary = self.split(x)
        indices, sizes = [], []
        last = len(self.encoder_blocks) - 1
        for index, (block, auxiliary_block) in enumerate(zip(self.encoder_blocks, self.auxiliary_blocks)):
            for name in block:
                optical = self.layer(optical, name)
            for name in auxiliary_block:
                auxiliary = self.layer(auxiliary, name)
            optical = optical + auxiliary
            sizes.append(optical.shape[-2:])
            optical, idx = self.pool(optical)
            indices.append(idx)
            if index < last:  # the auxiliary stream keeps its own pooling
                auxiliary, _ = self.pool(auxiliary)
        for block in self.decoder_blocks:
            optical = self.unpool(optical, indices.pop(), output_size=sizes.pop())
            for name in block:
                optical = self.layer(optical, name)
        return getattr(self, CLASSIFIER)(optical)

    def vgg_encoders(self) -> list[tuple[LayeredNet, list[str]]]:
        return [(self, [n for block in blocks for n in block]) for blocks in (self.encoder_blocks, self.auxiliary_blocks)]


class LateFusionSegNet(TwoStreamNet):
    def __init__(self, in_channels: int, num_classes: int = 6, width: float = 1.0, stream_bands: int = 3):
        super().__init__(in_channels, num_classes, width, stream_bands)
        self.optical = SegNet(stream_bands, num_classes, width)
        self.auxiliary = SegNet(in_channels - stream_bands, num_classes, width)
        channels = self.optical.feature_channels + self.auxiliary.feature_channels
        for name in ("correction_1", "correction_2"):
            channels = self.add_layer(name, channels, scaled(64, width))
        self.correction_scores = nn.Conv2d(channels, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        optical_input, auxiliary_input = self.split(x)
        optical_features = self.optical.features(optical_input)
        auxiliary_features = self.auxiliary.features(auxiliary_input)
        optical = getattr(self.optical, CLASSIFIER)(optical_features)
        auxiliary = getattr(self.auxiliary, CLASSIFIER)(auxiliary_features)
        correction = torch.cat([optical_features, auxiliary_features], dim=1)
        for name in ("correction_1", "correction_2"):
            correction = self.layer(correction, name)
        scores = (optical + auxiliary) / 2 + self.correction_scores(correction)
        return (scores, optical, auxiliary) if self.training else scores

    def vgg_encoders(self) -> list[tuple[LayeredNet, list[str]]]:
        return self.optical.vgg_encoders() + self.auxiliary.vgg_encoders()
