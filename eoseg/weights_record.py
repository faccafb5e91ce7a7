"""The self-description that exported weights files (.safetensors, .onnx) carry, and its check.

Below both eoseg.weights (which reads every kind of weights file) and eoseg.onnx_engine
(which writes and runs ONNX files): both import it, neither imports the other's callers.
"""

from __future__ import annotations

from torch import nn

from eoseg.checkpoint import check_checkpoint, check_record_keys, model_record_of
from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.normalization import Normalization

FORMAT = "eoseg-weights-1"
METADATA_KEY = "eoseg"  # safetensors header / ONNX metadata_props key holding the record as JSON


def weights_record(model: nn.Module, signature: dict, imposed_normalization: bool, origin: str) -> dict:
    """The self-description stored in .safetensors and .onnx files.

    ``imposed_normalization``: the weights dictate ``signature["normalization"]`` (Caffe
    imports); otherwise it is the config's and must match the consumer's.
    """
    return {"format": FORMAT, "model": model_record_of(model), "signature": signature,
            "imposed_normalization": bool(imposed_normalization), "origin": origin}


def check_weights_record(record: dict, cfg: Config, source: str) -> None:
    """Refuse weights made for other classes, bands, palette or (unless imposed) normalisation."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise EosegError(f"{source}: no {FORMAT!r} record; not written by eoseg")
    check_record_keys(record, source)
    signature = record["signature"]
    if record.get("imposed_normalization"):
        # applied as recorded, so the config's normalisation is irrelevant to these weights
        signature = {**signature, "normalization": Normalization.from_config(cfg).record()}
    check_checkpoint({"model": record["model"], "signature": signature}, cfg, source)
