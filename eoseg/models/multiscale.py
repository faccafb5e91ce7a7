"""SegNet with multi-scale prediction and deep supervision (Audebert et al., ACCV 2016).

Besides the full-resolution classifier, a 3x3 classifier reads the output of the decoder
blocks at 1/8, 1/4 and 1/2 of the input size. The coarse score maps are upsampled and
summed into the final prediction, so that context from the deep blocks reaches it
directly; in training mode the network also returns the coarse maps, each trained against
the labels at its own scale (deep supervision, see eoseg.train.supervised_loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eoseg.models.segnet import CLASSIFIER, SegNet

# decoder blocks whose outputs get an auxiliary classifier: 1/8, 1/4 and 1/2 of the input size
AUXILIARY_BLOCKS = {1: "score_1_8", 2: "score_1_4", 3: "score_1_2"}


class MultiScaleSegNet(SegNet):
    def __init__(self, in_channels: int = 3, num_classes: int = 6, width: float = 1.0):
        super().__init__(in_channels, num_classes, width)
        for block, name in AUXILIARY_BLOCKS.items():
            channels = getattr(self, self.decoder_blocks[block][-1]).out_channels
            self.add_module(name, nn.Conv2d(channels, num_classes, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = self.decode(*self.encode(x))
        scores = getattr(self, CLASSIFIER)(outputs[-1])
        coarse = [getattr(self, name)(outputs[block]) for block, name in AUXILIARY_BLOCKS.items()]
        for score in coarse:
            scores = scores + F.interpolate(score, size=scores.shape[-2:], mode="bilinear", align_corners=False)
        return (scores, *coarse) if self.training else scores
