"""Inference-time rewrites of a trained network that keep its outputs (up to float rounding)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from eoseg.models.segnet import LayeredNet


class ConvReLU(nn.Module):
    """A 3x3 convolution and the ReLU after it as one oneDNN kernel (CPU, float32 or bfloat16).

    The ReLU is applied to the convolution's output while it is still in cache, instead
    of in a second pass over memory.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias  # shared, not copied: a full SegNet's weights are 117 MB
        self.padding, self.stride, self.dilation, self.groups = conv.padding, conv.stride, conv.dilation, conv.groups
        self.out_channels = conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, list(self.padding), list(self.stride),
                                                        list(self.dilation), self.groups, "relu", [], "")


def can_fuse_relu(device: torch.device) -> bool:
    """Whether :class:`ConvReLU` runs on ``device``: oneDNN's fused kernels exist on CPU only."""
    return device.type == "cpu" and torch.backends.mkldnn.is_available()


def fold_batchnorm(model: nn.Module, fuse_relu: bool = False) -> nn.Module:
    """A copy of ``model`` in eval mode with each batch norm folded into the convolution before it.

    In eval mode batch norm is an affine map per channel, so it can be merged into the
    convolution's weights and bias: one pass over the data less per layer. With
    ``fuse_relu`` (CPU, not under autocast: see :func:`can_fuse_relu`) each convolution also runs
    with its ReLU as one kernel. Layers are found in every :class:`LayeredNet` the model holds.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, LayeredNet):
            continue
        for name in module.layer_names:
            conv: nn.Conv2d = getattr(module, name)
            bn: nn.BatchNorm2d = getattr(module, name + "_bn")
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                               conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
            with torch.no_grad():
                folded.weight.copy_(conv.weight.detach() * scale.view(-1, 1, 1, 1))
                folded.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
            folded = folded.to(conv.weight.device)
            setattr(module, name + "_bn", nn.Identity())
            if fuse_relu and conv.padding_mode == "zeros":
                setattr(module, name, ConvReLU(folded))
                setattr(module, name + "_relu", nn.Identity())
            else:
                setattr(module, name, folded)
    return fused
