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

from abc import ABCMeta, abstractmethod
from typing import Iterator

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


class LayeredNet(nn.Module, metaclass=ABCMeta):
    """A network built from named layers of 3x3 convolution, batch norm and ReLU.

    Layer X is three attributes, X (Conv2d), X_bn and X_relu, so that published weights
    map by name and inference can fold X_bn into X and run X with X_relu as one kernel
    (eoseg.models.fuse). Subclasses add their layers with :meth:`add_layer` and name
    their VGG16 encoders in :meth:`vgg_encoders`.
    """

    def __init__(self):
        super().__init__()
        self.layer_names: list[str] = []

    def add_layer(self, name: str, in_channels: int, out_channels: int) -> int:
        self.add_module(name, nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.add_module(name + "_bn", nn.BatchNorm2d(out_channels))
        # in place: the batch-norm output is not needed again, and a fresh tensor costs a pass over memory
        self.add_module(name + "_relu", nn.ReLU(inplace=True))
        self.layer_names.append(name)
        return out_channels

    def add_blocks(self, blocks, channels: int, width: float, prefix: str = "") -> tuple[list[list[str]], int]:
        """Layers of ``blocks`` (ENCODER/DECODER layout) scaled by ``width``: their names and output channels."""
        names = []
        for block in blocks:
            names.append([])
            for name, full_width_out in block:
                channels = self.add_layer(prefix + name, channels, scaled(full_width_out, width))
                names[-1].append(prefix + name)
        return names, channels

    def layer(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return getattr(self, name + "_relu")(getattr(self, name + "_bn")(getattr(self, name)(x)))

    @abstractmethod
    def vgg_encoders(self) -> list[tuple["LayeredNet", list[str]]]:
        """(module, its 13 VGG16 layer names) of every encoder that VGG16-BN weights initialise."""

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the VGG16 parts (trained at a reduced learning rate)."""
        for module, names in self.vgg_encoders():
            for name in names:
                yield from getattr(module, name).parameters()
                yield from getattr(module, name + "_bn").parameters()

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        encoder = {id(p) for p in self.encoder_parameters()}
        return (p for p in self.parameters() if id(p) not in encoder)


class SegNet(LayeredNet):
    """SegNet with a channel ``width`` multiplier (1.0 = the published network)."""

    two_stream = False  # the registry gives two-stream models the number of bands of their first stream

    def __init__(self, in_channels: int = 3, num_classes: int = 6, width: float = 1.0):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.width = width
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.encoder_blocks, channels = self.add_blocks(ENCODER, in_channels, width)
        self.decoder_blocks, channels = self.add_blocks(DECODER, channels, width)
        self.feature_channels = channels
        self.add_module(CLASSIFIER, nn.Conv2d(channels, num_classes, 3, padding=1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Size]]:
        """Deepest features, and the pooling indices and pre-pooling sizes of each block."""
        indices, sizes = [], []
        for block in self.encoder_blocks:
            for name in block:
                x = self.layer(x, name)
            sizes.append(x.shape[-2:])
            x, idx = self.pool(x)
            indices.append(idx)
        return x, indices, sizes

    def decode(self, x: torch.Tensor, indices: list[torch.Tensor], sizes: list[torch.Size]) -> list[torch.Tensor]:
        """The output of each decoder block, deepest first (the last is at full resolution)."""
        outputs = []
        for block, idx, size in zip(self.decoder_blocks, reversed(indices), reversed(sizes)):
            x = self.unpool(x, idx, output_size=size)
            for name in block:
                x = self.layer(x, name)
            outputs.append(x)
        return outputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The full-resolution features the classifier reads."""
        return self.decode(*self.encode(x))[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, CLASSIFIER)(self.features(x))

    def vgg_encoders(self) -> list[tuple[LayeredNet, list[str]]]:
        return [(self, self.encoder_layer_names())]

    def encoder_layer_names(self) -> list[str]:
        return [name for block in self.encoder_blocks for name in block]
