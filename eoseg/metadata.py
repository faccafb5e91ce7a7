"""What an artifact was made with, and the check that a consumer agrees with it.

LMDBs and checkpoints record classes, bands, normalisation and patch size. A consumer
compares the record with its own config and refuses a mismatch with a clear message.
"""

from __future__ import annotations

import json
from pathlib import Path

from eoseg.config import Config, label_value_pairs
from eoseg.errors import EosegError
from eoseg.io import file_record, unchanged_since
from eoseg.holdout import holdout_record
from eoseg.labels import files_read_with
from eoseg.normalization import Normalization

# Fields whose disagreement would silently produce garbage.
CHECKED_FIELDS = ("class_names", "palette", "ignore_label", "band_names", "normalization", "label_values", "extra_sources")
# what weights mean: their classes, bands and normalisation; not how a config's ground truth is encoded
# (LABEL_VALUES) or coloured (PALETTE): another city's masks may be 0/1 where training's were 0/255
WEIGHTS_FIELDS = tuple(field for field in CHECKED_FIELDS if field not in ("palette", "label_values"))
# raw pixels (see check_stored_data), and labels read with a LABEL_TOLERANCE, which weights need not share:
# it changes which pixels of blurred ground truth were learned from, not what a label means; and the blocks of
# tiles held out from training (eoseg.holdout), which weights are checked on where they score such a tile;
# which bands of the rasters were read (weights go by band names: another file may hold them elsewhere); and
# the tiles trained on (a tile moved to TEST_IDS must not keep its patches in training)
STORED_DATA_FIELDS = (*(field for field in CHECKED_FIELDS if field != "normalization"), "label_tolerance", "holdout",
                      "bands", "train_tiles")
# the settings that decide which pixels and labels stored patches hold, beyond the fields above: where the tiles
# and labels are read from (relative to DATA_ROOT, which may move with a copy of the data), how nodata and labels
# are read, and how the training tiles are cut and augmented
MADE_FROM_SETTINGS = ("IMAGE_PATTERN", "LABEL_PATTERN", "VECTOR_CLASS_FIELD", "VECTOR_LAYER", "VECTOR_POLYGON_CLASS",
                      "VECTOR_BACKGROUND_CLASS", "VECTOR_BOUNDARY", "VECTOR_BOUNDARY_WIDTH", "VECTOR_OVERLAP", "UNKNOWN_LABELS_TO_IGNORE",
                      "NODATA_ZERO", "GRID_RESAMPLING", "TRAIN_STRIDE", "FLIPS", "ROTATIONS")
EXTRA_SOURCE_KEYS = ("pattern", "bands", "resampling", "red", "nir")  # what an EXTRA_SOURCES entry reads
# what a record made before a field existed means by its absence
FIELD_DEFAULTS = {"label_values": [], "label_tolerance": 0, "holdout": None}
LATER_FIELDS = ("bands", "train_tiles", "extra_sources")  # added later: absent from an older record, not compared
# what an EXTRA_SOURCES entry's bands are made of, beyond their names: which bands of its file, or the bands an index is
# computed from (an NDVI of red and near-infrared swapped is its negative); not where the files lie, nor how warped
EXTRA_SOURCE_MAKING = ("derived", "red", "nir", "bands")


def data_signature(cfg: Config, patch_size: int | None = None, holdout: bool = True) -> dict:
    """The data description an artifact made from ``cfg`` carries; with ``holdout``, the tiles whose held-out
    blocks were left out of training and how (see eoseg.holdout: it reads the tile lists, whose globs look
    for images), which only artifacts of training data need."""
    signature = {
        "class_names": list(cfg.CLASS_NAMES),
        "palette": [list(map(int, c)) for c in cfg.PALETTE],
        "ignore_label": int(cfg.IGNORE_LABEL),
        "band_names": list(cfg.stacked_band_names),  # the image's BANDS, then EXTRA_SOURCES
        "normalization": Normalization.from_config(cfg).record(),
        "patch_size": int(patch_size if patch_size is not None else cfg.PATCH_SIZE),
        "label_values": label_value_pairs(cfg.to_dict()),  # LABEL_VALUES: how raw label values became class ids
        "label_tolerance": int(cfg.LABEL_TOLERANCE),  # and how near a raw value or colour had to be to count
        "bands": [int(band) for band in cfg.BANDS],  # which bands of the image files those are
        "extra_sources": json.loads(json.dumps([{key: entry[key] for key in EXTRA_SOURCE_MAKING if key in entry}
                                                for entry in cfg.extra_sources])),  # as a record reads back: lists
    }
    if holdout:
        signature["holdout"] = holdout_record(cfg)
        signature["train_tiles"] = list(cfg.tile_ids("train"))
        made_from = {**{name: cfg.to_dict()[name] for name in MADE_FROM_SETTINGS},
                     "EXTRA_SOURCES": [{key: entry[key] for key in EXTRA_SOURCE_KEYS if key in entry}
                                       for entry in cfg.extra_sources]}
        signature["made_from"] = json.loads(json.dumps(made_from))  # as it reads back from a record: lists, not tuples
    return signature


def check_stored_data(recorded: dict, expected: dict, artifact: str, nodata_fill: str | list | None = None) -> None:
    """Refuse stored patches (a patch folder, an LMDB) made for another config, in what their pixels depend on.

    They hold raw pixels, so the normalisation does not matter, but for those whose ``nodata_fill`` record is
    absent (made before 2026-12-07): their nodata pixels hold NORM_MEAN, not the training tiles' mean (see
    :func:`eoseg.tiles.training_filling`).
    """
    check_compatible(recorded, expected, artifact, fields=(*STORED_DATA_FIELDS, "patch_size"))
    made_from, now = recorded.get("made_from"), expected.get("made_from")
    if made_from is not None and now is not None and made_from != now:  # absent: made before it was recorded
        changed = [name for name in now if made_from.get(name) != now[name]]
        raise EosegError(f"{artifact} was made with " + ", ".join(f"{name}={made_from.get(name)!r}" for name in changed)
                         + ", but the config has " + ", ".join(f"{name}={now[name]!r}" for name in changed)
                         + "; its patches hold the pixels and labels those read: rebuild it (extract_images.py and "
                         "create_lmdb.py with --force), or use the settings it was made with")
    recorded_mean = (recorded.get("normalization") or {}).get("mean")
    if nodata_fill is None and recorded_mean != expected["normalization"]["mean"]:
        raise EosegError(f"{artifact} was made with NORM_MEAN {recorded_mean} (the value of its nodata pixels), but the "
                         f"config has {expected['normalization']['mean']}; use that NORM_MEAN or rebuild it")


def check_compatible(recorded: dict, expected: dict, artifact: str, fields=CHECKED_FIELDS) -> None:
    """Refuse ``artifact`` if any of ``fields`` differs between its record and the config."""
    for field in fields:
        if field in LATER_FIELDS and field not in recorded:
            continue
        made_with = recorded.get(field, FIELD_DEFAULTS.get(field))
        if made_with != expected.get(field, FIELD_DEFAULTS.get(field)):
            raise EosegError(
                f"{artifact} was made with {field} = {made_with!r}, but the config has "
                f"{expected.get(field)!r}; use the config it was made with or rebuild it"
            )


def source_files_record(data_root: str | Path, paths) -> dict:
    """{path: :func:`eoseg.io.file_record`} of the files stored patches are cut from (images, extra sources, labels)
    and of those read with them (:func:`eoseg.labels.files_read_with`: a shapefile's .dbf, a GeoPackage's -wal, a
    VRT's sources), each path relative to ``data_root`` where it lies under it, so that a copy of the data moved with
    DATA_ROOT still matches."""
    root = Path(data_root).absolute()
    record = {}
    read = [Path(p).absolute() for p in paths]
    for path in dict.fromkeys(read + [other for path in dict.fromkeys(read) for other in files_read_with(path)]):
        key = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        record[key] = file_record(path)
    return record


def check_source_files(recorded: dict | None, data_root: str | Path, artifact: str) -> None:
    """Refuse ``artifact`` (stored patches) where a file it was cut from has changed since (labels corrected in
    place): its patches hold the old pixels and labels. A file not there is passed over: an LMDB is trained on
    where the tiles are not."""
    for key, record in (recorded or {}).items():  # absent: made before the record
        path = Path(key) if Path(key).is_absolute() else Path(data_root) / key
        if path.is_file() and not unchanged_since(path, record):
            rebuild = "rebuild them (extract_images.py --force, then create_lmdb.py --force)"
            if Path(key).is_absolute():
                raise EosegError(f"{artifact} was cut from {path}, which has changed since: its patches hold the old "
                                 f"pixels or labels; {rebuild}")
            # the path only under DATA_ROOT: the data moved with it, or DATA_ROOT now names other data of that layout
            raise EosegError(f"{artifact} was cut from {key} under the DATA_ROOT of then, and {path} is not that file: "
                             f"changed since (its patches hold the old pixels or labels: {rebuild}), or DATA_ROOT "
                             f"{data_root} holds other data than the patches' (set the DATA_ROOT they were cut from)")
