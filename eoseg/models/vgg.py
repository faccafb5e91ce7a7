"""Initialise SegNet encoders from a local VGG16-BN state dict.

The file is a torch state dict in torchvision's ``vgg16_bn`` layout (``features.N.*``);
nothing is downloaded. Every one of the 13 conv + batch-norm pairs is matched, its
shapes checked and copied. A file that does not fit is an error, never silently skipped
(the method's own notebook zipped two key lists; with the ``num_batches_tracked``
buffers of current PyTorch they fall out of step and most of the encoder stays random).
"""

from __future__ import annotations

import torch

from eoseg.errors import EosegError
from eoseg.models.pretrained import fit_first_layer
from eoseg.models.segnet import LayeredNet

CONV_PARAMS = ("weight", "bias")
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def vgg16_bn_feature_indices() -> list[tuple[int, int]]:
    """torchvision ``features`` indices (conv, bn) of the 13 VGG16-BN convolutions."""
    pairs, index = [], 0
    for convs_in_block in (2, 2, 3, 3, 3):
        for _ in range(convs_in_block):
            pairs.append((index, index + 1))  # conv, bn, then ReLU at index + 2
            index += 3
        index += 1  # max pooling
    return pairs


def init_encoder_from_vgg16_bn(model: LayeredNet, state: dict[str, torch.Tensor], source: str = "VGG16-BN weights") -> int:
    """Copy the 13 conv + BN layers into each of ``model``'s VGG16 encoders; return the number of tensors copied.

    An encoder whose input is not 3 bands gets its first layer adapted
    (:func:`eoseg.models.pretrained.adapt_first_layer`).
    """
    copies: list[tuple[torch.Tensor, torch.Tensor]] = []
    for module, names in model.vgg_encoders():
        for position, (name, (conv_index, bn_index)) in enumerate(zip(names, vgg16_bn_feature_indices(), strict=True)):
            for module_name, index, tensors in ((name, conv_index, CONV_PARAMS), (name + "_bn", bn_index, BN_TENSORS)):
                layer = getattr(module, module_name)
                for tensor_name in tensors:
                    key = f"features.{index}.{tensor_name}"
                    if key not in state:
                        raise EosegError(f"{source}: missing {key} (for {module_name}.{tensor_name}); not a torchvision vgg16_bn state dict?")
                    target, value = getattr(layer, tensor_name), state[key]
                    if position == 0 and tensor_name == "weight" and module_name == name:
                        value = fit_first_layer(value, target)
                    if value.shape != target.shape:
                        raise EosegError(
                            f"{source}: {key} has shape {tuple(state[key].shape)} but {module_name}.{tensor_name} "
                            f"needs {tuple(target.shape)} (VGG16-BN fits MODEL_WIDTH=1.0)"
                        )
                    copies.append((target, value))
    with torch.no_grad():
        for target, value in copies:
            target.copy_(value)
    return len(copies)
