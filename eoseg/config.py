"""Loading config.py, --config files and KEY=VALUE overrides into one checked object.

Order of precedence, lowest first: the defaults in config.py, the preset named by
DATASET, the names of a ``--config`` file, ``KEY=VALUE`` overrides. config.py's DATASET
applies only without a ``--config`` file: a file that names no DATASET gets config.py's
defaults, the recipe for users' own data, not the sample's preset. Unknown names and
values of the wrong type are refused with the closest known name suggested.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import glob
import json
import os
import re
import runpy
import string
import sys
import types
import unicodedata
from pathlib import Path
from typing import Any, Iterable, Iterator

from eoseg.errors import EosegError
from eoseg.grid import check_resampling, note_once
from eoseg.io import VECTOR_SUFFIXES
from eoseg.models.resnet import RESNETS
from eoseg.palette import Palette, check_value_tolerance

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config.py"
SPLITS = {"train": "TRAIN_IDS", "test": "TEST_IDS", "official_test": "OFFICIAL_TEST_IDS"}
ID_LISTS = (*SPLITS.values(), "VAL_IDS")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("step", "poly", "cosine")
LOSSES = ("ce", "ce_dice", "focal", "ohem")
NO_PRESET = ""  # the DATASET that applies no preset, recorded as such in the effective config


def _read_names(path: Path) -> dict[str, Any]:
    """Execute a config file and return its public UPPER_CASE names."""
    path = Path(path)
    if not path.is_file():
        raise EosegError(f"config file not found: {path}")
    if _is_json_object(path):
        # run as Python, a JSON file fails on its first "false" or "null" with a NameError
        raise EosegError(f"{path}: this is JSON; --config takes a Python file assigning config names, "
                         "e.g. ITERATIONS = 2000 (the config.json eoseg writes records a run; it is not read back)")
    folder = str(path.resolve().parent)
    # config.py as a module imported before: taken out, so that an import of it by this file shows as its own
    defaults_modules = {name: module for name, module in sys.modules.items() if _is_defaults_module(module)}
    for name in defaults_modules:
        del sys.modules[name]
    modules = set(sys.modules)
    sys.path.insert(0, folder)  # a config may import another beside it (a base config and experiments on it)
    try:
        namespace = runpy.run_path(str(path))
    except SyntaxError as err:
        raise EosegError(f"{path}, line {err.lineno}: syntax error: {err.msg}") from None
    except Exception as err:  # a user's Python file may raise anything while it runs
        raise EosegError(f"{path}: error while reading the config: {type(err).__name__}: {err}") from None
    except SystemExit as err:  # sys.exit(0) in it: the step would end at once with status 0, having done nothing
        raise EosegError(f"{path}: the config calls exit ({err.code!r}) while it is read; a config only assigns "
                         "names") from None
    finally:
        sys.path.remove(folder)
        copied = [sys.modules[name] for name in set(sys.modules) - modules if _is_defaults_module(sys.modules[name])]
        for name in set(sys.modules) - modules:  # the next config's folder may hold another file of that name
            if str(getattr(sys.modules[name], "__file__", None) or "").startswith(folder + os.sep):
                del sys.modules[name]
        sys.modules.update(defaults_modules)
    if any(namespace.get("PRESETS") is getattr(module, "PRESETS", None) for module in copied):
        # 'from config import *', in it or in a base it imports: every default one the file sets (review: the
        # sample preset's patch size and budget silently gone)
        raise EosegError(f"{path}: it takes every name of eoseg's config.py ('from config import *', in it or in a "
                         "file it imports), which then counts as set by it, over any DATASET preset; leave that "
                         "import out: a --config file names what it changes, and config.py's defaults apply to the rest")
    return {k: v for k, v in namespace.items() if not k.startswith("_") and not isinstance(v, types.ModuleType)
            and not callable(v)}


def _is_defaults_module(module) -> bool:
    """Whether ``module`` is eoseg's config.py imported as a module (a user's own config.py is not)."""
    file = getattr(module, "__file__", None)
    return bool(file) and Path(file).resolve() == DEFAULT_CONFIG_PATH


def _upper_case(names: dict[str, Any]) -> dict[str, Any]:
    """The UPPER_CASE names of a config file, which are the config's (the rest are the file's own helpers)."""
    return {key: value for key, value in names.items() if key.isupper()}


def config_names() -> set[str]:
    """The names config.py defines: those a --config file or an override may set."""
    return set(_upper_case(_read_names(DEFAULT_CONFIG_PATH)))


def _is_json_object(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (ValueError, UnicodeDecodeError):
        return False


RENAMED = {"VGG16_BN_WEIGHTS": "ENCODER_WEIGHTS", "INFER_AUTOCAST": "INFER_PRECISION"}  # config names of earlier versions -> their names now


def _unknown(name: str, known: Iterable[str], where: str) -> EosegError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    if name in RENAMED:
        hint = f"; it is now called {RENAMED[name]}"
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


NULLABLE_NAMES = ("IGNORE_COLOR",)  # names with another default that also take None (see config.py)


def _same_kind(default: Any, value: Any, name: str = "") -> bool:
    if default is None:
        return True
    if value is None:
        return name in NULLABLE_NAMES
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


def override_arguments(values: dict[str, Any]) -> list[str]:
    """``{name: value}`` as ``KEY=VALUE`` overrides that :func:`parse_override` reads back: strings plain, the rest as literals."""
    return [f"{name}={value}" if isinstance(value, str) else f"{name}={value!r}" for name, value in values.items()]


LIST_ITEM = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)"|([^,]*))\s*(?:,|$)""")  # quoted (commas and all), or bare


def _bare_items(raw: str) -> list[str] | None:
    """The items of a list typed without quotes ("[a_1, b_2]", "[2_10]"; a quoted one may hold commas), as texts;
    None if ``raw`` is no list, or one holding lists or dicts."""
    raw = raw.strip()
    if not (raw.startswith("[") and raw.endswith("]")):
        return None
    found = LIST_ITEM.findall(raw[1:-1])
    if any(mark in bare for _, _, bare in found for mark in "[]{}"):
        return None
    return [single or double or bare.strip() for single, double, bare in found if single or double or bare.strip()]


def parse_override(text: str, defaults: dict[str, Any]) -> tuple[str, Any]:
    """Parse ``KEY=VALUE``: VALUE as a Python literal, or a plain string where a string is expected. A list of texts
    (tile ids, band names) may be typed without quotes, each item read as it is typed: 2_10, a number to Python
    (210), is tile 2_10."""
    key, _, raw = text.partition("=")
    key = key.strip()
    if key not in defaults:
        raise _unknown(key, defaults, f"override {text!r}")
    default = defaults[key]
    texts = key in (*ID_LISTS, "TTA") or (isinstance(default, list) and bool(default) and isinstance(default[0], str))
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if isinstance(default, str):
        value = value if isinstance(value, str) else raw  # quoted as in Python ('"data/x"'), or as it is
    elif isinstance(default, bool) and raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    elif texts and _bare_items(raw) is not None and (isinstance(value, str) or (isinstance(value, list) and all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value))):  # typed bare, or numbers
        value = _bare_items(raw)
    value = _coerce(default, value)
    if not _same_kind(default, value, key):
        example = ""
        if isinstance(default, list) and not isinstance(value, (list, tuple)) and _bare_items(raw) is None:
            item = raw.strip() if texts else value  # one item typed as a list of one; 2_10 as typed, not 210
            example = f"; a list is written in brackets, quoted for the shell: {key}=\"{[item]!r}\""
        raise EosegError(f"override {text!r}: {key} expects {_kind(default)} (default {default!r}), got {value!r}{example}"
                         f"{_ignore_hint(key, value, defaults)}")
    return key, value


CLASS_ID_NAMES = ("VECTOR_BACKGROUND_CLASS", "VECTOR_POLYGON_CLASS")  # settings that take a class id


def _ignore_hint(name: str, value: Any, defaults: dict[str, Any]) -> str:
    """Where a class id setting is given 'ignore' (as LABEL_VALUES takes it): the id that means so."""
    if name in CLASS_ID_NAMES and isinstance(value, str) and value.strip().lower() == IGNORE:
        return f"; for unlabelled pixels give it IGNORE_LABEL's value ({defaults['IGNORE_LABEL']} by default)"
    return ""


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
            if not _same_kind(self._values[key], changes[key], key):
                raise EosegError(f"{key} expects {_kind(self._values[key])}, got {value!r}")
        return Config({**self._values, **changes}, self.sources + [f"replace({', '.join(changes)})"])

    def save_beside(self, output: str | Path) -> Path:
        """Write the effective config of a single-file output as OUTPUT.config.json: one per output,
        so that the next output in the folder does not overwrite it."""
        output = Path(output)
        return self.save(output.parent, f"{output.name}.config.json")

    def save(self, folder: str | Path, name: str = "config.json", step: str | None = None) -> Path:
        """Write the effective config as JSON into ``folder`` (atomically); ``step`` names the step that ran, where
        its folder's config.json must be told from another's."""
        from eoseg.io import atomic_write_text

        from eoseg import __version__

        path = Path(folder) / name
        # relative paths (DATA_ROOT, the _DIRs) are taken from the folder a script ran in
        record = {"sources": self.sources, "config": self._values, "working_directory": os.getcwd(),
                  "eoseg_version": __version__}
        found = {}
        for list_name in ID_LISTS:  # what the globs stood for, where this machine has the images
            if any(is_id_glob(str(entry)) for entry in self._values[list_name]):
                try:
                    found[list_name] = self.ids(list_name)
                except EosegError:
                    continue
        if found:
            record["tile_ids"] = found
        if step is not None:
            record["step"] = step
        atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
        return path

    # ------------------------------------------------------------ derived values
    @property
    def palette(self) -> Palette:
        return Palette(self.PALETTE, self.IGNORE_COLOR or None, self.IGNORE_LABEL, self.LABEL_TOLERANCE)

    @property
    def num_classes(self) -> int:
        return len(self.CLASS_NAMES)

    @property
    def extra_sources(self) -> list[dict]:
        """EXTRA_SOURCES checked and completed: raster entries as given, derived ones with their defaults."""
        return _extra_sources(self._values)

    @property
    def stacked_band_names(self) -> list[str]:
        """Names of every band the network sees, in order: BAND_NAMES, then each extra source's."""
        return list(self.BAND_NAMES) + [name for source in self.extra_sources for name in source["band_names"]]

    @property
    def stacked_mean(self) -> list[float]:
        """Per stacked band, subtracted from the raw values: NORM_MEAN, then each extra source's mean."""
        return [float(m) for m in self.NORM_MEAN] + [float(m) for s in self.extra_sources for m in s["mean"]]

    @property
    def stacked_std(self) -> list[float]:
        """Per stacked band, divides after the mean: NORM_STD, then each extra source's std."""
        return [float(m) for m in self.NORM_STD] + [float(m) for s in self.extra_sources for m in s["std"]]

    @property
    def source_bands(self) -> list[tuple[str, slice]]:
        """Each raster extra source's band names and its bands' positions in the stacked input (derived
        bands, computed from the image's, left out)."""
        first, placed = len(self.BANDS), []
        for source in self.extra_sources:
            count = len(source["band_names"])
            if "derived" not in source:
                placed.append((", ".join(source["band_names"]), slice(first, first + count)))
            first += count
        return placed

    @property
    def num_bands(self) -> int:
        """Bands of the stacked input: the image's BANDS plus every extra source's."""
        return len(self.stacked_band_names)

    def tile_ids(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise EosegError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return self.ids(SPLITS[split])

    def ids(self, name: str) -> list[str]:
        """The tile ids of the list ``name`` (TRAIN_IDS, ...): an entry holding *, ? or [...] stands for
        the ids of every image IMAGE_PATTERN finds that it matches, in natural order (2 before 10); an
        entry "!..." takes the ids it matches out of those listed before it."""
        found: list[str] = []
        for entry in map(str, self._values[name]):
            if entry.startswith("!"):
                kept = [tile_id for tile_id in found if not fnmatch.fnmatchcase(_nfc(tile_id), _nfc(entry[1:]))]
                if len(kept) == len(found):  # the tile it was meant for stays: learned from, or scored
                    other_case = [tile_id for tile_id in found
                                  if fnmatch.fnmatch(_nfc(tile_id).lower(), _nfc(entry[1:]).lower())]
                    if other_case:
                        raise EosegError(f"{name} entry {entry!r} takes out none of the ids before it, but for the case "
                                         f"of their letters {', '.join(other_case[:3])}: write them as named")
                    note_once(("takes out nothing", name, entry),
                              f"{name} entry {entry!r} takes out none of the ids listed before it")
                found = kept
                continue
            as_pattern = is_id_glob(entry) and not self._literal_id(entry, name)
            for tile_id in self._found_ids(entry, name) if as_pattern else [entry]:
                if tile_id not in found:
                    found.append(tile_id)
        return found

    def _literal_id(self, entry: str, name: str) -> bool:
        """Whether an entry with glob characters is an image's id as it is ("scene[5]"); refused if it would match
        other images' ids as a pattern too."""
        try:
            if not self.IMAGE_PATTERN or not self.tile_path("IMAGE_PATTERN", entry).is_file():
                return False
        except EosegError:  # fewer pieces than IMAGE_PATTERN's {part[i]} name: no image's id
            return False
        try:
            matched = self._found_ids(entry, name)
        except EosegError:  # it matches no other id
            return True
        raise EosegError(f"{name} entry {entry!r} is an image's id and a pattern matching the ids {', '.join(matched[:5])}; "
                         f"write {glob.escape(entry)!r} for the id alone, or its ids in full")

    def _found_ids(self, id_glob: str, name: str) -> list[str]:
        cache = self.__dict__.setdefault("_found", {})
        if id_glob not in cache:
            cache[id_glob] = find_tile_ids(self.DATA_ROOT, self.IMAGE_PATTERN, id_glob, name)
        return cache[id_glob]

    def tile_path(self, pattern_name: str, tile_id: str) -> Path | None:
        """Path of tile ``tile_id`` in the collection ``pattern_name`` (None if the pattern is empty)."""
        return self.pattern_path(getattr(self, pattern_name), tile_id, pattern_name)

    def pattern_path(self, pattern: str, tile_id: str, where: str) -> Path | None:
        """Path of tile ``tile_id`` under DATA_ROOT by ``pattern`` (None if empty); ``where`` names it in errors."""
        if not pattern:
            return None
        try:
            relative = pattern.format(**id_fields(tile_id))
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            pieces = len(id_fields(tile_id)["part"])
            raise EosegError(f"{where} {pattern!r}: bad pattern for tile {tile_id!r} ({type(err).__name__}: {err}); use "
                             f"{{id}} for the tile id, {{part[0]}} .. {{part[{pieces - 1}]}} for its pieces between "
                             "underscores, e.g. {part[0]:0>2} padded to 2 characters") from None
        path = Path(self.DATA_ROOT) / relative
        if not uses_tile_id(pattern):
            if not where.startswith(SHARED_SOURCES):
                name = Path(pattern)
                suffix = "".join(name.suffixes)
                raise EosegError(f"{where} {pattern!r} has no {{id}}: every tile would read the same file; "
                                 f"put {{id}} where the tile id goes in the file name (for this one file: {where} = "
                                 f"{str(name.with_name('{id}' + suffix))!r} and the id {name.name.removesuffix(suffix)!r})")
            if Path(pattern).suffix.lower() not in VECTOR_SUFFIXES:
                self._check_shared_raster(path, pattern, where)
        return path

    def _check_shared_raster(self, path: Path, pattern: str, where: str) -> None:
        """One raster for every tile (a land-cover map, a DSM mosaic) is read where each tile lies: it needs
        a georeference, without which each tile would take the whole raster as its own."""
        checked = self.__dict__.setdefault("_shared_checked", set())
        if path in checked or not path.is_file():
            return  # a missing file is reported where it is opened
        from eoseg.io import raster_info

        if not raster_info(path, where).georeferenced:
            raise EosegError(f"{where} {pattern!r} has no {{id}}: one raster for every tile is read where each tile "
                             f"lies, and {path} has no georeference to say where that is; put {{id}} where the tile id "
                             "goes in the file name (a file per tile), or give the raster its CRS and transform")
        checked.add(path)

    def _check(self) -> None:
        v = self._values
        if len(v["PALETTE"]) != len(v["CLASS_NAMES"]):
            raise EosegError(f"PALETTE has {len(v['PALETTE'])} colours but CLASS_NAMES has {len(v['CLASS_NAMES'])} names")
        if len(v["CLASS_NAMES"]) < 2:
            raise EosegError(f"CLASS_NAMES has {len(v['CLASS_NAMES'])} class: a network tells classes apart, and the pixels "
                             "of no interest are a class too, e.g. CLASS_NAMES = ['background', 'building']")
        alike = [" ".join(str(name).split()).casefold() for name in v["CLASS_NAMES"]]  # "Water " is "water" to a reader
        twice = sorted({name for name, key in zip(v["CLASS_NAMES"], alike) if alike.count(key) > 1})
        if twice:
            raise EosegError(f"CLASS_NAMES names {', '.join(map(repr, twice))} more than once: each class needs a name of "
                             "its own (maps, metrics and legends go by them); to merge classes, map their values to one "
                             "class in LABEL_VALUES")
        count = len(v["BANDS"])
        if len(v["BAND_NAMES"]) != count:
            raise EosegError(f"BAND_NAMES has {len(v['BAND_NAMES'])} entries but BANDS selects {count} bands")
        for name in ("NORM_MEAN", "NORM_STD"):
            if len(v[name]) != count:
                raise EosegError(
                    f"{name} has {len(v[name])} entries but BANDS selects {count} bands: give one per band, in BANDS' "
                    f"order (NORM_MEAN = {[0.0] * count} and NORM_STD = {[255.0] * count} map 8-bit values to 0..1; "
                    "then `python check_data.py --config FILE --write-norm` writes your training tiles' own)")
        if any(s <= 0 for s in v["NORM_STD"]):  # standard deviations: a sign typed wrong flips a band unsaid
            raise EosegError(f"NORM_STD values are standard deviations, above 0; got {v['NORM_STD']}")
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

        if v["STREAM_BANDS"] < 0:
            raise EosegError(f"STREAM_BANDS must be a whole number of bands >= 0 (0 = the image's BANDS), got {v['STREAM_BANDS']!r}")
        if v["AUX_LOSS_WEIGHT"] < 0:
            raise EosegError(f"AUX_LOSS_WEIGHT must be >= 0, got {v['AUX_LOSS_WEIGHT']!r}")
        if v["ENCODER"] not in RESNETS:
            raise EosegError(f"ENCODER must be one of {', '.join(RESNETS)}, got {v['ENCODER']!r}")
        if v["TRAIN_SOURCE"] not in ("lmdb", "tiles"):
            raise EosegError(f"TRAIN_SOURCE must be 'lmdb' or 'tiles', got {v['TRAIN_SOURCE']!r}")
        self.palette  # validates colours and the ignore label
        _extra_sources(v)
        if not isinstance(v["COMPOSITE_NDSM_MAX"], (int, float)) or v["COMPOSITE_NDSM_MAX"] <= 0:
            raise EosegError(f"COMPOSITE_NDSM_MAX must be a positive number of metres, got {v['COMPOSITE_NDSM_MAX']!r}")
        check_value_tolerance(v["LABEL_TOLERANCE"], [raw for raw, _ in label_value_pairs(v)])
        check_resampling(v["GRID_RESAMPLING"], "GRID_RESAMPLING")
        if v["VECTOR_OVERLAP"] not in VECTOR_OVERLAPS:
            raise EosegError(f"VECTOR_OVERLAP must be one of {', '.join(map(repr, VECTOR_OVERLAPS))}, got {v['VECTOR_OVERLAP']!r}")
        if v["VECTOR_BOUNDARY"] not in VECTOR_BOUNDARIES:
            raise EosegError(f"VECTOR_BOUNDARY must be one of {', '.join(map(repr, VECTOR_BOUNDARIES))}, got {v['VECTOR_BOUNDARY']!r}")
        if v["VECTOR_BOUNDARY_WIDTH"] <= 0:
            raise EosegError(f"VECTOR_BOUNDARY_WIDTH is the ignore band's width in pixels, > 0; got {v['VECTOR_BOUNDARY_WIDTH']!r}")
        for name in ("VECTOR_CLASS_FIELD", "VECTOR_LAYER"):
            if v[name] and Path(v["LABEL_PATTERN"]).suffix.lower() not in VECTOR_SUFFIXES:
                raise EosegError(f"{name} is set ({v[name]!r}) but LABEL_PATTERN {v['LABEL_PATTERN']!r} is not a vector file "
                                 f"({', '.join(VECTOR_SUFFIXES)}); point LABEL_PATTERN at the polygons, or set {name} = \"\"")
        vector_labels = Path(v["LABEL_PATTERN"]).suffix.lower() in VECTOR_SUFFIXES
        for name in ("VECTOR_POLYGON_CLASS", "VECTOR_BACKGROUND_CLASS") if vector_labels else ():
            if not (0 <= v[name] < len(v["CLASS_NAMES"]) or v[name] == v["IGNORE_LABEL"]):
                raise EosegError(f"{name} must be a class id 0..{len(v['CLASS_NAMES']) - 1} or IGNORE_LABEL "
                                 f"{v['IGNORE_LABEL']}, got {v[name]!r}")
        _check_training_numbers(v)
        check_output_folders(v)
        if v["WRITE_POLYGONS"] not in ("", ".gpkg", ".geojson"):  # checked before any raster is labelled
            raise EosegError(f"WRITE_POLYGONS must be '', '.gpkg' or '.geojson', got {v['WRITE_POLYGONS']!r}")
        for name in ("POLYGON_SIMPLIFY", "POLYGON_MIN_AREA"):  # likewise: they were refused once a raster was labelled
            if not v[name] >= 0:
                raise EosegError(f"{name} must be 0 or more (CRS units), got {v[name]!r}")
        size = v["INFER_PIXEL_SIZE"]
        if size not in (None, "image") and not (isinstance(size, (int, float)) and not isinstance(size, bool) and size > 0):
            raise EosegError(f"INFER_PIXEL_SIZE must be None (the weights' pixel size), a pixel size in metres > 0 or "
                             f"'image', got {size!r}")
        if not v["INFER_VALUE_SCALE"] > 0:
            raise EosegError(f"INFER_VALUE_SCALE multiplies the images' values, > 0 (1 = as they are); got {v['INFER_VALUE_SCALE']!r}")
        for name in ID_LISTS:
            check_tile_ids(v[name], name)
        # under 2 x PATCH_SIZE it is refused only where a tile is split (eoseg.holdout), once the lists' globs are read
        if v["HOLDOUT_BLOCK"] < 0:
            raise EosegError(f"HOLDOUT_BLOCK must be 0 (no split) or at least 2 x PATCH_SIZE = {2 * v['PATCH_SIZE']} px, "
                             f"so that training patches fit beside the held-out blocks; got {v['HOLDOUT_BLOCK']!r}")
        if v["HOLDOUT_EVERY"] < 2:
            raise EosegError(f"HOLDOUT_EVERY must be 2 or more (1 block in that many is held out), got {v['HOLDOUT_EVERY']!r}")
        from eoseg.augment import TTA_NAMES
        from eoseg.precision import check_precision  # torch loads only once a config is checked
        from eoseg.predict import BLENDS

        if v["BLEND"] not in BLENDS:
            raise EosegError(f"BLEND must be one of {', '.join(map(repr, BLENDS))}, got {v['BLEND']!r}")
        bad = [name for name in v["TTA"] if name not in TTA_NAMES]
        if bad:
            raise EosegError(f"TTA may hold {', '.join(map(repr, TTA_NAMES))}; got {bad}")
        if v["INFER_ENGINE"] not in INFER_ENGINES:
            raise EosegError(f"INFER_ENGINE must be one of {', '.join(map(repr, INFER_ENGINES))}, got {v['INFER_ENGINE']!r}")

        for name in ("PRECISION", "INFER_PRECISION"):
            check_precision(v[name], name)
        if v["CHANNELS_LAST"] not in (None, True, False):
            raise EosegError(f"CHANNELS_LAST must be None (with bfloat16/float16 only), True or False, got {v['CHANNELS_LAST']!r}")
        _check_recipe(v)


OUTPUT_FOLDERS = ("PATCHES_DIR", "LMDB_DIR", "TRAIN_DIR", "INFER_DIR")
REPLACED_FOLDERS = ("PATCHES_DIR", "LMDB_DIR")  # replaced whole by their step's --force (eoseg.io.atomic_directory)


def check_output_folders(v: dict[str, Any], given_as: dict[str, str] | None = None) -> None:
    """Refuse output folders that are one folder, or hold DATA_ROOT, and anything configured inside a folder that
    its step replaces whole: one step's --force would delete the data or another step's results. ``given_as``: how
    a script's flag gave a folder ({"INFER_DIR": "--out"}), as the messages name it."""
    shown = {name: (given_as or {}).get(name, name) for name in (*OUTPUT_FOLDERS, "MODEL_FILE")}
    paths = {name: Path(v[name]).resolve() for name in (*OUTPUT_FOLDERS, "DATA_ROOT", "MODEL_FILE")}
    for index, name in enumerate(OUTPUT_FOLDERS):
        for other in OUTPUT_FOLDERS[index + 1:]:
            if paths[name] == paths[other]:
                raise EosegError(f"{shown[name]} and {shown[other]} are one folder ({v[name]}): each step writes its own; "
                                 "give them different folders")
        if paths["DATA_ROOT"].is_relative_to(paths[name]):
            raise EosegError(f"{shown[name]} {v[name]} holds DATA_ROOT {v['DATA_ROOT']}: its step would write among the "
                             "data, and its --force replace or remove what is there; give it a folder of its own")
    for name in REPLACED_FOLDERS:
        for other in (*OUTPUT_FOLDERS, "MODEL_FILE"):
            if other != name and paths[other].is_relative_to(paths[name]):
                raise EosegError(f"{shown[other]} {v[other]} lies inside {shown[name]} {v[name]}, which its step replaces "
                                 "whole (its --force would delete it); put it elsewhere")


def given_folders(cfg: "Config", flags: dict[str, tuple[str, str | None]]) -> "Config":
    """``cfg`` with the folders a script's flags give in place of their settings ({setting: (flag, value)}; no value
    leaves the setting), checked as the settings are (:func:`check_output_folders`), so that its saved config says
    where it wrote."""
    given = {name: value for name, (_, value) in flags.items() if value}
    if not given:
        return cfg
    check_output_folders({**cfg.to_dict(), **given}, {name: flags[name][0] for name in given})
    return cfg.replace(**given)


def _check_recipe(v: dict[str, Any]) -> None:
    """The training recipe's choices and numbers (see config.py: LR_STEPS, TRAIN_MINUTES to OHEM_FRACTION)."""
    for name, choices in (("OPTIMIZER", OPTIMIZERS), ("LR_SCHEDULE", LR_SCHEDULES), ("LOSS", LOSSES)):
        if v[name] not in choices:
            raise EosegError(f"{name} must be one of {', '.join(map(repr, choices))}, got {v[name]!r}")
    ranges = {  # name: (lowest, highest, whether the lowest is allowed)
        "TRAIN_MINUTES": (0.0, float("inf"), True), "WARMUP_FRACTION": (0.0, 1.0, True),
        "POLY_POWER": (0.0, float("inf"), False), "FINAL_LR_FACTOR": (0.0, 1.0, True),
        "DICE_WEIGHT": (0.0, float("inf"), True), "FOCAL_GAMMA": (0.0, float("inf"), True),
        "OHEM_FRACTION": (0.0, 1.0, False), "COLOR_JITTER": (0.0, 1.0, True),
        "RANDOM_SCALE": (0.0, 3.0, True),
    }
    for name, (low, high, low_allowed) in ranges.items():
        value = v[name]
        if not (low <= value if low_allowed else low < value) or value > high or value != value:
            bound = f"{'>=' if low_allowed else '>'} {low:g}" + (f" and <= {high:g}" if high != float("inf") else "")
            raise EosegError(f"{name} must be {bound}, got {value!r}")
    # files and overrides are type-checked against the default, and LR_STEPS's [] names no item type
    if any(isinstance(step, bool) or not isinstance(step, int) or step < 1 for step in v["LR_STEPS"]):
        raise EosegError(f"LR_STEPS holds iterations, whole numbers >= 1, got {v['LR_STEPS']!r}")
    if v["COLOR_JITTER"] >= 1:
        raise EosegError(f"COLOR_JITTER must be below 1 (a band's random factor 1 +- it stays positive), got {v['COLOR_JITTER']!r}")
    if v["WARMUP_FRACTION"] >= 1:
        raise EosegError(f"WARMUP_FRACTION must be below 1 (a fraction of the training left to the schedule), got {v['WARMUP_FRACTION']!r}")


VECTOR_BOUNDARIES = ("centre", "all_touched", "ignore_band")
VECTOR_OVERLAPS = ("ignore", "smallest", "last")
IGNORE = "ignore"  # the target of LABEL_VALUES that sends a raw value to IGNORE_LABEL
# the tiles' sources that may be one file for all tiles (no {id}): polygons, or a georeferenced raster read
# where each tile lies; images, colour ground truth and what the scripts write hold one tile each
def id_fields(tile_id: str) -> dict:
    """What a file pattern may name of a tile id: ``{id}``, and ``{part[i]}``, its i-th piece between underscores,
    which a format spec may pad or cut (``{part[0]:0>2}``: Potsdam's DSMs name tile 2_10 dsm_potsdam_02_10.tif)."""
    return {"id": tile_id, "part": tile_id.split("_")}


class _AnyPiece:
    """A stand-in for every piece of an id (and for them all), to see whether a pattern names one."""

    def __getitem__(self, index) -> str:
        return "\0"

    def __format__(self, spec: str) -> str:
        return "\0"


def uses_tile_id(pattern: str) -> bool:
    """Whether a file pattern names one file per tile ({id} or {part[i]}), not one file for all."""
    try:
        return "\0" in pattern.format(id="\0", part=_AnyPiece())
    except (KeyError, IndexError, ValueError, AttributeError):
        return True  # a bad pattern: pattern_path says what is wrong with it


INFER_ENGINES = ("torch", "onnxruntime")
SHARED_SOURCES = ("LABEL_PATTERN", "DSM_PATTERN", "NDSM_PATTERN", "EXTRA_SOURCES[")
# vector label files (LABEL_PATTERN), read with pyogrio; without {id}, one file holds every tile's polygons


def label_value_pairs(v: dict[str, Any]) -> list[list]:
    """LABEL_VALUES checked, as sorted [raw value, class id or "ignore"] pairs: the form recorded in
    artifacts (JSON keeps lists as they are but turns number keys into text)."""
    values = v["LABEL_VALUES"]
    if not isinstance(values, dict):
        raise EosegError(f"LABEL_VALUES maps raw label values to class ids or 'ignore', e.g. {{0: 0, 255: 1}}; got {values!r}")
    classes = len(v["CLASS_NAMES"])
    for raw, target in values.items():
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise EosegError(f"LABEL_VALUES: the raw value {raw!r} must be an integer (or, for a vector class attribute, a text)")
        if target != IGNORE and (isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < classes):
            raise EosegError(f"LABEL_VALUES: {raw!r} -> {target!r}; a raw value maps to a class id 0..{classes - 1} "
                             f"(CLASS_NAMES has {classes} names) or to {IGNORE!r}")
    return sorted(([raw, target] for raw, target in values.items()), key=lambda pair: (isinstance(pair[0], str), pair[0]))


SEED_LIMIT = 2**32  # numpy's and DataLoader's seeds are unsigned 32-bit


def _check_training_numbers(v: dict[str, Any]) -> None:
    """Numbers that would otherwise fail deep inside torch or numpy, after the run has started."""
    if not 0 <= v["SEED"] < SEED_LIMIT or not 0 <= v["SHUFFLE_SEED"] < SEED_LIMIT:
        name = "SEED" if not 0 <= v["SEED"] < SEED_LIMIT else "SHUFFLE_SEED"
        raise EosegError(f"{name} must be in 0..{SEED_LIMIT - 1} (a 32-bit seed), got {v[name]!r}")
    for name in ("BASE_LR", "ENCODER_LR_FACTOR", "MOMENTUM", "WEIGHT_DECAY"):
        if v[name] < 0:
            raise EosegError(f"{name} must not be negative, got {v[name]!r}")
    if v["BASE_LR"] == 0:
        raise EosegError("BASE_LR is 0: the network would never learn; give a positive learning rate")


def check_tile_ids(tile_ids: Iterable[str], where: str) -> None:
    """Tile ids become parts of file names (patches, outputs): refuse what would leave the folder."""
    for tile_id in tile_ids:
        if not tile_id or "/" in tile_id or "\\" in tile_id or tile_id in (".", ".."):
            raise EosegError(f"{where}: tile id {tile_id!r} cannot be part of a file name "
                             "(empty, '.', '..' or holding '/' or '\\'); use the id that {{id}} stands for in the patterns")


def is_id_glob(entry: str) -> bool:
    return entry.startswith("!") or any(character in entry for character in "*?[")


def find_tile_ids(data_root: str, image_pattern: str, id_glob: str, where: str) -> list[str]:
    """The ids matching ``id_glob`` of the images that ``image_pattern`` (its {id} standing for one
    file or folder name; its {part[i]} for pieces of it) finds under ``data_root``, in natural order; none is an
    error. Ids and globs compare in one Unicode form: a name macOS wrote (decomposed) matches the glob typed."""
    searched, _ = _id_search(data_root, image_pattern, "*", where)
    every_id = set(_ids_of(glob.glob(searched), data_root, image_pattern, where))
    found = {tile_id for tile_id in every_id if fnmatch.fnmatchcase(_nfc(tile_id), _nfc(id_glob))}
    other_case = sorted(set(glob.glob(_id_search(data_root, image_pattern, id_glob, where, _any_case)[0]))
                        - set(glob.glob(_id_search(data_root, image_pattern, id_glob, where)[0])))
    if other_case:  # Linux matches names exactly: "UP1.TIF" beside "a1.tif" would be left out without a word
        note_once(("other case", image_pattern, id_glob),
                  f"IMAGE_PATTERN {image_pattern!r} leaves out {', '.join(map(os.path.basename, other_case[:3]))}"
                  f"{f' and {len(other_case) - 3} more' if len(other_case) > 3 else ''}, named so but for the case of "
                  "their letters: rename them to be read")
    other_case_ids = sorted(tile_id for tile_id in every_id - found
                            if fnmatch.fnmatch(_nfc(tile_id).lower(), _nfc(id_glob).lower()))
    if other_case_ids:  # ids match as globs do, letter case and all: "tile_*" leaves "Tile_10" out
        note_once(("other case ids", image_pattern, id_glob),
                  f"{where}: {id_glob!r} leaves out the ids {', '.join(other_case_ids[:3])}"
                  f"{f' and {len(other_case_ids) - 3} more' if len(other_case_ids) > 3 else ''}, which it matches but "
                  "for the case of their letters: list them too if they are meant")
    if not found:
        raise EosegError(f"{where}: {id_glob!r} matches no image: no file {Path(data_root) / image_pattern} with {{id}} "
                         f"{id_glob!r}; check DATA_ROOT and IMAGE_PATTERN")
    # natural order (2 before 10), then as texts: "1" and "01" in one order whatever the run (set order varies)
    return sorted(found, key=lambda tile_id: ([(0, int(t), "") if t.isdigit() else (1, 0, t)
                                               for t in re.split(r"(\d+)", tile_id) if t], tile_id))


NAME_PIECE = "[^/\\\\]+?"  # what a pattern's field stands for in a path: one file or folder name, or part of it


def _pattern_pieces(data_root: str, pattern: str) -> Iterator[tuple[str, str | None]]:
    """(literal text, the field after it or None) of ``pattern`` under ``data_root`` (its folder first): each field as
    written ("id", "id:0>3", "part[0]:0>2")."""
    root = str(Path(data_root) / "_")[:-1] if not Path(pattern).is_absolute() else ""
    yield root, None
    try:
        fields = list(string.Formatter().parse(pattern))
    except ValueError as err:
        raise EosegError(f"pattern {pattern!r}: bad pattern ({err})") from None
    for text, field, spec, conversion in fields:
        yield text, None if field is None else field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")


def _id_search(data_root: str, image_pattern: str, id_glob: str, where: str,
               literal=glob.escape) -> tuple[str, re.Pattern]:
    """The glob of the image files whose {id} matches ``id_glob`` (the rest of the pattern as ``literal`` makes it;
    {part[i]} and formatted fields as any name), and the regular expression that takes the id out of one."""
    searched, expression, named = [], [], False
    for text, field in _pattern_pieces(data_root, image_pattern):
        searched.append(literal(text))
        expression.append(re.escape(text))
        if field == "id":
            searched.append(id_glob)
            expression.append("(?P=id)" if named else "(?P<id>[^/\\\\]+)")
            named = True
        elif field is not None:
            searched.append("*")
            expression.append(NAME_PIECE)
    if not named:
        raise EosegError(f"{where}: {id_glob!r} finds tiles by IMAGE_PATTERN's {{id}}, and {image_pattern!r} has none")
    return "".join(searched), re.compile("".join(expression))


def _ids_of(paths: list[str], data_root: str, image_pattern: str, where: str) -> Iterator[str]:
    """The ids of ``paths`` (found by :func:`_id_search`) whose path the pattern gives for that id."""
    expression = _id_search(data_root, image_pattern, "*", where)[1]
    for path in paths:
        match = expression.fullmatch(path)
        if not match:
            continue
        try:
            made = str(Path(data_root) / image_pattern.format(**id_fields(match["id"])))
        except (KeyError, IndexError, ValueError, AttributeError):
            continue  # an id of fewer pieces than the pattern names
        if made == str(Path(path)):
            yield match["id"]


def matches_pattern(data_root: str, pattern: str, path: Path) -> bool:
    """Whether file ``path`` is one that ``pattern`` (under ``data_root``) names for some tile id: each field one
    name or part of one, never a path across folders."""
    if not pattern:
        return False
    try:
        expression = "".join(re.escape(text) + ("" if field is None else NAME_PIECE)
                             for text, field in _pattern_pieces(str(Path(data_root).resolve()), pattern))
    except EosegError:  # a bad pattern: pattern_path says what is wrong with it
        return False
    return re.fullmatch(expression, str(path.resolve())) is not None


def _nfc(text: str) -> str:
    """``text`` in Unicode's composed form: "ü" typed, and "u" + diaeresis as macOS writes file names, alike."""
    return unicodedata.normalize("NFC", text)


def _any_case(text: str) -> str:
    """A glob matching ``text`` whatever the case of its letters."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.lower() != c.upper() else glob.escape(c) for c in text)


RASTER_SOURCE_KEYS = ("pattern", "bands", "band_names", "mean", "std")
OPTIONAL_RASTER_SOURCE_KEYS = ("resampling",)  # how a source on another grid is warped onto the image's
DERIVED_SOURCE_KEYS = ("derived", "red", "nir", "band_names", "mean", "std")
DERIVED_KINDS = ("ndvi",)


def _numbers(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)


def _extra_sources(v: dict[str, Any]) -> list[dict]:
    """EXTRA_SOURCES checked, with derived entries completed by their defaults (see config.py)."""
    sources = v["EXTRA_SOURCES"]
    if not isinstance(sources, (list, tuple)):
        raise EosegError(f"EXTRA_SOURCES must be a list of dicts, got {sources!r}")
    checked = []
    for i, entry in enumerate(sources):
        where = f"EXTRA_SOURCES[{i}]"
        if not isinstance(entry, dict):
            raise EosegError(f"{where} must be a dict with a 'pattern' (a raster per tile) or 'derived' (a computed band), got {entry!r}")
        derived = "derived" in entry
        allowed = DERIVED_SOURCE_KEYS if derived else RASTER_SOURCE_KEYS + OPTIONAL_RASTER_SOURCE_KEYS
        for key in entry:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                kind = "a derived source" if derived else "a raster source"
                raise EosegError(f"{where}: unknown key {key!r} for {kind}; {hint}keys: {', '.join(allowed)}")
        if derived:
            entry = {"red": v["RED_BAND"], "nir": v["NIR_BAND"], "band_names": ["NDVI"], "mean": [0.0], "std": [1.0], **entry}
            if entry["derived"] not in DERIVED_KINDS:
                raise EosegError(f"{where}: unknown derived band {entry['derived']!r}; choose one of {', '.join(DERIVED_KINDS)}")
            count = 1
        else:
            missing = [key for key in RASTER_SOURCE_KEYS if key not in entry]
            if missing:
                raise EosegError(f"{where}: missing {', '.join(map(repr, missing))}; a raster source needs "
                                 f"{', '.join(RASTER_SOURCE_KEYS)} (or 'derived' for a computed band)")
            if not isinstance(entry["pattern"], str) or not entry["pattern"]:
                raise EosegError(f"{where}: 'pattern' must be a path under DATA_ROOT with {{id}}, got {entry['pattern']!r}")
            bands = entry["bands"]
            if not isinstance(bands, (list, tuple)) or not bands or any(
                    not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in bands):
                raise EosegError(f"{where}: 'bands' holds 1-based band numbers, got {bands!r}")
            count = len(bands)
            entry = {"resampling": v["GRID_RESAMPLING"], **entry}
            check_resampling(entry["resampling"], f"{where} 'resampling'")
        names = entry["band_names"]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
            raise EosegError(f"{where}: 'band_names' must be a list of names, got {names!r}")
        for key in ("mean", "std"):
            if not _numbers(entry[key]):
                raise EosegError(f"{where}: '{key}' must be a list of numbers, got {entry[key]!r}")
        for key in ("band_names", "mean", "std"):
            if len(entry[key]) != count:
                raise EosegError(f"{where}: '{key}' has {len(entry[key])} entries but the source gives {count} band(s)")
        if any(s <= 0 for s in entry["std"]):
            raise EosegError(f"{where}: 'std' values are standard deviations, above 0; got {entry['std']}")
        checked.append(dict(entry))
    if not checked:
        return checked
    names = list(v["BAND_NAMES"]) + [n for entry in checked for n in entry["band_names"]]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise EosegError(f"band names must differ across BAND_NAMES and EXTRA_SOURCES, {', '.join(map(repr, doubles))} repeats")
    raster_names = list(v["BAND_NAMES"]) + [n for entry in checked if "pattern" in entry for n in entry["band_names"]]
    for i, entry in enumerate(checked):
        for key in ("red", "nir") if "derived" in entry else ():
            if entry[key] not in raster_names:
                default = "RED_BAND" if key == "red" else "NIR_BAND"
                raise EosegError(f"EXTRA_SOURCES[{i}]: the {key} band {entry[key]!r} (its '{key}', else {default}) is not "
                                 f"among the raster bands {raster_names}; name one of them")
    return checked


def _refuse_steps_under_a_budget(values: dict, layers: list[tuple[str, dict]]) -> None:
    """Refuse an ITERATIONS given after (in a later layer than) the TRAIN_MINUTES budget that overrules it: the
    sample preset's 5 minutes would otherwise run whatever ITERATIONS the command line asks for."""
    def last(name: str) -> int:
        return max((i for i, (_, layer) in enumerate(layers) if name in layer), default=-1)

    steps, budget = last("ITERATIONS"), last("TRAIN_MINUTES")
    if isinstance(values["TRAIN_MINUTES"], (int, float)) and values["TRAIN_MINUTES"] > 0 and steps > budget:
        where = f" ({layers[budget][0]})" if budget >= 0 else " (config.py)"
        raise EosegError(f"ITERATIONS={values['ITERATIONS']} ({layers[steps][0]}) counts steps, but "
                         f"TRAIN_MINUTES={values['TRAIN_MINUTES']:g}{where} sets a time budget, which decides instead; "
                         "set TRAIN_MINUTES=0 to train ITERATIONS steps, or leave ITERATIONS out")


def load_config(
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: str | Path = DEFAULT_CONFIG_PATH,
    norm_to_measure: bool = False,
) -> Config:
    """Build the effective config from config.py, its preset, a --config file and overrides; ``norm_to_measure``
    (check_data.py --write-norm, which measures them): NORM_MEAN / NORM_STD of another length than BANDS are
    neutral placeholders (0 and 1 per band) instead of an error."""
    defaults = _upper_case(_read_names(Path(base)))
    presets = dict(defaults.pop("PRESETS", {}))
    sources = [str(base)]
    file_values: dict[str, Any] = {}
    if config_file:
        file_values = _read_names(Path(config_file))
        for key in file_values:
            if not key.isupper() and key.upper() in defaults:  # silently not a config name otherwise
                raise EosegError(f"{config_file}: {key} is not a config name: config names are upper case "
                                 f"({key.upper()})")
        file_values = _upper_case(file_values)
        presets.update(file_values.pop("PRESETS", {}))
        for key, value in file_values.items():
            if key not in defaults:
                raise _unknown(key, defaults, str(config_file))
            file_values[key] = _coerce(defaults[key], value)
            if not _same_kind(defaults[key], file_values[key], key):
                raise EosegError(f"{config_file}: {key} expects {_kind(defaults[key])}, got {value!r}"
                                 f"{_ignore_hint(key, value, defaults)}")
        sources.append(str(config_file))
    override_values = dict(parse_override(item, defaults) for item in overrides)
    if override_values:
        sources.append("overrides: " + " ".join(overrides))

    # a --config file describes the user's data: without a DATASET of its own it takes no preset
    default_dataset = NO_PRESET if config_file else defaults["DATASET"]
    dataset = override_values.get("DATASET", file_values.get("DATASET", default_dataset))
    if dataset != NO_PRESET and dataset not in presets:
        close = difflib.get_close_matches(str(dataset), list(presets), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise EosegError(f"unknown DATASET {dataset!r}; {hint}presets: {', '.join(presets) or 'none'} "
                         f"(add yours to PRESETS; {NO_PRESET!r} for none)")
    preset = presets.get(dataset, {})
    for key in preset:
        if key not in defaults:
            raise _unknown(key, defaults, f"preset {dataset!r}")
    values = {**defaults, **preset, **file_values, **override_values, "DATASET": dataset}
    _refuse_steps_under_a_budget(values, [(f"preset {dataset!r}", preset), (str(config_file), file_values),
                                          ("the overrides", override_values)])
    if norm_to_measure and isinstance(values["BANDS"], list) and \
            any(len(values[name]) != len(values["BANDS"]) for name in ("NORM_MEAN", "NORM_STD")):
        values.update(NORM_MEAN=[0.0] * len(values["BANDS"]), NORM_STD=[1.0] * len(values["BANDS"]))
    return Config(values, sources)
