"""The protobuf binary wire format, by hand: just what Caffe's files need.

A message is a sequence of fields, each a key ``(field number << 3) | wire type``
(a varint) followed by the value: a varint (type 0), 8 bytes (type 1), a length-prefixed
byte string holding a string, a nested message or a packed repeated number (type 2), or
4 bytes (type 5). Unknown fields are skipped, as protobuf itself does, so files carrying
fields this project does not use still read. Groups (types 3 and 4) were deprecated
before Caffe existed and are refused.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
_FIXED_SIZES = {FIXED64: 8, FIXED32: 4}


class WireFormatError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """The unsigned varint starting at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise WireFormatError(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise WireFormatError(f"varint longer than 10 bytes ending at byte {pos}")


def as_signed64(value: int) -> int:
    """int32/int64 fields hold negative numbers as 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field number, wire type, value)``: an int for varints, the raw bytes otherwise."""
    buf = memoryview(buf)
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise WireFormatError(f"field number 0 at byte {pos}")
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire_type in _FIXED_SIZES:
            length = _FIXED_SIZES[wire_type]
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise WireFormatError(f"unsupported wire type {wire_type} (field {field}) at byte {pos}")
        if pos > len(buf):
            raise WireFormatError(f"field {field} runs past the end of its message ({pos} > {len(buf)} bytes)")
        yield field, wire_type, value


def read_packed_varints(buf: memoryview) -> list[int]:
    values, pos = [], 0
    while pos < len(buf):
        value, pos = read_varint(buf, pos)
        values.append(value)
    return values


# ---------------------------------------------------------------- encoding
def encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # negative int64: ten bytes of two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_key(field: int, wire_type: int) -> bytes:
    return encode_varint(field << 3 | wire_type)


def varint_field(field: int, value: int) -> bytes:
    return encode_key(field, VARINT) + encode_varint(value)


def bytes_field(field: int, payload: bytes) -> bytes:
    """A string, a nested message or a packed repeated number."""
    return encode_key(field, LENGTH_DELIMITED) + encode_varint(len(payload)) + payload


def string_field(field: int, text: str) -> bytes:
    return bytes_field(field, text.encode("utf-8"))


def float_field(field: int, value: float) -> bytes:
    return encode_key(field, FIXED32) + np.float32(value).tobytes()


def packed_numbers_field(field: int, values: np.ndarray) -> bytes:
    """Repeated float (``<f4``) or double (``<f8``) values, packed into one field."""
    return bytes_field(field, np.ascontiguousarray(values).tobytes())


def unpacked_numbers_field(field: int, values: np.ndarray) -> bytes:
    """Repeated float or double values as one field each (what packed=false writers produce)."""
    wire_type = FIXED32 if values.dtype.itemsize == 4 else FIXED64
    key = encode_key(field, wire_type)
    records = np.empty(values.size, dtype=[("key", "u1", (len(key),)), ("value", values.dtype)])
    records["key"] = np.frombuffer(key, dtype="u1")
    records["value"] = values.ravel()
    return records.tobytes()


def packed_varints_field(field: int, values) -> bytes:
    return bytes_field(field, b"".join(encode_varint(int(v)) for v in values))
