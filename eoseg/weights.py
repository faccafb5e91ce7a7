"""Every kind of weights file inference accepts, loaded safely and checked against the config.

``load_weights(path, cfg)`` dispatches on the suffix:

- ``.pt`` / ``.pth``: an eoseg checkpoint (:mod:`eoseg.checkpoint`), unpickled with
  ``weights_only=True`` so that a crafted file cannot run code;
- ``.safetensors``: tensors plus the eoseg record in the file's header metadata (the
  format holds no code at all, only a JSON header and raw tensor bytes);
- ``.caffemodel``: the method's published Caffe weights (:mod:`eoseg.caffe.segnet`);
- ``.onnx``: a model exported by export_onnx.py, run with ONNX Runtime.

Each comes back with the :class:`~eoseg.normalization.Normalization` it expects. Weights
trained by eoseg expect the config's normalisation (a mismatch is refused). Weights
imported from Caffe impose their own preprocessing (reversed band order, mean pixel on the
0..255 scale), which a config cannot express: their record says so, and the recorded
normalisation is applied while everything else (classes, bands, palette) is still checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
import numpy as np
import torch
from torch import nn

from eoseg.caffe.segnet import (PUBLISHED_MEAN_BANDS, caffe_normalization, mean_pixel_for, parse_mean_pixel,
                                published_mean_name, read_caffe_segnet)
from eoseg.checkpoint import build_recorded_model, load_model, state_dict_mismatch
from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.io import atomic_path
from eoseg.metadata import data_signature
from eoseg.models import first_stream_bands
from eoseg.normalization import Normalization, suggested_value_scale
from eoseg.weights_record import FORMAT, METADATA_KEY, check_weights_record, weights_record
from eoseg.tiles import band_kind

SUFFIXES = (".pt", ".pth", ".safetensors", ".caffemodel", ".onnx")


def read_weights(path: str | Path, cfg: Config, caffe_mean: str | Sequence[float] | None = None,
                 for_training: bool = False) -> tuple[nn.Module, dict]:
    """The model in ``path`` (on CPU, in eval mode) and its record, checked against ``cfg``.

    ``caffe_mean`` (.caffemodel only): the mean pixel the Caffe weights were trained with,
    a name of :data:`eoseg.caffe.segnet.PUBLISHED_MEAN_PIXELS` or values in the network's
    (reversed) band order; by default the published one for the config's DATASET.
    ``for_training``: weights to train on from (INIT_WEIGHTS), which must hold the config's network
    (elsewhere the weights' own network runs, with a note).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    source = f"weights {path}"
    if caffe_mean is not None and suffix != ".caffemodel":
        raise EosegError(f"{path}: a Caffe mean pixel applies to .caffemodel weights only")
    if suffix in (".pt", ".pth"):
        model, payload = load_model(path, cfg)
        record = {"format": FORMAT, "model": payload["model"], "signature": payload["signature"],
                  "imposed_normalization": False, "origin": path.name}
    elif suffix == ".safetensors":
        model, record = _read_safetensors(path, cfg, source)
    elif suffix == ".caffemodel":
        model = read_caffe_segnet(path)
        if caffe_mean is None:
            mean = mean_pixel_for(cfg.DATASET, str(path))
        else:
            mean = parse_mean_pixel(caffe_mean) if isinstance(caffe_mean, str) else tuple(map(float, caffe_mean))
        if len(mean) != model.in_channels:
            raise EosegError(f"{path}: the mean pixel has {len(mean)} values but the network takes {model.in_channels} bands")
        published = published_mean_name(caffe_mean, cfg.DATASET)
        if published and [band_kind(b) for b in PUBLISHED_MEAN_BANDS[published]] != [band_kind(b) for b in cfg.BAND_NAMES]:
            # a Caffe file records no bands: the mean pixel's are those it was trained on
            raise EosegError(f"{path}: the mean pixel {published} is that of {', '.join(PUBLISHED_MEAN_BANDS[published])} "
                             f"imagery, the bands these weights learned, but BAND_NAMES says {', '.join(cfg.BAND_NAMES)}; "
                             f"label {', '.join(PUBLISHED_MEAN_BANDS[published])} images with them (BANDS and BAND_NAMES "
                             "in that order), or give your bands' own mean with --caffe-mean")
        signature = {**{key: value for key, value in data_signature(cfg, holdout=False).items() if key not in NOT_IN_CAFFE},
                     "normalization": caffe_normalization(mean).record()}
        record = weights_record(model, signature, imposed_normalization=True, origin=path.name)
        check_weights_record(record, cfg, source)
    elif suffix == ".onnx":
        from eoseg.onnx_engine import load_onnx  # onnxruntime is imported only when an ONNX file is used

        model, record = load_onnx(path, cfg)
    else:
        raise EosegError(f"{path}: unknown weights format {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if for_training:
        _check_same_model(record, cfg, path)
    else:
        _say_which_model(record["model"], cfg, path)
    return model.eval(), record


def config_that_ran(cfg: Config, record: dict) -> Config:
    """``cfg`` with the model the weights hold: what an export or conversion of them actually ran."""
    recorded = record["model"]
    model = {"MODEL": recorded["name"], "MODEL_WIDTH": float(recorded["width"])}
    if recorded.get("stream_bands") is not None:
        model["STREAM_BANDS"] = int(recorded["stream_bands"])
    if recorded.get("encoder") is not None:
        model["ENCODER"] = recorded["encoder"]
    return cfg.replace(**model)


def _say_which_model(recorded: dict, cfg: Config, path: Path) -> None:
    """Weights define the network they hold: where the config asks for another, say once which runs."""
    if (recorded["name"], float(recorded["width"])) != (cfg.MODEL, float(cfg.MODEL_WIDTH)):
        print(f"note: {path.name} holds MODEL={recorded['name']!r} MODEL_WIDTH={recorded['width']}, which is used; "
              f"the config's MODEL={cfg.MODEL!r} MODEL_WIDTH={cfg.MODEL_WIDTH} applies to training only", file=sys.stderr)


def _check_same_model(record: dict, cfg: Config, path: Path) -> None:
    """Refuse weights to train on from (INIT_WEIGHTS) that hold another network than the config's, or impose
    a normalisation (Caffe's band order and mean) that training, which normalises by the config, would not apply."""
    recorded = record["model"]
    held = {"MODEL": recorded["name"], "MODEL_WIDTH": float(recorded["width"]), "ENCODER": recorded.get("encoder")}
    wanted = {"MODEL": cfg.MODEL, "MODEL_WIDTH": float(cfg.MODEL_WIDTH),
              "ENCODER": cfg.ENCODER if recorded.get("encoder") is not None else None}
    if held != wanted:
        settings = " ".join(f"{name}={value!r}" for name, value in held.items() if value is not None)
        raise EosegError(f"INIT_WEIGHTS {path} hold {settings}, not the config's network: set those to fine-tune "
                         "them, or start the encoder alone from them with ENCODER_WEIGHTS")
    if recorded.get("stream_bands", first_stream_bands(cfg)) != first_stream_bands(cfg):
        raise EosegError(f"INIT_WEIGHTS {path} feed {recorded['stream_bands']} bands to their first stream, but the config "
                         f"gives it {first_stream_bands(cfg)} (STREAM_BANDS): set STREAM_BANDS={recorded['stream_bands']} "
                         "to fine-tune them, or start the encoder alone from them with ENCODER_WEIGHTS")
    if record.get("imposed_normalization"):
        raise EosegError(f"INIT_WEIGHTS {path} impose their own normalisation (converted Caffe weights: band order and "
                         "mean pixel), which training, normalising by NORM_MEAN and NORM_STD, does not apply; start from "
                         "ENCODER_WEIGHTS (torchvision's vgg16_bn) instead")


def load_weights(path: str | Path, cfg: Config, caffe_mean: str | Sequence[float] | None = None) -> tuple[nn.Module, Normalization]:
    """The model in ``path`` and the normalisation its inputs need (see :func:`read_weights`)."""
    model, record = read_weights(path, cfg, caffe_mean)
    return model, recorded_normalization(record)


def recorded_normalization(record: dict) -> Normalization:
    """The normalisation a weights record's inputs need, with the data type it was trained on."""
    normalization = Normalization.from_record(record["signature"]["normalization"])
    normalization = normalization.filled_as_recorded(record["signature"].get("input_statistics"),  # nodata as trained
                                                     record["signature"].get("nodata_fill"))
    return dataclasses.replace(normalization, input_dtype=record["signature"].get("input_dtype"))


def check_input_dtype(normalization: Normalization, dtype: str, image: str | Path, scalable: bool = False,
                      read_as: str = "", factor: float | None = None, checkable: bool = False) -> None:
    """Refuse an image whose pixel type differs from the training data's: 16-bit values through a
    normalisation made for 8-bit ones (or the reverse) give confident, wrong labels. ``scalable``: the
    weights record their values, so that INFER_VALUE_SCALE can bring the image's to them (checked), by ``factor``
    where it was measured; ``checkable``: they record them, but INFER_VALUE_CHECK is off, so they were not compared;
    ``read_as``: how its pixels came to be ``dtype`` (see eoseg.io.read_as_note)."""
    trained = normalization.input_dtype
    if trained is None or np.dtype(dtype) == np.dtype(trained):
        return
    if np.issubdtype(np.dtype(dtype), np.floating) and np.issubdtype(np.dtype(trained), np.floating):
        return
    raise EosegError(f"{image}: its pixels are {dtype}{read_as}, but the weights were trained on {trained} data, whose value range "
                     f"the normalisation (NORM_MEAN / NORM_STD) was set for; convert the image to {trained} with the "
                     f"same scaling as the training data, "
                     + (f"set INFER_VALUE_SCALE={suggested_value_scale(factor)} to bring them to theirs, "
                        if scalable and factor is not None else
                        "set INFER_VALUE_SCALE to the factor that brings its values to theirs, " if scalable else "")
                     + (f"set INFER_VALUE_CHECK=True to have its values compared with theirs ({trained} values near "
                        "the training scale are labelled as they are), " if checkable and not scalable else "")
                     + f"or train on {dtype} data")


# what a .caffemodel does not say of its training (the config converting it does not know it either): left out of its
# record, not stated as the converting config's (inference noted that its labels "were read with" that LABEL_VALUES)
NOT_IN_CAFFE = ("label_values", "label_tolerance", "patch_size", "bands")
TENSORS_SHA256_KEY = "eoseg_tensors_sha256"  # safetensors, unlike torch's zip files, holds no checksum of its own


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of ``tensors``' names and bytes: written with them, so that bytes damaged since are told."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode() + b"\0")
        digest.update(tensors[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def save_safetensors(path: str | Path, model: nn.Module, record: dict) -> Path:
    """Write ``model``'s tensors and ``record`` (in the header metadata) as .safetensors, atomically."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise EosegError(f"{path}: safetensors files must end in .safetensors")
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(record), TENSORS_SHA256_KEY: tensors_sha256(tensors)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600: readable by its owner alone, unlike every other output
    return path


def _read_safetensors(path: Path, cfg: Config, source: str) -> tuple[nn.Module, dict]:
    if not path.is_file():
        raise EosegError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise EosegError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})") from None
    try:
        record = json.loads(metadata[METADATA_KEY])
    except (KeyError, json.JSONDecodeError):
        raise EosegError(f"{path}: no eoseg record in its metadata; convert it with convert_weights.py") from None
    if TENSORS_SHA256_KEY in metadata and metadata[TENSORS_SHA256_KEY] != tensors_sha256(tensors):  # absent: older files
        raise EosegError(f"{path}: damaged: its tensors do not match the checksum written with them (a corrupted copy or "
                         "disk?); copy or convert it again")
    check_weights_record(record, cfg, source)
    spec = record["model"]
    model = build_recorded_model(spec)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise EosegError(f"{path}: weights do not fit model {spec['name']} ({state_dict_mismatch(err)})") from None
    return model, record
