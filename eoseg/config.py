"""Loading config.py, --config files and KEY=VALUE overrides into one checked object.

Order of precedence, lowest first: the defaults in config.py, the preset named by
DATASET, the names of a ``--config`` file, ``KEY=VALUE`` overrides. Unknown names and
values of the wrong type are refused with the closest known name suggested.
"""

from __future__ import annotations

import ast
import difflib
import json
import runpy
from pathlib import Path
from typing import Any, Iterable

from eoseg.errors import EosegError
from eoseg.palette import Palette

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config.py"
SPLITS = {"train": "TRAIN_IDS", "test": "TEST_IDS", "official_test": "OFFICIAL_TEST_IDS"}


def _read_names(path: Path) -> dict[str, Any]:
    """Execute a config file and return its public UPPER_CASE names."""
    path = Path(path)
    if not path.is_file():
        raise EosegError(f"config file not found: {path}")
    try:
        namespace = runpy.run_path(str(path))
    except SyntaxError as err:
        raise EosegError(f"{path}, line {err.lineno}: syntax error: {err.msg}") from None
    except Exception as err:  # a user's Python file may raise anything while it runs
        raise EosegError(f"{path}: error while reading the config: {type(err).__name__}: {err}") from None
    return {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_")}


def _unknown(name: str, known: Iterable[str], where: str) -> EosegError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return EosegError(f"{where}: unknown config name {name}{hint}")


def _coerce(default: Any, value: Any) -> Any:
    """Widen a value to its default's type where nothing is lost, wherever it comes from: an int
    for a float, a number for a text inside a list (tile ids typed as numbers), item by item."""
    if isinstance(value, bool):
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, (list, tuple)) and default and isinstance(value, (list, tuple)):
        item = default[0]
        if isinstance(item, str):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return [_coerce(item, v) for v in value]
    return value


def _same_kind(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        # the default's first item says what the items are; an empty default says nothing
        return isinstance(value, (list, tuple)) and (
            not default or all(v is not None and _same_kind(default[0], v) for v in value))
    return isinstance(value, type(default))


def _kind(default: Any) -> str:
    """How a value like ``default`` is described in an error: "an int", "a list of float"."""
    if isinstance(default, (list, tuple)) and default:
        return f"a list of {_kind(default[0]).split(' ', 1)[1]}"
    name = "list" if isinstance(default, tuple) else type(default).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def parse_override(text: str, defaults: dict[str, Any]) -> tuple[str, Any]:
    """Parse ``KEY=VALUE``: VALUE as a Python literal, or a plain string where a string is expected."""
    key, _, raw = text.partition("=")
    key = key.strip()
    if key not in defaults:
        raise _unknown(key, defaults, f"override {text!r}")
    default = defaults[key]
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if isinstance(default, str):
        value = raw
    elif isinstance(default, bool) and raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    value = _coerce(default, value)
    if not _same_kind(default, value):
        raise EosegError(f"override {text!r}: {key} expects {_kind(default)} (default {default!r}), got {value!r}")
    return key, value


class Config:
    """The effective configuration: attribute access to every name, plus helpers."""

    def __init__(self, values: dict[str, Any], sources: list[str]):
        self._values = dict(values)
        self.sources = sources
        self._check()

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **changes: Any) -> "Config":
        """A copy with some names changed (checked like overrides)."""
        for key, value in changes.items():
            if key not in self._values:
                raise _unknown(key, self._values, "replace()")
            changes[key] = _coerce(self._values[key], value)
            if not _same_kind(self._values[key], changes[key]):
                raise EosegError(f"{key} expects {_kind(self._values[key])}, got {value!r}")
        return Config({**self._values, **changes}, self.sources + [f"replace({', '.join(changes)})"])

    def save(self, folder: str | Path, name: str = "config.json") -> Path:
        """Write the effective config as JSON into ``folder`` (atomically)."""
        from eoseg.io import atomic_write_text

        path = Path(folder) / name
        record = {"sources": self.sources, "config": self._values}
        atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
        return path

    # ------------------------------------------------------------ derived values
    @property
    def palette(self) -> Palette:
        return Palette(self.PALETTE, self.IGNORE_COLOR or None, self.IGNORE_LABEL)

    @property
    def num_classes(self) -> int:
        return len(self.CLASS_NAMES)

    @property
    def num_bands(self) -> int:
        return len(self.BANDS)

    def tile_ids(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise EosegError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return [str(t) for t in getattr(self, SPLITS[split])]

    def tile_path(self, pattern_name: str, tile_id: str) -> Path | None:
        """Path of tile ``tile_id`` in the collection ``pattern_name`` (None if the pattern is empty)."""
        pattern = getattr(self, pattern_name)
        if not pattern:
            return None
        try:
            relative = pattern.format(id=tile_id)
        except (KeyError, IndexError, ValueError) as err:
            raise EosegError(f"{pattern_name} {pattern!r}: bad pattern ({err}); use {{id}} for the tile id") from None
        return Path(self.DATA_ROOT) / relative

    def _check(self) -> None:
        v = self._values
        if len(v["PALETTE"]) != len(v["CLASS_NAMES"]):
            raise EosegError(f"PALETTE has {len(v['PALETTE'])} colours but CLASS_NAMES has {len(v['CLASS_NAMES'])} names")
        for name in ("BAND_NAMES", "NORM_MEAN", "NORM_STD"):
            if len(v[name]) != len(v["BANDS"]):
                raise EosegError(f"{name} has {len(v[name])} entries but BANDS selects {len(v['BANDS'])} bands")
        if any(s == 0 for s in v["NORM_STD"]):
            raise EosegError("NORM_STD must not contain 0")
        if any(not isinstance(b, int) or b < 1 for b in v["BANDS"]):
            raise EosegError(f"BANDS holds 1-based band numbers, got {v['BANDS']}")
        bad = [r for r in v["ROTATIONS"] if r not in (90, 180, 270)]
        if bad:
            raise EosegError(f"ROTATIONS may hold 90, 180 and 270 only, got {bad}")
        for name in ("PATCH_SIZE", "TRAIN_STRIDE", "WINDOW", "STRIDE", "BATCH_SIZE", "INFER_BATCH_SIZE"):
            if not isinstance(v[name], int) or v[name] < 1:
                raise EosegError(f"{name} must be a positive integer, got {v[name]!r}")
        if v["STRIDE"] > v["WINDOW"]:
            raise EosegError(f"STRIDE {v['STRIDE']} is larger than WINDOW {v['WINDOW']}: pixels between windows would get no label")
        if v["CLASS_WEIGHTS"] and len(v["CLASS_WEIGHTS"]) != len(v["CLASS_NAMES"]):
            raise EosegError(f"CLASS_WEIGHTS has {len(v['CLASS_WEIGHTS'])} entries for {len(v['CLASS_NAMES'])} classes")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in v["CLASS_WEIGHTS"]):
            raise EosegError(f"CLASS_WEIGHTS holds one number per class, got {v['CLASS_WEIGHTS']!r}")
        if v["TRAIN_SOURCE"] not in ("lmdb", "tiles"):
            raise EosegError(f"TRAIN_SOURCE must be 'lmdb' or 'tiles', got {v['TRAIN_SOURCE']!r}")
        self.palette  # validates colours and the ignore label


def load_config(
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: str | Path = DEFAULT_CONFIG_PATH,
) -> Config:
    """Build the effective config from config.py, its preset, a --config file and overrides."""
    defaults = _read_names(Path(base))
    presets = dict(defaults.pop("PRESETS", {}))
    sources = [str(base)]
    file_values: dict[str, Any] = {}
    if config_file:
        file_values = _read_names(Path(config_file))
        presets.update(file_values.pop("PRESETS", {}))
        for key, value in file_values.items():
            if key not in defaults:
                raise _unknown(key, defaults, str(config_file))
            file_values[key] = _coerce(defaults[key], value)
            if not _same_kind(defaults[key], file_values[key]):
                raise EosegError(f"{config_file}: {key} expects {_kind(defaults[key])}, got {value!r}")
        sources.append(str(config_file))
    override_values = dict(parse_override(item, defaults) for item in overrides)
    if override_values:
        sources.append("overrides: " + " ".join(overrides))

    dataset = override_values.get("DATASET", file_values.get("DATASET", defaults["DATASET"]))
    if dataset not in presets:
        close = difflib.get_close_matches(str(dataset), list(presets), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise EosegError(f"unknown DATASET {dataset!r}; {hint}presets: {', '.join(presets) or 'none'} (add yours to PRESETS)")
    for key in presets[dataset]:
        if key not in defaults:
            raise _unknown(key, defaults, f"preset {dataset!r}")
    values = {**defaults, **presets[dataset], **file_values, **override_values}
    return Config(values, sources)
