"""Running a network with ONNX Runtime instead of PyTorch.

:func:`onnx_with_record` gives a model as ONNX with dynamic batch, height and width (height
and width multiples of 32: SegNet pools five times by 2), with the eoseg weights record
(classes, bands, normalisation) in the file's metadata, so that an .onnx file is checked
against the config like any other weights file. It uses torch's ``torch.export``-based
exporter (``dynamo=True``, needs onnxscript): the TorchScript exporter fails on
``MaxUnpool2d`` with a given output size.

:class:`OnnxModel` stands in for the torch module in :class:`eoseg.predict.Predictor`:
it is called with an (N, C, H, W) float32 tensor and returns the logits as a tensor on
the same device, and ``eval()`` / ``to()`` return it unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from eoseg.config import Config
from eoseg.errors import EosegError, plain_text
from eoseg.io import causes
from eoseg.weights_record import METADATA_KEY, check_weights_record

INPUT, OUTPUT = "image", "logits"  # a Deepness export's output is "probabilities" (ends in a softmax)
SIZE_MULTIPLE = 32  # 2 ** number of poolings
MAX_SIDE = SIZE_MULTIPLE * 2048


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs and prints notes about optional packages and empty attributes; keep script output clean."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def to_onnx(model: nn.Module, tile_size: int | None = None, output: str = OUTPUT) -> onnx.ModelProto:
    """Export a CPU copy of ``model`` in eval mode, with dynamic batch, height and width, or
    with ``tile_size``: square inputs of that fixed size (a multiple of 32), dynamic batch; its output named
    ``output`` (what it holds: logits, or a softmax's probabilities)."""
    model = copy.deepcopy(model).cpu().eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    if tile_size is None:
        # batch 2 and a non-square size keep the exporter from specialising any dimension; a size this large
        # also gives UNetFormer several 8x8 attention windows at 1/32 (a count of 1 would be specialised)
        example = torch.zeros(2, model.in_channels, 9 * SIZE_MULTIPLE, 10 * SIZE_MULTIPLE)
        height = SIZE_MULTIPLE * torch.export.Dim("height_blocks", min=1, max=MAX_SIDE // SIZE_MULTIPLE)
        width = SIZE_MULTIPLE * torch.export.Dim("width_blocks", min=1, max=MAX_SIDE // SIZE_MULTIPLE)
        dynamic = {0: batch, 2: height, 3: width}
    else:
        if tile_size % SIZE_MULTIPLE or not 0 < tile_size <= MAX_SIDE:
            raise EosegError(f"the input size must be a multiple of {SIZE_MULTIPLE} px up to {MAX_SIDE}, got {tile_size}")
        example = torch.zeros(2, model.in_channels, tile_size, tile_size)
        dynamic = {0: batch}
    try:
        with _quiet_exporter():
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT], output_names=[output],
                                        dynamic_shapes=(dynamic,), verbose=False)
    except Exception as err:  # the exporter raises many types; the message says what failed
        if any(isinstance(link, KeyboardInterrupt) for link in causes(err)):  # it wraps a Ctrl-C as well
            raise KeyboardInterrupt from None
        raise EosegError(f"ONNX export failed: {type(err).__name__}: {plain_text(str(err)).splitlines()[0]}") from None
    return program.model_proto


def onnx_with_record(model: nn.Module, record: dict, metadata: dict[str, str] | None = None,
                     tile_size: int | None = None, output: str = OUTPUT) -> bytes:
    """``model`` as the bytes of an ONNX file, with ``record`` (see eoseg.weights) in its metadata,
    beside ``metadata``'s keys (e.g. Deepness's); ``tile_size``: a fixed square input. In memory,
    so that it can be checked before it is written."""
    proto = to_onnx(model, tile_size, output)
    for key, value in {**(metadata or {}), METADATA_KEY: json.dumps(record)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


class OnnxModel:
    """An ONNX Runtime session that a Predictor can call like the torch model it replaces."""

    def __init__(self, model: str | Path | bytes, source: str = "ONNX model", probabilities: bool = False):
        """``probabilities``: the model ends in a softmax (a Deepness export); its outputs are
        turned into log-probabilities, scores that blend like logits and keep their argmax."""
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        try:
            self.session = onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model),
                                                        sess_options=options, providers=providers)
        except Exception as err:  # onnxruntime raises its own untyped errors for unreadable models
            raise EosegError(f"{source}: cannot be loaded by ONNX Runtime ({str(err).splitlines()[0]})") from None
        self.source = source
        self.providers = self.session.get_providers()
        self.probabilities = probabilities
        height, width = self.session.get_inputs()[0].shape[-2:]
        self.fixed_size = (height, width) if isinstance(height, int) and isinstance(width, int) else None

    @classmethod
    def from_module(cls, model: nn.Module) -> "OnnxModel":
        """Export ``model`` in memory and run it with ONNX Runtime."""
        return cls(to_onnx(model).SerializeToString(), f"{type(model).__name__} exported to ONNX")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        height, width = batch.shape[-2:]
        if self.fixed_size is not None and (height, width) != self.fixed_size:
            raise EosegError(f"{self.source}: takes {self.fixed_size[0]} x {self.fixed_size[1]} px inputs only, got "
                             f"{height} x {width}; set WINDOW={self.fixed_size[0]}")
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise EosegError(f"{self.source}: inputs must be multiples of {SIZE_MULTIPLE} px, got {height} x {width}; "
                             f"set WINDOW to a multiple of {SIZE_MULTIPLE}")
        pixels = batch.detach().to("cpu", torch.float32).numpy()
        (scores,) = self.session.run([self.session.get_outputs()[0].name], {INPUT: np.ascontiguousarray(pixels)})
        scores = torch.from_numpy(scores)
        if self.probabilities:
            scores = torch.log(scores.clamp_min(torch.finfo(torch.float32).tiny))
        return scores.to(batch.device)

    def eval(self) -> "OnnxModel":
        return self

    def to(self, device) -> "OnnxModel":
        return self  # outputs follow the input's device


def load_onnx(path: str | Path, cfg: Config) -> tuple[OnnxModel, dict]:
    """An exported .onnx file as an :class:`OnnxModel`, with its record checked against ``cfg``."""
    path = Path(path)
    if not path.is_file():
        raise EosegError(f"weights file not found: {path}")
    if path.stat().st_size == 0:  # protobuf reads no bytes as an empty model
        raise EosegError(f"{path}: not a readable ONNX file: the file is empty (an interrupted copy or a full disk?)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf decode errors
        raise EosegError(f"{path}: not a readable ONNX file ({str(err).splitlines()[0]})") from None
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    if METADATA_KEY not in metadata:
        raise EosegError(f"{path}: no eoseg record in its metadata; export it with export_onnx.py")
    record = json.loads(metadata[METADATA_KEY])
    check_weights_record(record, cfg, f"weights {path}")
    model = OnnxModel(path, str(path), probabilities=record.get("outputs") == "probabilities")
    if model.fixed_size is not None and model.fixed_size != (cfg.WINDOW, cfg.WINDOW):
        raise EosegError(f"{path}: takes {model.fixed_size[0]} px windows only; set WINDOW={model.fixed_size[0]}")
    return model, record
