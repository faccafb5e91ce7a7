"""Saving and loading weights and training state, atomically and safely.

Files are torch pickles restricted to tensors and plain Python values, and are always
loaded with ``weights_only=True``: a weights file from the internet cannot run code.
Each file records the model it fits and the data signature (classes, bands,
normalisation) it was trained with; loading refuses a config that disagrees.
"""

from __future__ import annotations

import json
import pickle
import zipfile
import zlib
from pathlib import Path

import torch
from torch import nn

from eoseg.config import Config
from eoseg.errors import EosegError, plain_text
from eoseg.io import atomic_path, write_failure
from eoseg.metadata import WEIGHTS_FIELDS, check_compatible, data_signature
from eoseg.models import MODELS, build_model, uses_encoder

FORMAT = "eoseg-checkpoint-1"
FORMAT_FAMILY = "eoseg-checkpoint-"  # another number: written by another eoseg version


def model_record(cfg: Config) -> dict:
    """The model a config asks for, as weights files record it (checked when they are loaded)."""
    record = {"name": cfg.MODEL, "in_channels": cfg.num_bands, "num_classes": cfg.num_classes, "width": float(cfg.MODEL_WIDTH)}
    if uses_encoder(cfg.MODEL):
        record["encoder"] = cfg.ENCODER
    return record


def model_record_of(model: nn.Module) -> dict:
    """The record of a built model: :func:`model_record` plus a two-stream model's split."""
    name = next((name for name, cls in MODELS.items() if type(model) is cls), None)
    if name is None:
        raise EosegError(f"{type(model).__name__} is not a model of the registry ({', '.join(MODELS)})")
    record = {"name": name, "in_channels": model.in_channels, "num_classes": model.num_classes, "width": float(model.width)}
    if model.two_stream:
        record["stream_bands"] = model.stream_bands
    if uses_encoder(name):
        record["encoder"] = model.encoder_name
    return record


def build_recorded_model(record: dict) -> nn.Module:
    """The untrained model a weights record describes."""
    return build_model(record["name"], record["in_channels"], record["num_classes"], record["width"],
                       record.get("stream_bands"), record.get("encoder"))


def save_checkpoint(path: str | Path, cfg: Config, model: nn.Module, iteration: int, training_state: dict | None = None,
                    validation: dict | None = None, trained_on: dict | None = None) -> Path:
    """Write weights (plus the training state: optimizer, minutes trained etc., when given) to ``path`` atomically.

    ``validation``: the metrics (eoseg.metrics, with the confusion matrix) these weights scored
    on the validation tiles, recorded with them.
    ``trained_on``: what the training imagery was, recorded in the signature for inference:
    ``input_dtype``, the data type of its pixels (uint8, uint16...), so that images of another
    type, whose values the normalisation would misread, are refused; ``pixel_size_m``, the
    [smallest, largest] ground size of its pixels, at which other images are labelled
    (eoseg.grid.labelling_grid); ``input_statistics``, each band's mean and std of its values, against
    which images on another value scale are refused (eoseg.normalization.check_value_scale);
    ``class_pixels``, its labelled pixels of each class, so that scores can tell a class never trained on.
    """
    signature = data_signature(cfg)
    del signature["made_from"]  # how stored patches were cut: nothing weights are checked by, and it holds local paths
    signature.update({key: value for key, value in (trained_on or {}).items() if value is not None})
    payload = {
        "format": FORMAT,
        "model": model_record_of(model),
        "signature": signature,
        "config": json.dumps(cfg.to_dict(), default=str),
        "iteration": int(iteration),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if training_state is not None:
        payload["training_state"] = training_state
    if validation is not None:
        payload["validation"] = validation
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as err:  # torch's file writer loses the OS error ("unexpected pos ...")
            raise write_failure(err, Path(path), tmp) from None
    return Path(path)


def _damaged_zip_entry(path: Path) -> str | None:
    """The first entry of torch's zip file ``path`` whose bytes fail their CRC (torch.load reads them unchecked: flipped
    bytes became other weights, and other labels, review); None where all pass or ``path`` is no zip file. Entries
    stored with a CRC of 0 (torch's save with compute_crc32 off) carry none to check (code review)."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            for entry in archive.infolist():
                if entry.CRC == 0 and entry.file_size:
                    continue
                try:
                    with archive.open(entry) as data:  # the CRC is compared at the end of the entry
                        while data.read(1 << 24):
                            pass
                except zipfile.BadZipFile:
                    return entry.filename
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
        return None  # torch.load says what is wrong with it
    return None


def safe_torch_load(path: Path, what: str) -> object:
    """``torch.load`` restricted to tensors and plain values; a refusal becomes a clear EosegError."""
    if path.is_file() and path.stat().st_size == 0:
        raise EosegError(f"{path}: not a loadable {what}: the file is empty (an interrupted copy or a full disk?)")
    damaged = _damaged_zip_entry(path)
    if damaged:
        raise EosegError(f"{path}: damaged {what}: its part {damaged} fails the checksum written with it (a corrupted "
                         "copy or disk?); copy it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # keep torch's line naming what was refused, not its advice to disable the protection
        lines = [line.strip() for line in plain_text(str(err)).splitlines()]
        boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
        reason = " ".join(line for line in lines if line and not line.startswith(boilerplate)) or type(err).__name__
        reason = reason.split(" Please use")[0]
        if "GLOBAL" in reason:
            raise EosegError(f"{path}: refused to load this {what}: it would build Python objects beyond tensors, "
                             f"which could run code ({reason})") from None
        raise EosegError(f"{path}: not a loadable {what}; truncated or not a torch file ({reason})") from None
    except Exception as err:  # truncated or foreign files
        detail = str(err).strip().splitlines()
        raise EosegError(f"{path}: not a loadable {what}; truncated or not a torch file "
                         f"({type(err).__name__}{': ' + detail[0] if detail else ''})") from None


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EosegError(f"weights file not found: {path}; train a model first (training.py) or pass --weights")
    payload = safe_torch_load(path, "weights file")
    if isinstance(payload, dict) and str(payload.get("format")).startswith(FORMAT_FAMILY) and payload["format"] != FORMAT:
        raise EosegError(f"{path}: eoseg weights of format {payload['format']!r}, which this eoseg (reading {FORMAT!r}) "
                         "does not know: use the eoseg version that wrote them, or a newer one")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise EosegError(f"{path}: not an eoseg weights file (no {FORMAT!r} record)")
    return payload


def check_checkpoint(payload: dict, cfg: Config, source: str) -> None:
    """Refuse weights made for other classes, bands, normalisation or model."""
    check_record_keys(payload, source)
    recorded = payload["model"]
    expected = model_record(cfg)
    for key, label in (("num_classes", "classes"), ("in_channels", "input bands")):
        if recorded[key] != expected[key]:
            raise EosegError(
                f"{source} was trained for {recorded[key]} {label}, but the config has {expected[key]}; "
                "use the config it was trained with or retrain"
            )
    check_compatible(payload["signature"], data_signature(cfg, holdout=False), source, fields=WEIGHTS_FIELDS)


RECORDED_MODEL_KEYS = ("name", "in_channels", "num_classes", "width")


MAX_RECORDED_WIDTH = 8.0  # a channel multiplier beyond this builds a network of terabytes: a damaged record


def check_record_keys(payload: dict, source: str) -> None:
    """A record missing what the checks and the model builder read, or holding values no model is built of (a width
    as text, NaN or of 1e9, which would allocate terabytes), is damaged: one line, not a KeyError or a traceback."""
    missing = [key for key in ("model", "signature") if not isinstance(payload.get(key), dict)]
    if "model" not in missing:
        missing += [f"model.{key}" for key in RECORDED_MODEL_KEYS if key not in payload["model"]]
    if missing:
        raise EosegError(f"{source}: its eoseg record lacks {', '.join(missing)}, so it is damaged or was edited; "
                         "use the original weights or convert them again (convert_weights.py)")
    model = payload["model"]
    counts = ("in_channels", "num_classes")
    bad = [key for key in counts if not isinstance(model[key], int) or isinstance(model[key], bool) or model[key] < 1]
    width = model["width"]
    if not (isinstance(width, (int, float)) and not isinstance(width, bool) and 0 < width <= MAX_RECORDED_WIDTH):
        bad.append("width")  # NaN fails the comparison too
    if not isinstance(model["name"], str):
        bad.append("name")
    if bad:
        raise EosegError(f"{source}: its eoseg record holds " + ", ".join(f"model.{key} = {model[key]!r}" for key in bad)
                         + ", which no model is built of, so it is damaged or was edited; use the original weights or "
                         "convert them again (convert_weights.py)")


def load_model(path: str | Path, cfg: Config) -> tuple[nn.Module, dict]:
    """Build the recorded model, check it against ``cfg`` and load its weights (on CPU)."""
    payload = load_checkpoint(path)
    check_checkpoint(payload, cfg, f"weights {path}")
    record = payload["model"]
    model = build_recorded_model(record)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise EosegError(f"{path}: weights do not fit model {record['name']} ({state_dict_mismatch(err)})") from None
    return model, payload


def state_dict_mismatch(err: RuntimeError, most: int = 300) -> str:
    """What torch's load_state_dict refused (missing or unexpected keys, shapes), on one line: its first line alone
    names no layer."""
    lines = [line.strip() for line in str(err).splitlines()]
    detail = "; ".join(line for line in lines[1:] if line) or lines[0]
    return detail if len(detail) <= most else detail[:most] + " .."
