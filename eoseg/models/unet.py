"""U-Net (Ronneberger et al., MICCAI 2015) with a ResNet encoder.

Five decoder blocks climb from the encoder's 1/32 features back to the input size; each
upsamples (nearest neighbour) to the size of the next finer encoder feature map, joins it
(skip connection) and applies two 3x3 convolutions with batch norm and ReLU. The last
block has no skip: it reaches the full resolution the stem halved. A 3x3 convolution gives
the class scores. Upsampling to the skip's size, not by a fixed factor, lets any input
size through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eoseg.models.resnet import EncoderDecoderNet
from eoseg.models.segnet import scaled

DECODER_WIDTHS = (256, 128, 64, 32, 16)  # output channels of the decoder blocks at width 1.0, deepest first


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    """Convolution, batch norm, ReLU (a Sequential, so that eoseg.models.fuse folds the batch norm)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class _GradientInLayout(torch.autograd.Function):
    """The identity; backward hands the gradient on in the memory layout the input had.

    torch.cat's backward gives each input a channel slice of the joined gradient. In the
    channels_last layout (bfloat16 training) that slice is strided, and the upsampling's backward
    turned it into the contiguous layout and back, slowly: made dense here once, the demo's
    U-Net trains 1.13x faster in bfloat16 at batch 10 x 256 px on a 2-core AMX Xeon (bench/RESULTS.md).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return x.view_as(x)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        return gradient.contiguous(memory_format=ctx.layout)


class DecoderBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, size: torch.Size, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            if x.requires_grad:
                x = _GradientInLayout.apply(x)
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNet(EncoderDecoderNet):
    def __init__(self, in_channels: int = 3, num_classes: int = 6, width: float = 1.0, encoder: str = "resnet18"):
        super().__init__(in_channels, num_classes, width, encoder)
        skips = list(reversed(self.encoder.out_channels[:-1])) + [0]  # 1/16, 1/8, 1/4, 1/2, none
        channels = self.encoder.out_channels[-1]
        blocks = []
        for skip, full_width_out in zip(skips, DECODER_WIDTHS):
            blocks.append(DecoderBlock(channels, skip, scaled(full_width_out, width)))
            channels = blocks[-1].conv2[0].out_channels
        self.decoder = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(channels, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, deepest = self.encoder(x)
        out = deepest
        for block, skip in zip(self.decoder, [*reversed(skips), None]):
            out = block(out, x.shape[-2:] if skip is None else skip.shape[-2:], skip)
        return self.classifier(out)
