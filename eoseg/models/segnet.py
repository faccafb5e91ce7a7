"""SegNet as used by the SegNet-for-Earth-Observation method.

Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017; Audebert, Le Saux & Lefèvre,
"Semantic Segmentation of Earth Observation Data Using Multimodal and Multi-scale Deep
Networks", ACCV 2016.

Encoder: the 13 convolutions of VGG16, each followed by batch norm and ReLU, in five
blocks closed by 2x2 max pooling that remembers its indices. Decoder: the mirror image,
each block opened by max-unpooling with the matching encoder indices; a final 3x3
convolution gives the class scores. Layer names follow the method's Caffe and PyTorch
models (conv1_1 ... conv5_3, conv5_3_D ... conv1_1_D) so that published weights map by name.
"""

from __future__ import annotations

import torch
from torch import nn

# (block, [(layer name, output channels of the full-width model), ...])
ENCODER = [
    [("conv1_1", 64), ("conv1_2", 64)],
    [("conv2_1", 128), ("conv2_2", 128)],
    [("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256)],
    [("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512)],
    [("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)],
]
# Decoder blocks, deepest first; the last layer (conv1_1_D) is the classifier.
DECODER = [
    [("conv5_3_D", 512), ("conv5_2_D", 512), ("conv5_1_D", 512)],
    [("conv4_3_D", 512), ("conv4_2_D", 512), ("conv4_1_D", 256)],
    [("conv3_3_D", 256), ("conv3_2_D", 256), ("conv3_1_D", 128)],
    [("conv2_2_D", 128), ("conv2_1_D", 64)],
    [("conv1_2_D", 64)],
]
CLASSIFIER = "conv1_1_D"


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class SegNet(nn.Module):
    """SegNet with a channel ``width`` multiplier (1.0 = the published network)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 6, width: float = 1.0):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.width = width
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.encoder_blocks: list[list[str]] = []
        self.decoder_blocks: list[list[str]] = []
        channels = in_channels
        for block in ENCODER:
            channels = self._add_block(block, channels, width, self.encoder_blocks)
        for block in DECODER:
            channels = self._add_block(block, channels, width, self.decoder_blocks)
        self.add_module(CLASSIFIER, nn.Conv2d(channels, num_classes, 3, padding=1))

    def _add_block(self, block, channels: int, width: float, names: list[list[str]]) -> int:
        names.append([])
        for name, full_width_out in block:
            out = scaled(full_width_out, width)
            self.add_module(name, nn.Conv2d(channels, out, 3, padding=1))
            self.add_module(name + "_bn", nn.BatchNorm2d(out))
            names[-1].append(name)
            channels = out
        return channels

    def _conv_bn_relu(self, x: torch.Tensor, name: str) -> torch.Tensor:
        # in place: the batch-norm output is not needed again, and a fresh tensor costs a pass over memory
        return torch.relu_(getattr(self, name + "_bn")(getattr(self, name)(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices, sizes = [], []
        for block in self.encoder_blocks:
            for name in block:
                x = self._conv_bn_relu(x, name)
            sizes.append(x.shape[-2:])
            x, idx = self.pool(x)
            indices.append(idx)
        for block in self.decoder_blocks:
            x = self.unpool(x, indices.pop(), output_size=sizes.pop())
            for name in block:
                x = self._conv_bn_relu(x, name)
        return getattr(self, CLASSIFIER)(x)

    def encoder_parameters(self):
        """Parameters of the VGG16 part (trained at a reduced learning rate)."""
        for block in self.encoder_blocks:
            for name in block:
                yield from getattr(self, name).parameters()
                yield from getattr(self, name + "_bn").parameters()

    def decoder_parameters(self):
        encoder = {id(p) for p in self.encoder_parameters()}
        return (p for p in self.parameters() if id(p) not in encoder)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(convolution, batch norm) attribute names, for folding batch norm at inference."""
        return [(name, name + "_bn") for block in self.encoder_blocks + self.decoder_blocks for name in block]

    def encoder_layer_names(self) -> list[str]:
        return [name for block in self.encoder_blocks for name in block]
