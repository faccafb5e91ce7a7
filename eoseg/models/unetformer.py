"""UNetFormer (Wang et al., "UNetFormer: A UNet-like transformer for efficient semantic
segmentation of remote sensing urban scene imagery", ISPRS J. Photogramm. 2022).

A ResNet-18 encoder (ENCODER may name another ResNet) and a light decoder at 1/4 of the
input size:

- global-local transformer blocks at 1/32, 1/16 and 1/8: the global branch is
  multi-head self-attention within 8x8 windows (with a learnt relative position bias),
  followed by horizontal and vertical average pooling across windows; the local branch
  is a 3x3 and a 1x1 convolution; their sum goes through a depthwise-separable
  convolution, then an MLP of 1x1 convolutions;
- weighted-sum fusion of each skip connection with the upsampled decoder features
  (two learnt, non-negative weights normalised to sum to 1);
- a feature refinement head at 1/4: spatial (depthwise convolution) and channel
  (squeeze-excitation) attention over the fused features, with a residual path;
- an auxiliary head on the sum of the three transformer blocks' outputs (brought to
  1/8), used in training only: in training mode the network returns (scores, auxiliary
  scores), both at the input size, and eoseg.train.supervised_loss weights the second
  by AUX_LOSS_WEIGHT (the paper: 0.4).

Where this differs from the authors' code, for any input size and for ONNX export:
feature maps whose sides are not multiples of the window are padded with zeros and the
padded positions are masked out of the attention (instead of reflect padding, which
fails on maps smaller than the window), the one-pixel pads before pooling replicate the
edge (reflect fails on one-pixel maps), and upsampling goes to the skip's size rather
than by a fixed factor. Channels scale with ``width`` (64 decoder channels at 1.0, in
multiples of the 8 heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eoseg.models.resnet import EncoderDecoderNet

DECODER_CHANNELS = 64
HEADS = 8
WINDOW = 8
MLP_RATIO = 4
DROPOUT = 0.1


def conv(in_channels: int, out_channels: int, kernel: int = 3, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, padding=(kernel - 1) // 2, groups=groups, bias=bias)


def conv_bn(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    # Sequentials of convolution then batch norm: eoseg.models.fuse folds them
    return nn.Sequential(conv(in_channels, out_channels, kernel), nn.BatchNorm2d(out_channels))


def conv_bn_relu6(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(conv(in_channels, out_channels, kernel), nn.BatchNorm2d(out_channels), nn.ReLU6())


def separable_conv_bn(channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(conv(channels, channels, kernel, groups=channels), nn.BatchNorm2d(channels), conv(channels, channels, 1))


class GlobalLocalAttention(nn.Module):
    def __init__(self, dim: int, heads: int = HEADS, window: int = WINDOW):
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.qkv = conv(dim, 3 * dim, 1)
        self.local1 = conv_bn(dim, dim, 3)
        self.local2 = conv_bn(dim, dim, 1)
        self.proj = separable_conv_bn(dim, window)
        # stride-1 averages over a window's length across the map: links neighbouring windows
        self.attn_x = nn.AvgPool2d((window, 1), stride=1, padding=(window // 2 - 1, 0))
        self.attn_y = nn.AvgPool2d((1, window), stride=1, padding=(0, window // 2 - 1))
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", relative[..., 0] * (2 * window - 1) + relative[..., 1],
                             persistent=False)

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention within each window of ``window`` x ``window`` pixels (the global branch's core)."""
        batch, channels, height, width = x.shape
        ws, heads = self.window, self.heads
        pad_h, pad_w = (ws - height % ws) % ws, (ws - width % ws) % ws
        qkv = self.qkv(F.pad(x, (0, pad_w, 0, pad_h)))
        rows, cols = (height + pad_h) // ws, (width + pad_w) // ws
        # (3, batch * windows, heads, pixels of a window, channels per head)
        qkv = (qkv.reshape(batch, 3, heads, channels // heads, rows, ws, cols, ws)
               .permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, batch * rows * cols, heads, ws * ws, channels // heads))
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        dots = (q @ k.transpose(-2, -1)) * self.scale + bias.reshape(ws * ws, ws * ws, heads).permute(2, 0, 1)
        # padded pixels are no keys: a window always holds a real pixel, so no row is all masked
        valid = F.pad(x.new_ones(1, 1, height, width), (0, pad_w, 0, pad_h))
        valid = valid.reshape(1, rows, ws, cols, ws).permute(0, 1, 3, 2, 4).reshape(1, rows * cols, 1, 1, ws * ws)
        dots = dots.reshape(batch, rows * cols, heads, ws * ws, ws * ws).masked_fill(valid == 0, float("-inf"))
        attention = dots.softmax(dim=-1).reshape(batch * rows * cols, heads, ws * ws, ws * ws) @ v
        return (attention.reshape(batch, rows, cols, heads, ws, ws, channels // heads)
                .permute(0, 3, 6, 1, 4, 2, 5).reshape(batch, channels, rows * ws, cols * ws))[:, :, :height, :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        local = self.local2(x) + self.local1(x)
        attention = self.window_attention(x)
        out = (self.attn_x(F.pad(attention, (0, 0, 0, 1), mode="replicate"))
               + self.attn_y(F.pad(attention, (0, 1, 0, 0), mode="replicate")))
        out = self.proj(F.pad(out + local, (0, 1, 0, 1), mode="replicate"))
        return out[:, :, :height, :width]


class TransformerBlock(nn.Module):
    """Global-local attention then an MLP, each on batch-normalised input with a residual path."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = GlobalLocalAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = nn.Sequential(conv(dim, dim * MLP_RATIO, 1, bias=True), nn.ReLU6(), conv(dim * MLP_RATIO, dim, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class WeightedFusion(nn.Module):
    """Upsampled decoder features and a skip connection, summed with learnt normalised weights."""

    EPS = 1e-8

    def __init__(self, skip_channels: int, channels: int):
        super().__init__()
        self.pre_conv = conv(skip_channels, channels, 1)
        self.fuse_weights = nn.Parameter(torch.ones(2))
        self.post_conv = conv_bn_relu6(channels, channels)

    def fuse(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        weights = F.relu(self.fuse_weights)
        weights = weights / (weights.sum() + self.EPS)
        return self.post_conv(weights[0] * self.pre_conv(skip) + weights[1] * x)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(x, skip)


class FeatureRefinementHead(WeightedFusion):
    """Weighted fusion with the finest skip, refined by spatial and channel attention."""

    def __init__(self, skip_channels: int, channels: int):
        super().__init__(skip_channels, channels)
        self.pa = nn.Sequential(conv(channels, channels, 3, groups=channels, bias=True), nn.Sigmoid())
        squeezed = max(1, channels // 16)
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv(channels, squeezed, 1), nn.ReLU6(), conv(squeezed, channels, 1),
                                nn.Sigmoid())
        self.shortcut = conv_bn(channels, channels, 1)
        self.proj = separable_conv_bn(channels, 3)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.fuse(x, skip)
        refined = self.pa(x) * x + self.ca(x) * x
        return self.act(self.proj(refined) + self.shortcut(x))


class UNetFormer(EncoderDecoderNet):
    def __init__(self, in_channels: int = 3, num_classes: int = 6, width: float = 1.0, encoder: str = "resnet18"):
        super().__init__(in_channels, num_classes, width, encoder)
        channels = HEADS * max(1, round(DECODER_CHANNELS * width / HEADS))
        skip1, skip2, skip3, deepest = self.encoder.out_channels[1:]  # layer1..layer4
        self.pre_conv = conv_bn(deepest, channels, 1)
        self.b4 = TransformerBlock(channels)
        self.p3, self.b3 = WeightedFusion(skip3, channels), TransformerBlock(channels)
        self.p2, self.b2 = WeightedFusion(skip2, channels), TransformerBlock(channels)
        self.p1 = FeatureRefinementHead(skip1, channels)
        self.segmentation_head = nn.Sequential(conv_bn_relu6(channels, channels), nn.Dropout2d(DROPOUT),
                                               conv(channels, num_classes, 1))
        self.aux_head = nn.Sequential(conv_bn_relu6(channels, channels), nn.Dropout(DROPOUT), conv(channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        _, res1, res2, res3, res4 = self.encoder(x)
        d4 = self.b4(self.pre_conv(res4))
        d3 = self.b3(self.p3(d4, res3))
        d2 = self.b2(self.p2(d3, res2))
        scores = self.segmentation_head(self.p1(d2, res1))
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        if not self.training:
            return scores
        at_eighth = [F.interpolate(d, size=d2.shape[-2:], mode="bilinear", align_corners=False) for d in (d4, d3)]
        auxiliary = self.aux_head(at_eighth[0] + at_eighth[1] + d2)
        return scores, F.interpolate(auxiliary, size=size, mode="bilinear", align_corners=False)
