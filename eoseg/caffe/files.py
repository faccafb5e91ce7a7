"""Caffe's files: .caffemodel (binary NetParameter) read and written, .prototxt read.

Only the fields that carry weights are decoded, with the numbers of Caffe's
``src/caffe/proto/caffe.proto`` (identical in BVLC Caffe and in the 2016 fork the method
used):

    NetParameter      name = 1, layer = 100 (LayerParameter), layers = 2 (V1LayerParameter, legacy)
    LayerParameter    name = 1, type = 2 (string), blobs = 7, batch_norm_param = 139 (eps = 3)
    V1LayerParameter  name = 4, type = 5 (enum), blobs = 6
    BlobProto         num = 1, channels = 2, height = 3, width = 4 (legacy 4-D shape),
                      data = 5 (packed float), diff = 6, shape = 7 (BlobShape: dim = 1, packed int64),
                      double_data = 8

The writer exists so that tests can build Caffe files from known weights; files written
by Caffe itself are read the same way (see tests/test_caffe.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from eoseg.caffe import wire
from eoseg.errors import EosegError
from eoseg.io import atomic_path

# NetParameter
NET_NAME, NET_LAYER, NET_V1_LAYERS = 1, 100, 2
# LayerParameter
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS, LAYER_BATCH_NORM_PARAM = 1, 2, 7, 139
BATCH_NORM_EPS = 3
# V1LayerParameter
V1_NAME, V1_TYPE, V1_BLOBS = 4, 5, 6
# BlobProto
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1
LEGACY_DIMS = (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH)

# V1LayerParameter.LayerType -> the type string of current Caffe (as its upgrade_proto.cpp maps them)
V1_LAYER_TYPES = {
    0: "", 35: "AbsVal", 1: "Accuracy", 30: "ArgMax", 2: "BNLL", 3: "Concat", 37: "ContrastiveLoss",
    4: "Convolution", 5: "Data", 39: "Deconvolution", 6: "Dropout", 32: "DummyData", 7: "EuclideanLoss",
    25: "Eltwise", 38: "Exp", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 28: "HingeLoss", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 29: "MemoryData",
    16: "MultinomialLogisticLoss", 34: "MVN", 17: "Pooling", 26: "Power", 18: "ReLU", 19: "Sigmoid",
    27: "SigmoidCrossEntropyLoss", 36: "Silence", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split",
    33: "Slice", 23: "TanH", 24: "WindowData", 31: "Threshold",
}
V1_LAYER_CODES = {name: code for code, name in V1_LAYER_TYPES.items()}


@dataclass(frozen=True)
class CaffeLayer:
    """One layer of a Caffe net: its name, type string and parameter blobs.

    ``batch_norm_eps`` is BatchNorm's epsilon when the file sets it (None: Caffe's default 1e-5).
    """

    name: str
    type: str
    blobs: tuple[np.ndarray, ...] = ()
    batch_norm_eps: float | None = None


# ---------------------------------------------------------------- .caffemodel reading
def _decode_blob(buf: memoryview) -> np.ndarray:
    dims = None
    legacy = {}
    chunks: list[np.ndarray] = []
    for field, wire_type, value in wire.iter_fields(buf):
        if field == BLOB_SHAPE and wire_type == wire.LENGTH_DELIMITED:
            dims = []
            for shape_field, shape_wire, dim in wire.iter_fields(value):
                if shape_field == SHAPE_DIM:
                    dims += wire.read_packed_varints(dim) if shape_wire == wire.LENGTH_DELIMITED else [dim]
        elif field in LEGACY_DIMS and wire_type == wire.VARINT:
            legacy[field] = wire.as_signed64(value)
        elif field == BLOB_DATA and wire_type in (wire.LENGTH_DELIMITED, wire.FIXED32):
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif field == BLOB_DOUBLE_DATA and wire_type in (wire.LENGTH_DELIMITED, wire.FIXED64):
            chunks.append(np.frombuffer(value, dtype="<f8"))
        # diff / double_diff (fields 6, 9) are gradients: not needed
    shape = tuple(int(d) for d in dims) if dims is not None else tuple(legacy.get(f, 0) for f in LEGACY_DIMS)
    values = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if values.size != int(np.prod(shape)):
        raise wire.WireFormatError(f"blob of shape {shape} holds {values.size} values")
    return values.reshape(shape)


def _decode_layer(buf: memoryview, legacy: bool) -> CaffeLayer:
    name_field, type_field, blobs_field = (V1_NAME, V1_TYPE, V1_BLOBS) if legacy else (LAYER_NAME, LAYER_TYPE, LAYER_BLOBS)
    name, layer_type, blobs, eps = "", "", [], None
    for field, wire_type, value in wire.iter_fields(buf):
        if field == name_field and wire_type == wire.LENGTH_DELIMITED:
            name = bytes(value).decode("utf-8", errors="replace")
        elif field == type_field:
            if legacy and wire_type == wire.VARINT:
                layer_type = V1_LAYER_TYPES.get(value, f"V1 layer type {value}")
            elif not legacy and wire_type == wire.LENGTH_DELIMITED:
                layer_type = bytes(value).decode("utf-8", errors="replace")
        elif field == blobs_field and wire_type == wire.LENGTH_DELIMITED:
            try:
                blobs.append(_decode_blob(value))
            except wire.WireFormatError as err:
                raise wire.WireFormatError(f"layer {name!r}, blob {len(blobs)}: {err}") from None
        elif not legacy and field == LAYER_BATCH_NORM_PARAM and wire_type == wire.LENGTH_DELIMITED:
            for param_field, param_wire, param in wire.iter_fields(value):
                if param_field == BATCH_NORM_EPS and param_wire == wire.FIXED32:
                    eps = float(np.frombuffer(param, dtype="<f4")[0])
    return CaffeLayer(name, layer_type, tuple(blobs), eps)


def read_caffemodel(path: str | Path) -> list[CaffeLayer]:
    """The layers of a .caffemodel file, in file order (current and legacy V1 layouts)."""
    path = Path(path)
    if not path.is_file():
        raise EosegError(f"Caffe model not found: {path}")
    layers = []
    try:
        for field, wire_type, value in wire.iter_fields(path.read_bytes()):
            if field in (NET_LAYER, NET_V1_LAYERS) and wire_type == wire.LENGTH_DELIMITED:
                layers.append(_decode_layer(value, legacy=field == NET_V1_LAYERS))
    except wire.WireFormatError as err:
        raise EosegError(f"{path}: not a readable .caffemodel ({err}); truncated or another format?") from None
    if not layers:
        raise EosegError(f"{path}: no Caffe layers found; not a .caffemodel (NetParameter) file")
    return layers


# ---------------------------------------------------------------- .caffemodel writing
def _encode_blob(blob: np.ndarray, legacy: bool, packed: bool) -> bytes:
    blob = np.asarray(blob)
    if blob.dtype == np.float64:
        field, values = BLOB_DOUBLE_DATA, blob.astype("<f8")
    else:
        field, values = BLOB_DATA, blob.astype("<f4")
    if legacy:
        if blob.ndim > 4:
            raise ValueError(f"a legacy 4-D blob cannot hold shape {blob.shape}")
        dims = (1,) * (4 - blob.ndim) + blob.shape
        shape = b"".join(wire.varint_field(f, d) for f, d in zip(LEGACY_DIMS, dims))
    else:
        shape = wire.bytes_field(BLOB_SHAPE, wire.packed_varints_field(SHAPE_DIM, blob.shape))
    data = wire.packed_numbers_field(field, values) if packed else wire.unpacked_numbers_field(field, values)
    return shape + data


def _encode_layer(layer: CaffeLayer, legacy: bool, packed: bool) -> bytes:
    blobs = [_encode_blob(b, legacy, packed) for b in layer.blobs]
    if legacy:
        if layer.type not in V1_LAYER_CODES or layer.batch_norm_eps is not None:
            raise ValueError(f"layer type {layer.type!r} has no legacy V1 form")
        return (wire.string_field(V1_NAME, layer.name) + wire.varint_field(V1_TYPE, V1_LAYER_CODES[layer.type])
                + b"".join(wire.bytes_field(V1_BLOBS, b) for b in blobs))
    out = wire.string_field(LAYER_NAME, layer.name) + wire.string_field(LAYER_TYPE, layer.type)
    out += b"".join(wire.bytes_field(LAYER_BLOBS, b) for b in blobs)
    if layer.batch_norm_eps is not None:
        out += wire.bytes_field(LAYER_BATCH_NORM_PARAM, wire.float_field(BATCH_NORM_EPS, layer.batch_norm_eps))
    return out


def write_caffemodel(path: str | Path, layers: Iterable[CaffeLayer], net_name: str = "", legacy: bool = False,
                     packed: bool = True) -> Path:
    """Write ``layers`` as a .caffemodel, atomically.

    ``legacy`` writes the V1 layout (``layers`` with enum types, 4-D blob dims) of files
    from before 2015; ``packed=False`` writes one field per number, as some writers do.
    float64 blobs go to ``double_data``.
    """
    parts = [wire.string_field(NET_NAME, net_name)] if net_name else []
    field = NET_V1_LAYERS if legacy else NET_LAYER
    parts += [wire.bytes_field(field, _encode_layer(layer, legacy, packed)) for layer in layers]
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(parts))
    return Path(path)


# ---------------------------------------------------------------- .prototxt reading
_TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}\[\]:<>,;])
  | (?P<word>[A-Za-z0-9_.+\-]+)
""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}
_CLOSING = {"{": "}", "<": ">"}


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), token[1:-1])


def _scalar(word: str):
    if word in ("true", "True", "t"):
        return True
    if word in ("false", "False", "f"):
        return False
    for convert in (lambda w: int(w, 0), float):
        try:
            return convert(word)
        except ValueError:
            pass
    return word  # an enum value such as MAX or TRAIN


class _PrototxtParser:
    def __init__(self, text: str, source: str):
        self.source = source
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, line)
        self.index = 0
        pos, line = 0, 1
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise self._error(f"unexpected character {text[pos]!r}", line)
            if match.lastgroup != "space":
                self.tokens.append((match.lastgroup, match.group(), line))
            line += match.group().count("\n")
            pos = match.end()

    def _error(self, message: str, line: int | None = None) -> EosegError:
        if line is None:
            line = self.tokens[min(self.index, len(self.tokens) - 1)][2] if self.tokens else 1
        return EosegError(f"{self.source}, line {line}: {message}")

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str, int]:
        token = self._peek()
        if token is None:
            raise self._error(f"unexpected end of file{f', expected {expected!r}' if expected else ''}")
        if expected is not None and token[1] != expected:
            raise self._error(f"expected {expected!r}, found {token[1]!r}")
        self.index += 1
        return token

    def _value(self):
        kind, text, _ = self._take()
        if kind == "string":
            parts = [_unquote(text)]
            while (token := self._peek()) is not None and token[0] == "string":  # "a" "b" concatenates
                parts.append(_unquote(self._take()[1]))
            return "".join(parts)
        if kind == "word":
            return _scalar(text)
        raise self._error(f"expected a value, found {text!r}")

    def message(self, closing: str | None = None) -> dict:
        values: dict[str, list] = {}
        while (token := self._peek()) is None or token[1] != closing:
            if token is None:
                if closing is None:
                    break
                raise self._error(f"unexpected end of file, expected {closing!r}")
            kind, key, _ = self._take()
            if kind != "word":
                raise self._error(f"expected a field name, found {key!r}")
            colon = self._accept(":")
            opening = self._peek()
            if opening is not None and opening[1] in _CLOSING:
                self.index += 1
                new = [self.message(_CLOSING[opening[1]])]
            elif not colon:
                raise self._error(f"expected ':' or '{{' after {key!r}")
            elif self._accept("["):  # key: [a, b] is the same as key: a key: b
                new = []
                while not self._accept("]"):
                    new.append(self._value())
                    self._accept(",")
            else:
                new = [self._value()]
            self._accept(",") or self._accept(";")  # an optional separator
            values.setdefault(key, []).extend(new)
        if closing is not None:
            self._take(closing)
        return {key: items[0] if len(items) == 1 else items for key, items in values.items()}

    def _accept(self, text: str) -> bool:
        token = self._peek()
        if token is not None and token[1] == text:
            self.index += 1
            return True
        return False


def parse_prototxt(text: str, source: str = "prototxt") -> dict:
    """Parse protobuf text format into nested dicts.

    A field given once maps to its value, a field given several times to the list of its
    values (use :func:`repeated` to read either as a list). Messages become dicts, quoted
    strings ``str``, numbers ``int``/``float``, ``true``/``false`` ``bool``, enum values ``str``.
    """
    return _PrototxtParser(text, source).message()


def read_prototxt(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EosegError(f"prototxt not found: {path}")
    return parse_prototxt(path.read_text(encoding="utf-8"), str(path))


def repeated(message: dict, key: str) -> list:
    """A field of a parsed message as a list, whether it was given zero, one or many times."""
    value = message.get(key, [])
    return value if isinstance(value, list) else [value]
