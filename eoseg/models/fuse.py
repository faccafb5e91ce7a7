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


def can_fuse_relu(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether :class:`ConvReLU` runs on ``device`` in ``dtype``.

    oneDNN's fused kernels exist on CPU only, and in bfloat16 only where the CPU has the
    instructions oneDNN's bfloat16 convolution needs (AVX-512 BW/VL/DQ or AVX-NE-CONVERT): on
    an AVX2-only CPU the unfused convolution runs bfloat16 instead of failing.
    """
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The convolution that gives ``bn(conv(x))`` in eval mode: batch norm is an affine map per channel."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        folded.weight.copy_(conv.weight.detach() * scale.view(-1, 1, 1, 1))
        folded.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    return folded.to(conv.weight.device)


def conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(convolution, batch norm) child names of ``module`` whose batch norm reads that convolution's output.

    Declared by the module (``conv_bn_pairs``, as the ResNet blocks do), or found in a
    Sequential as a Conv2d directly followed by a BatchNorm2d.
    """
    pairs = list(getattr(module, "conv_bn_pairs", ()))
    if isinstance(module, nn.Sequential):
        children = list(module.named_children())
        pairs += [(conv_name, bn_name) for (conv_name, conv), (bn_name, bn) in zip(children, children[1:])
                  if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)]
    return pairs


def fold_batchnorm(model: nn.Module, fuse_relu: bool = False) -> nn.Module:
    """A copy of ``model`` in eval mode with each batch norm folded into the convolution before it.

    In eval mode batch norm is an affine map per channel, so it can be merged into the
    convolution's weights and bias: one pass over the data less per layer. With
    ``fuse_relu`` (CPU, not under autocast: see :func:`can_fuse_relu`) each convolution of a
    :class:`LayeredNet` also runs with its ReLU as one kernel. Layers are found in every
    :class:`LayeredNet` the model holds, and as :func:`conv_bn_pairs` elsewhere; a batch
    norm that follows no convolution (a transformer block's pre-normalisation) stays.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, LayeredNet):
            for conv_name, bn_name in conv_bn_pairs(module):
                setattr(module, conv_name, folded_conv(getattr(module, conv_name), getattr(module, bn_name)))
                setattr(module, bn_name, nn.Identity())
            continue
        for name in module.layer_names:
            conv: nn.Conv2d = getattr(module, name)
            folded = folded_conv(conv, getattr(module, name + "_bn"))
            setattr(module, name + "_bn", nn.Identity())
            if fuse_relu and conv.padding_mode == "zeros":
                setattr(module, name, ConvReLU(folded))
                setattr(module, name + "_relu", nn.Identity())
            else:
                setattr(module, name, folded)
    return fused
