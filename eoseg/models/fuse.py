"""Inference-time rewrites of a trained network that keep its outputs (up to float rounding)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with each batch norm folded into the convolution before it.

    In eval mode batch norm is an affine map per channel, so it can be merged into the
    convolution's weights and bias: one pass over the data less per layer. The model
    lists its (conv, batch norm) attribute pairs in ``conv_bn_pairs()``.
    """
    fused = copy.deepcopy(model).eval()
    for conv_name, bn_name in fused.conv_bn_pairs():
        conv: nn.Conv2d = getattr(fused, conv_name)
        bn: nn.BatchNorm2d = getattr(fused, bn_name)
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
        with torch.no_grad():
            folded.weight.copy_(conv.weight.detach() * scale.view(-1, 1, 1, 1))
            folded.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
        setattr(fused, conv_name, folded.to(conv.weight.device))
        setattr(fused, bn_name, nn.Identity())
    return fused
