"""Initialise a network's encoder(s) from a local pretrained state dict (ENCODER_WEIGHTS).

Nothing is downloaded: the file is a torch state dict (``.pth``/``.pt``, loaded with
``weights_only=True``) or a ``.safetensors`` file, in one of the layouts:

- SegNet and the fusion networks: torchvision's ``vgg16_bn`` (``features.N.*``;
  eoseg.models.vgg);
- U-Net and UNetFormer: a ResNet 18, 34 or 50 in torchvision's layout or timm's (the
  two name a plain ResNet's layers alike: conv1, bn1, layer1.0.conv1, ...,
  downsample.0/1, fc), with all keys under one prefix or none (TorchGeo's checkpoints
  may hold ``backbone.``/``encoder.``). The classifier ``fc`` is not used.

Every layer the encoder has must be in the file with its shape, and every ResNet layer in
the file must be one the encoder has: a file that does not fit is refused with one line
naming the layer, never loaded in part. A first layer made for another number of bands
(RGB ImageNet weights, 13-band Sentinel-2 weights) is adapted
(:func:`eoseg.models.pretrained.adapt_first_layer`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from eoseg.errors import EosegError
from eoseg.models.pretrained import first_layer_by_band_name, fit_first_layer, load_state_dict_file, recorded_signature
from eoseg.models.resnet import RESNETS, EncoderDecoderNet
from eoseg.models.segnet import LayeredNet
from eoseg.models.vgg import init_encoder_from_vgg16_bn

FIRST_RESNET_BLOCK = "layer1.0.conv1.weight"


def resnet_prefix(state: dict[str, torch.Tensor], source: str) -> str:
    """The prefix under which ``state`` holds a ResNet ('' for none); refused when none or several."""
    prefixes = sorted({key[:-len(FIRST_RESNET_BLOCK)] for key in state if key.endswith(FIRST_RESNET_BLOCK)})
    prefixes = [prefix for prefix in prefixes if prefix + "conv1.weight" in state]
    if not prefixes:
        raise EosegError(f"{source}: no ResNet in torchvision's or timm's layout (no conv1.weight beside "
                         f"{FIRST_RESNET_BLOCK} under any key prefix)")
    if len(prefixes) > 1:
        raise EosegError(f"{source}: holds several ResNets, under key prefixes {', '.join(map(repr, prefixes))}; "
                         "save the one to start from alone")
    return prefixes[0]


def resnet_architecture(state: dict[str, torch.Tensor], prefix: str) -> str:
    """The RESNETS name of the ResNet in ``state`` under ``prefix``, or a description of one that is none of them."""
    kind = "bottleneck" if f"{prefix}layer1.0.conv3.weight" in state else "basic"
    depths = []
    for stage in range(1, 5):
        blocks = 0
        while f"{prefix}layer{stage}.{blocks}.conv1.weight" in state:
            blocks += 1
        depths.append(blocks)
    for name, layout in RESNETS.items():
        if layout == (kind, tuple(depths)):
            return name
    return f"a ResNet of {kind} blocks {'-'.join(map(str, depths))} (not {', '.join(RESNETS)})"


def init_resnet_encoder(model: EncoderDecoderNet, state: dict[str, torch.Tensor], source: str,
                        recorded_bands: list[str] | None = None, band_names: list[str] | None = None) -> str:
    """Copy a torchvision/timm ResNet state dict into ``model.encoder``; return what was found and loaded. Of eoseg
    weights, which record the bands they were trained on (``recorded_bands``), the first layer's bands are matched to
    the config's ``band_names`` by name."""
    encoder = model.encoder
    prefix = resnet_prefix(state, source)
    state = dict(state)
    state[prefix + "conv1.weight"], matched = first_layer_by_band_name(state[prefix + "conv1.weight"], recorded_bands,
                                                                       band_names)
    found = resnet_architecture(state, prefix)
    if found != encoder.name:
        hint = f"; set ENCODER={found}" if found in RESNETS else ""
        raise EosegError(f"{source} holds {found} weights, but the model's encoder is ENCODER={encoder.name}{hint}")
    targets = {name: tensor for name, tensor in encoder.state_dict(keep_vars=True).items()
               if not name.endswith("num_batches_tracked")}
    in_file = {key[len(prefix):] for key in state if key.startswith(prefix)}
    unknown = sorted(name for name in in_file if name.startswith("layer") and not name.endswith("num_batches_tracked")
                     and name not in targets)
    if unknown:
        raise EosegError(f"{source}: {prefix}{unknown[0]} is no layer of a torchvision/timm {encoder.name} "
                         f"({len(unknown)} such keys); a variant of ResNet this encoder does not build")
    copies = []
    for name, target in targets.items():
        key = prefix + name
        if key not in state:
            raise EosegError(f"{source}: missing {key} (for encoder.{name}); not a torchvision/timm {encoder.name} state dict?")
        value = fit_first_layer(state[key], target) if name == "conv1.weight" else state[key]
        if value.shape != target.shape:
            raise EosegError(f"{source}: {key} has shape {tuple(state[key].shape)} but encoder.{name} needs "
                             f"{tuple(target.shape)} (published {encoder.name} weights fit MODEL_WIDTH=1.0)")
        copies.append((target, value))
    with torch.no_grad():
        for target, value in copies:
            target.copy_(value)
    bands = state[prefix + "conv1.weight"].shape[1]
    adapted = f", first layer adapted from {bands} to {model.in_channels} bands" if bands != model.in_channels else ""
    where = f"under prefix {prefix!r}" if prefix else "without prefix"
    layout = "eoseg weights" if recorded_bands else "torchvision's layer names"
    return (f"{source}: {found} weights ({layout}) {where}, {len(copies)} tensors loaded into the encoder{adapted}"
            + (" (classifier fc not used)" if prefix + "fc.weight" in state else "") + matched)


def init_encoder_weights(model: nn.Module, path: str | Path, band_names: list[str] | None = None) -> str:
    """Initialise every encoder of ``model`` from the state dict at ``path``; return one line saying what was loaded.
    ``band_names``: the config's (stacked) bands, which eoseg weights' recorded ones are matched to."""
    state, source = load_state_dict_file(path), str(path)
    if isinstance(model, EncoderDecoderNet):
        recorded = (recorded_signature(path) or {}).get("band_names")
        return init_resnet_encoder(model, state, source, recorded, band_names)
    if isinstance(model, LayeredNet):
        copied = init_encoder_from_vgg16_bn(model, state, source)
        return f"{source}: torchvision vgg16_bn layout, {copied} tensors loaded into {len(model.vgg_encoders())} encoder(s)"
    raise EosegError(f"{type(model).__name__} has no encoder that ENCODER_WEIGHTS can initialise")
