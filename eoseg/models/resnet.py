"""ResNet encoders (He et al., CVPR 2016) for the U-Net and UNetFormer decoders.

Layer names and, at ``width`` 1.0, shapes are those of torchvision's ``resnet18``,
``resnet34`` and ``resnet50`` (conv1, bn1, layer1.0.conv1, ..., layerN.0.downsample.0/1;
no ``fc``), which timm's ResNets share, so that their published state dicts load by name
(eoseg.models.encoder_weights). The encoder returns the features of every stage: the
stem's at 1/2 of the input size, then layer1..layer4 at 1/4, 1/8, 1/16 and 1/32.
"""

from __future__ import annotations

import torch
from torch import nn

from eoseg.models.segnet import scaled

STAGE_WIDTHS = (64, 128, 256, 512)  # planes of layer1..layer4 at width 1.0
# name -> (block kind, blocks per stage)
RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))  # folded by eoseg.models.fuse

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetEncoder(nn.Module):
    """A ResNet without its classifier, channels scaled by ``width`` (1.0 = the published network)."""

    conv_bn_pairs = (("conv1", "bn1"),)

    def __init__(self, name: str, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        kind, depths = RESNETS[name]
        block = BLOCKS[kind]
        self.name, self.block_kind, self.depths = name, kind, depths
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = stem
        self.out_channels = [stem]  # of each returned feature map, finest first
        for stage, (planes, blocks) in enumerate(zip(STAGE_WIDTHS, depths), start=1):
            planes = scaled(planes, width)
            stride = 1 if stage == 1 else 2
            downsample = None
            if stride != 1 or channels != planes * block.expansion:
                downsample = nn.Sequential(conv1x1(channels, planes * block.expansion, stride),
                                           nn.BatchNorm2d(planes * block.expansion))
            layers = [block(channels, planes, stride, downsample)]
            channels = planes * block.expansion
            layers += [block(channels, planes) for _ in range(1, blocks)]
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
            self.out_channels.append(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at 1/2 (stem), 1/4, 1/8, 1/16 and 1/32 of the input size."""
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
            features.append(x)
        return features


class EncoderDecoderNet(nn.Module):
    """A segmentation network on a ResNet encoder (``self.encoder``), with the registry's interface.

    The encoder's parameters are those that encoder weights initialise and that train at
    BASE_LR * ENCODER_LR_FACTOR; every other parameter is the decoder's.
    """

    two_stream = False
    encoder_choice = True  # the registry passes ENCODER

    def __init__(self, in_channels: int, num_classes: int, width: float, encoder: str):
        super().__init__()
        self.in_channels, self.num_classes, self.width, self.encoder_name = in_channels, num_classes, width, encoder
        self.encoder = ResNetEncoder(encoder, in_channels, width)

    def encoder_parameters(self):
        return self.encoder.parameters()

    def decoder_parameters(self):
        encoder = {id(p) for p in self.encoder.parameters()}
        return (p for p in self.parameters() if id(p) not in encoder)
