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


class SplitBfloat16Input(nn.Module):
    """A layer that reads the network's input, in bfloat16 at nearly float32's precision.

    bfloat16 keeps 8 significant bits: rounding the normalised image to it moves a pixel by
    up to a few tenths of a grey level, as much as the sensor's own quantisation step, and
    that alone changes labels where two classes score almost alike; so does rounding this
    layer's weights, which see the raw image. The rounding of the features further on
    matters far less (bench/RESULTS.md). So input and weights are each split into a high and
    a low bfloat16 part, and one convolution over the bands [high, low, high] with the
    weights [high, high, low] sums the three products that carry 16 significant bits, in
    the convolution's float32 accumulator: a few more input bands, at bfloat16's speed
    (float32 here, and its cast to bfloat16, took 2.4x this layer's time).
    Built from a float32 layer (a groups-1 :class:`nn.Conv2d` or :class:`ConvReLU`); the
    cast of the network to bfloat16 then rounds the low parts.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        weight = layer.weight.detach()
        high = weight.to(torch.bfloat16).float()
        padding_mode = getattr(layer, "padding_mode", "zeros")
        wide = nn.Conv2d(3 * weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), layer.stride, layer.padding,
                         layer.dilation, bias=layer.bias is not None, padding_mode=padding_mode, device=weight.device)
        with torch.no_grad():
            wide.weight.copy_(torch.cat([high, high, weight - high], dim=1))
            if layer.bias is not None:
                wide.bias.copy_(layer.bias.detach())
        self.layer = ConvReLU(wide) if isinstance(layer, ConvReLU) else wide

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high = x.to(self.layer.weight.dtype)
        low = (x - high).to(high.dtype)  # exact in float32: high is x rounded
        return self.layer(torch.cat([high, low, high], dim=1))


def input_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the convolutions of ``model`` that read its input ``example`` (or a band slice of it).

    Found by running ``example`` once: a two-stream model has one per stream. A convolution
    that reads a computed copy of the input (resized, normalised inside the network) is
    not one: then the list is empty, or, should a model read the input both ways, short
    (every registry model is checked in tests/test_fusion_models.py).
    """
    storage = example.untyped_storage().data_ptr()
    found, hooks = [], []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, ConvReLU)):
            def record(module, args, name=name):
                if args[0].untyped_storage().data_ptr() == storage:
                    found.append(name)
            hooks.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return found


def split_input_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Replace the input layers of ``model`` (float32, in place) by :class:`SplitBfloat16Input`.

    Returns their names; the caller then casts the model to bfloat16 and hands it its input
    in float32. None is replaced (an empty list) where :func:`input_layers` finds none or
    one is grouped: then the input is cast with the network.
    """
    names = input_layers(model, example)
    if not names or any(model.get_submodule(name).groups != 1 for name in names):
        return []
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, SplitBfloat16Input(model.get_submodule(name)))
    return names


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
