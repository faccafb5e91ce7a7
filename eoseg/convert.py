"""Colour-coded ground truth <-> numeric label maps, file by file, keeping georeference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from eoseg.errors import EosegError
from eoseg.io import (ColourTable, RasterInfo, RasterWriter, atomic_write_text, check_colour_alpha, colour_unlabelled,
                      expand_colour_table, file_record, open_raster, raster_info, read_raster, unchanged_since)
from eoseg.labels import LabelValues, RasterLabels
from eoseg.palette import Palette


# beside the label maps convert_gt.py --from-color made for the configured tiles: each one's colour source as it was
CONVERSION_RECORD = "conversions.convert_gt.json"

def record_conversion(source: Path, target: Path) -> None:
    """Note in ``target``'s folder that ``target`` was converted from ``source`` as it is now."""
    record_path = target.parent / CONVERSION_RECORD
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    record[target.name] = {"source": str(source.resolve()), **file_record(source)}
    atomic_write_text(record_path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def check_converted_from(labels: Path, source: Path) -> None:
    """Refuse a label map convert_gt.py made from ``source`` (the colour ground truth the config names for it)
    when that file has changed since: its labels would be the old ones. Copies (new times, same bytes) pass."""
    try:
        entry = json.loads((labels.parent / CONVERSION_RECORD).read_text())[labels.name]
    except (OSError, ValueError, KeyError, TypeError):
        return  # not made by convert_gt.py, or before it kept the record
    if not source.is_file():
        return
    if not unchanged_since(source, entry):
        raise EosegError(f"{labels} was converted from {source}, which has changed since: its labels are the old ones; "
                         "run convert_gt.py --from-color again")


def color_file_to_labels(source: Path, target: Path, palette: Palette, unknown_to_ignore: bool = False,
                         class_names: Sequence[str] | None = None) -> Path:
    """Colour GT (3+ bands, RGB first, or one band with a colour table) -> single-band uint8 label
    map, written as :func:`write_label_map` writes it. Pixels its alpha band or mask marks empty, or of a transparent
    entry of its colour table, are unlabelled."""
    info = raster_info(source, "colour ground truth")
    table = info.colour_table
    if table is not None:  # an indexed image: its colours, not its indices, are the classes
        values = read_raster(source, [1], what="colour ground truth")[0]
        if holds_class_ids(values, table, palette):
            raise EosegError(f"{source}: already a numeric label map (its colour table gives each value PALETTE's "
                             "colour of that class id); point LABEL_PATTERN at it")
        rgb, empty = expand_colour_table(values, table, str(source)), table.transparent_pixels(values)
    elif info.count < 3:
        raise EosegError(f"{source}: has {info.count} band(s) and no colour table, a colour ground truth has 3; "
                         "is it already a numeric label map?")
    else:
        check_colour_alpha(info)
        with open_raster(source, "colour ground truth") as src:
            rgb, empty = src.read([1, 2, 3]), colour_unlabelled(src)
    if rgb.dtype != np.uint8:
        raise EosegError(f"{source}: colour ground truth must be 8-bit, this one is {rgb.dtype}")
    labels = palette.to_labels(np.moveaxis(rgb, 0, -1), unknown_to_ignore, source=str(source), empty=empty)
    return write_label_map(target, labels, info, palette, class_names)


def label_map_writer(target: Path, like: RasterInfo, palette: Palette, class_names: Sequence[str] | None,
                     colour_table: bool = True) -> RasterWriter:
    """The writer of a map of class ids on ``like``'s grid, as inference and convert_gt.py write them: unlabelled pixels
    (IGNORE_LABEL) are its nodata, ``class_names`` (CLASS_NAMES), where given, name the values, and with
    ``colour_table`` the palette colours them (see :class:`RasterWriter`)."""
    return RasterWriter(target, like, 1, "uint8", palette.colormap() if colour_table else None,
                        nodata=palette.ignore_label, class_names=class_names)


def write_label_map(target: Path, labels: np.ndarray, like: RasterInfo, palette: Palette,
                    class_names: Sequence[str] | None) -> Path:
    """Class ids ``labels`` -> ``target`` through :func:`label_map_writer`; a colour table in GeoTIFFs only."""
    with label_map_writer(target, like, palette, class_names, target.suffix.lower() in (".tif", ".tiff")) as writer:
        writer.write(labels)
    return target


def holds_class_ids(values: np.ndarray, table: ColourTable, palette: Palette) -> bool:
    """Whether a paletted raster's ``values`` are class ids or IGNORE_LABEL, each class id coloured
    in its colour table ``table`` as PALETTE colours that class (a label map eoseg wrote, for one)."""
    present = np.unique(values).tolist()
    classes = [value for value in present if value != palette.ignore_label]
    if table.transparent.intersection(classes):  # "not drawn", whatever colour lies beneath: no class id's colour
        return False
    coloured = palette.classes_coloured(table, classes)
    return bool(classes) and all(coloured[value] == value for value in classes)


def labels_file_to_color(source: Path, target: Path, palette: Palette, values: LabelValues) -> Path:
    """Single-band label map -> colour image in the palette, its unlabelled pixels masked (a GeoTIFF's mask, a
    PNG's alpha band).

    A map whose colour table says it holds class ids (eoseg's) is coloured as it is; others are read through
    LABEL_VALUES, as every step reads label rasters."""
    info = raster_info(source, "label map")
    if info.count != 1:
        raise EosegError(f"{source}: has {info.count} bands, a numeric label map has 1; is it already colour-coded?")
    if info.colour_table is not None and holds_class_ids(read_raster(source, [1], what="label map")[0],
                                                          info.colour_table, palette):
        values = LabelValues([], palette.num_classes, palette.ignore_label)
    labels = RasterLabels(info, info, values, "label map", palette).read()
    rgb, valid = np.moveaxis(palette.to_color(labels), -1, 0), labels != palette.ignore_label
    with RasterWriter(target, info, 3, "uint8", masked=True, colour=True) as writer:
        writer.write(rgb, valid=valid)
    return target


def values_file_to_labels(source: Path, target: Path, palette: Palette, values: LabelValues,
                          class_names: Sequence[str] | None = None) -> Path:
    """Label raster of raw values -> single-band uint8 class ids through LABEL_VALUES (checked), written as
    :func:`write_label_map` writes it, georeference kept."""
    info = raster_info(source, "label raster")
    labels = RasterLabels(info, info, values, "label raster", palette).read()
    return write_label_map(target, labels, info, palette, class_names)
