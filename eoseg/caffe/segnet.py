"""The method's published Caffe SegNet weights as an eoseg SegNet, with their preprocessing.

Layer names are those of the method's net definition (nshaud/DeepNetsForEO,
``models/segnet_isprs_vaihingen_irrg.prototxt`` and ``notebooks/training.py``): every
convolution ``X`` of the encoder and decoder (conv1_1 ... conv5_3, conv5_3_D ... conv1_2_D)
is followed by a BatchNorm layer ``X_bn`` (blobs: mean sum, variance sum, moving-average
factor) and a Scale layer ``X_scale`` (blobs: gamma, beta); the classifier conv1_1_D is a
bare convolution. Pooling, Upsample, ReLU, data and loss layers carry no weights.

Preprocessing: the method fed Caffe 8-bit pixels (0..255, no scaling) with the channel
order reversed (Caffe/OpenCV's BGR convention: an IRRG tile reaches the network as G, R,
IR) and the mean pixel subtracted in that reversed order. Caffe files do not record it, so
the mean pixel comes from :data:`PUBLISHED_MEAN_PIXELS` or from the user.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from eoseg.caffe.files import CaffeLayer, read_caffemodel
from eoseg.errors import EosegError
from eoseg.models.segnet import CLASSIFIER, DECODER, ENCODER, SegNet
from eoseg.normalization import Normalization

# Mean pixels published with the method's Caffe models, in the network's (reversed) channel order.
PUBLISHED_MEAN_PIXELS = {
    # Vaihingen IRRG: MEAN_PIXEL of notebooks/config.py, used by the method's inference.py
    # (its prototxt's Data layer lists 81.29, 81.93, 120.89 with the comments green, red, infrared).
    "vaihingen_irrg": (81.29, 81.93, 120.90),
    # Potsdam IRRG: the method's Potsdam IRRG training mean, from the transform_param of its
    # OSM/potsdam_irrg_osm_fusenet.prototxt (G, R, IR).
    "potsdam_irrg": (92.5452277, 86.55175022, 97.63989512),
}
# The bands of the imagery each published mean pixel is of, in the image files' order (the mean is given reversed)
PUBLISHED_MEAN_BANDS = {"vaihingen_irrg": ("IR", "R", "G"), "potsdam_irrg": ("IR", "R", "G")}
# The mean pixel assumed for Caffe weights when a config's DATASET is one of these presets.
DATASET_MEAN_PIXELS = {"vaihingen": "vaihingen_irrg"}

CONV_LAYERS = [name for block in ENCODER + DECODER for name, _ in block]
CAFFE_BN_SUFFIX, CAFFE_SCALE_SUFFIX = "_bn", "_scale"  # Caffe layer names; eoseg's batch norms are <conv>_bn too
FULL_WIDTH_CHANNELS = dict(name_channels for block in ENCODER + DECODER for name_channels in block)


def parse_mean_pixel(text: str) -> tuple[float, ...]:
    """``vaihingen_irrg`` (a name of PUBLISHED_MEAN_PIXELS) or comma-separated values, e.g. ``81.29,81.93,120.9``."""
    if text in PUBLISHED_MEAN_PIXELS:
        return PUBLISHED_MEAN_PIXELS[text]
    try:
        values = tuple(float(v) for v in re.split(r"[,\s]+", text.strip()) if v)
    except ValueError:
        values = (math.nan,)
    if not values or not all(math.isfinite(v) for v in values):
        raise EosegError(f"mean pixel {text!r}: give comma-separated numbers or one of "
                         f"{', '.join(PUBLISHED_MEAN_PIXELS)}")
    return values


def published_mean_name(caffe_mean: str | Sequence[float] | None, dataset: str) -> str | None:
    """The name of the published mean pixel that Caffe weights are read with (given, or assumed for the preset
    ``dataset``); None for one given as numbers."""
    if caffe_mean is None:
        return DATASET_MEAN_PIXELS.get(dataset)
    return caffe_mean if isinstance(caffe_mean, str) and caffe_mean in PUBLISHED_MEAN_PIXELS else None


def caffe_normalization(mean_pixel: Sequence[float]) -> Normalization:
    """Reverse the bands (Caffe's BGR), subtract ``mean_pixel`` (given in that reversed order), no scaling."""
    count = len(mean_pixel)
    return Normalization(tuple(float(m) for m in mean_pixel), (1.0,) * count, tuple(reversed(range(count))))


def mean_pixel_for(dataset: str, source: str) -> tuple[float, ...]:
    """The published mean pixel assumed for Caffe weights used with the preset ``dataset``."""
    if dataset in DATASET_MEAN_PIXELS:
        return PUBLISHED_MEAN_PIXELS[DATASET_MEAN_PIXELS[dataset]]
    published = "; ".join(f"{name} = {','.join(map(str, values))}" for name, values in PUBLISHED_MEAN_PIXELS.items())
    raise EosegError(
        f"{source}: Caffe weights do not record the mean pixel they were trained with; give it with "
        f"--caffe-mean (CAFFE_MEAN in notebook 5), in the network's reversed (BGR) band order (published: {published})"
    )


def _find(layers: dict[str, CaffeLayer], name: str, layer_type: str, blob_counts: tuple[int, ...], source: str) -> CaffeLayer:
    layer = layers.get(name)
    if layer is None:
        raise EosegError(f"{source}: layer {name} ({layer_type}) is missing; not a SegNet of the method?")
    if layer.type != layer_type or len(layer.blobs) not in blob_counts:
        raise EosegError(f"{source}: layer {name} is a {layer.type} with {len(layer.blobs)} blobs, "
                         f"expected a {layer_type} with {' or '.join(map(str, blob_counts))}")
    return layer


def _batch_norm_tensors(bn: CaffeLayer, scale: CaffeLayer, target: torch.nn.BatchNorm2d) -> dict[str, np.ndarray]:
    mean, variance, factor = (b.astype(np.float64).ravel() for b in bn.blobs)
    # Caffe stores running sums; its BatchNorm layer divides them by the factor, and a
    # factor of 0 (statistics never accumulated) multiplies them by 0 instead.
    multiplier = 0.0 if factor[0] == 0 else 1.0 / factor[0]
    mean, variance = mean * multiplier, variance * multiplier
    eps = 1e-5 if bn.batch_norm_eps is None else bn.batch_norm_eps
    if not math.isclose(eps, target.eps, rel_tol=1e-6):
        variance = variance + (eps - target.eps)  # same sqrt(var + eps) with PyTorch's eps
    gamma = scale.blobs[0].ravel()
    beta = scale.blobs[1].ravel() if len(scale.blobs) == 2 else np.zeros_like(gamma)
    return {"running_mean": mean, "running_var": variance, "weight": gamma, "bias": beta}


def segnet_from_layers(layers: Sequence[CaffeLayer], source: str = "Caffe model") -> SegNet:
    """Build the SegNet whose shape the blobs describe and copy every weight into it.

    Raises EosegError for a missing layer, a layer with blobs that has no place in SegNet,
    or a blob whose shape does not fit.
    """
    by_name = {layer.name: layer for layer in layers}
    first = _find(by_name, CONV_LAYERS[0], "Convolution", (1, 2), source).blobs[0]
    deepest = _find(by_name, "conv5_1", "Convolution", (1, 2), source).blobs[0]
    classifier = _find(by_name, CLASSIFIER, "Convolution", (1, 2), source).blobs[0]
    if first.ndim != 4 or deepest.ndim != 4 or classifier.ndim != 4:
        raise EosegError(f"{source}: convolution weights must be 4-D (out, in, height, width)")
    # the widest layers give the channel multiplier most precisely
    width = deepest.shape[0] / FULL_WIDTH_CHANNELS["conv5_1"]
    model = SegNet(in_channels=first.shape[1], num_classes=classifier.shape[0], width=width).eval()

    values: dict[str, np.ndarray] = {}
    used = set()
    for name in CONV_LAYERS + [CLASSIFIER]:
        conv = _find(by_name, name, "Convolution", (1, 2), source)
        module = getattr(model, name)
        values[f"{name}.weight"] = conv.blobs[0]
        values[f"{name}.bias"] = conv.blobs[1] if len(conv.blobs) == 2 else np.zeros(module.out_channels, np.float32)
        used.add(name)
        if name == CLASSIFIER:
            continue
        bn = _find(by_name, name + CAFFE_BN_SUFFIX, "BatchNorm", (3,), source)
        scale = _find(by_name, name + CAFFE_SCALE_SUFFIX, "Scale", (1, 2), source)
        used.update((bn.name, scale.name))
        for tensor, value in _batch_norm_tensors(bn, scale, getattr(model, f"{name}_bn")).items():
            values[f"{name}_bn.{tensor}"] = value
    unused = [layer.name for layer in layers if layer.blobs and layer.name not in used]
    if unused:
        raise EosegError(f"{source}: layer {unused[0]} ({by_name[unused[0]].type}) has weights with no place in "
                         f"eoseg's SegNet{f' (and {len(unused) - 1} more)' if len(unused) > 1 else ''}")

    state = model.state_dict()
    for key, value in values.items():
        target_shape = tuple(state[key].shape)
        # vectors may come as legacy 4-D blobs (1, 1, 1, C); kernels must match exactly
        if value.size != state[key].numel() or (len(target_shape) == 4 and value.shape != target_shape):
            raise EosegError(f"{source}: {key.split('.')[0]} has a blob of shape {value.shape}, but a SegNet with "
                             f"{model.in_channels} bands, {model.num_classes} classes and width {width:g} "
                             f"needs {target_shape}")
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32).reshape(target_shape))
    model.load_state_dict(state)
    return model


def read_caffe_segnet(path: str | Path) -> SegNet:
    """The SegNet of a .caffemodel written by the method's Caffe (or by :func:`write_caffemodel`)."""
    return segnet_from_layers(read_caffemodel(path), str(path))


def segnet_to_layers(model: SegNet, moving_average_factor: float = 1.0) -> list[CaffeLayer]:
    """The Caffe layers holding ``model``'s weights, named and laid out as the method's Caffe SegNet.

    BatchNorm blobs are stored as Caffe accumulates them: statistics multiplied by the
    ``moving_average_factor`` that is stored beside them.
    """
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    layers = []
    for name in CONV_LAYERS + [CLASSIFIER]:
        layers.append(CaffeLayer(name, "Convolution", (state[f"{name}.weight"], state[f"{name}.bias"])))
        if name == CLASSIFIER:
            continue
        bn = f"{name}_bn"  # eoseg's module
        factor = np.array([moving_average_factor], np.float32)
        layers.append(CaffeLayer(name + CAFFE_BN_SUFFIX, "BatchNorm", (state[f"{bn}.running_mean"] * factor,
                                                                       state[f"{bn}.running_var"] * factor, factor)))
        layers.append(CaffeLayer(name + CAFFE_SCALE_SUFFIX, "Scale", (state[f"{bn}.weight"], state[f"{bn}.bias"])))
        layers.append(CaffeLayer(name + "_relu", "ReLU"))
    return layers
