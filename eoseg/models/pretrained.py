"""Reading pretrained state dicts and fitting their first layer to the model's bands (every encoder's loader uses these)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from eoseg.checkpoint import safe_torch_load
from eoseg.errors import EosegError
from eoseg.weights_record import METADATA_KEY


NESTING_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")  # where checkpoints keep their weights


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local state dict: a torch file (loaded safely) or .safetensors."""
    path = Path(path)
    if not path.is_file():
        raise EosegError(f"encoder weights not found: {path} (ENCODER_WEIGHTS)")
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:
            raise EosegError(f"{path}: not a loadable .safetensors file ({err})") from None
    state = safe_torch_load(path, "encoder state dict")
    if isinstance(state, dict) and not _tensors(state):
        # checkpoints of training frameworks nest it (TorchGeo/Lightning, eoseg: state_dict; others beside an optimizer)
        nested = [key for key in NESTING_KEYS if _tensors(state.get(key))]
        if len(nested) > 1:
            raise EosegError(f"{path}: holds several state dicts, under {', '.join(map(repr, nested))}; save the one "
                             "to start from alone")
        if nested:
            state = state[nested[0]]
    if not _tensors(state):
        found = (f"a dict of {', '.join(map(repr, list(state)[:5]))}{' ...' if len(state) > 5 else ''}"
                 if isinstance(state, dict) else type(state).__name__)
        raise EosegError(f"{path}: expected a state dict of tensors (or one under "
                         f"{', '.join(map(repr, NESTING_KEYS))}), got {found}")
    return state


def _tensors(state) -> bool:
    """Whether ``state`` is a state dict: a non-empty dict of tensors."""
    return isinstance(state, dict) and bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def other_normalisation_note(path: str | Path, band_names, mean, std) -> str | None:
    """A note where eoseg weights at ``path`` (ENCODER_WEIGHTS) were trained on bands of ``band_names`` (matched by name)
    normalised otherwise than ``mean`` / ``std``: their first layer starts from features of other input values."""
    signature = recorded_signature(path) or {}
    names, normalisation = signature.get("band_names"), signature.get("normalization")
    if not names or not isinstance(normalisation, dict):
        return None
    recorded = {name: (m, s) for name, m, s in zip(names, normalisation["mean"], normalisation["std"])}
    differ = [(name, recorded[name], (m, s)) for name, m, s in zip(band_names, mean, std)
              if name in recorded and not all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-9)
                                              for a, b in zip(recorded[name], (m, s)))]
    if not differ:
        return None
    listed = "; ".join(f"{name} mean {was[0]:g} std {was[1]:g}, now {now[0]:g} and {now[1]:g}" for name, was, now in differ)
    return (f"note: ENCODER_WEIGHTS {path} were trained on inputs normalised otherwise ({listed}): their first layer "
            "starts from features of other input values; set NORM_MEAN / NORM_STD (an EXTRA_SOURCES entry's mean / "
            "std) as they were to start nearer what they learned")


def recorded_signature(path: str | Path) -> dict | None:
    """The data signature eoseg weights at ``path`` (a checkpoint or .safetensors taken as ENCODER_WEIGHTS) record
    (classes, bands, normalisation, tiles); None for other state dicts."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as file:
                record = json.loads((file.metadata() or {}).get(METADATA_KEY, "{}"))
        except (SafetensorError, OSError, ValueError):
            return None
    else:
        record = safe_torch_load(path, "weights file")
    signature = record.get("signature") if isinstance(record, dict) else None
    return signature if isinstance(signature, dict) else None


def recorded_train_tiles(path: str | Path) -> list[str]:
    """The tiles that eoseg weights at ``path`` were trained on, those their own encoder had seen included, as they
    record them: a model started from them has seen those tiles too. [] for other state dicts."""
    signature = recorded_signature(path) or {}
    return sorted({*signature.get("train_tiles", ()), *signature.get("inherited_train_tiles", ())})


def first_layer_by_band_name(weight: torch.Tensor, recorded: list[str] | None, band_names: list[str]) -> tuple[torch.Tensor, str]:
    """First-layer filters (out, C, k, k) of eoseg weights trained on the bands ``recorded`` names, matched to the
    config's ``band_names`` by name, and what was done, to say: each band the weights know takes its filter, a band
    they do not know starts at 0 (it adds nothing until trained), a band they know that the config lacks is dropped.
    Without a name in common the filters are left to :func:`fit_first_layer`, which matches them by position."""
    from eoseg.tiles import band_kind  # here: eoseg.tiles imports the config, which imports the models

    recorded = list(recorded or [])
    if not recorded or not band_names or recorded == list(band_names) or len(recorded) != weight.shape[1]:
        return weight, ""
    # by what a name names: "NIR" is the "IR" the weights were trained on (review: its filter dropped)
    kinds, wanted = [band_kind(name) for name in recorded], [band_kind(name) for name in band_names]
    known = [kind for kind in wanted if kind in kinds]
    if not known:
        return weight, (f"; it was trained on bands {', '.join(recorded)} and the config reads {', '.join(band_names)}, "
                        "none of the same name: its first layer is matched to them by position")
    matched = weight.new_zeros((weight.shape[0], len(band_names), *weight.shape[2:]))
    for position, kind in enumerate(wanted):
        if kind in kinds:
            matched[:, position] = weight[:, kinds.index(kind)]
    new = [name for name, kind in zip(band_names, wanted) if kind not in kinds]
    dropped = [name for name, kind in zip(recorded, kinds) if kind not in wanted]
    return matched, (f"; its first layer's bands matched by name to {', '.join(band_names)}"
                     + (f" ({', '.join(new)} new: starting at 0)" if new else "")
                     + (f" ({', '.join(dropped)} left out)" if dropped else ""))


def adapt_first_layer(weight: torch.Tensor, bands: int) -> torch.Tensor:
    """First-layer filters (out, C, k, k) made for C bands (RGB, 13 Sentinel-2 bands...) made to read ``bands`` bands.

    With C or more bands, band j gets the filter of channel j mod C, divided by the
    number of bands that share that channel; with fewer, band j gets the sum of the
    filters of channels c with c mod ``bands`` = j. Either way the adapted layer's
    response to the C source bands repeated cyclically (R, G, B, R, ... or one grey band)
    is the source layer's response: an N-band model starts where the C-band one is, not
    from noise.
    """
    source = weight.shape[1]
    if bands >= source:
        shares = torch.bincount(torch.arange(bands) % source, minlength=source).to(weight.dtype)
        return torch.stack([weight[:, j % source] / shares[j % source] for j in range(bands)], dim=1)
    return torch.stack([weight[:, j::bands].sum(dim=1) for j in range(bands)], dim=1)


def fit_first_layer(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A first convolution's weights adapted to ``target``'s band count when they differ (4-D weights only)."""
    if value.ndim == 4 and target.ndim == 4 and value.shape[1] != target.shape[1]:
        return adapt_first_layer(value, target.shape[1])
    return value
