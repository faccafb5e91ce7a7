"""Colour-coded ground truth <-> numeric label maps, file by file, keeping georeference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from rasterio.windows import Window

from eoseg.errors import EosegError
from eoseg.io import (ColourTable, RasterInfo, RasterWriter, atomic_write_text, check_colour_alpha, colour_unlabelled,
                      expand_colour_table, file_record, open_raster, raster_info, unchanged_since)
from eoseg.labels import LabelValues, RasterLabels, row_windows
from eoseg.palette import Palette, all_grey


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
    map, written by :func:`label_map_writer`, by rows (memory follows the width, not the raster). Pixels its alpha
    band or mask marks empty, or of a transparent entry of its colour table, are unlabelled."""
    info = raster_info(source, "colour ground truth")
    table = info.colour_table
    if table is None and info.count < 3:
        raise EosegError(f"{source}: has {info.count} band(s) and no colour table, a colour ground truth has 3; "
                         "is it already a numeric label map?")
    if table is None:
        check_colour_alpha(info)
    if info.dtype != "uint8":
        raise EosegError(f"{source}: colour ground truth must be 8-bit, this one is {info.dtype}")
    windows = list(row_windows(info.height, info.width))
    with open_raster(source, "colour ground truth") as src:
        if table is not None and holds_class_ids(
                set().union(*(np.unique(src.read(1, window=window)).tolist() for window in windows)), table, palette):
            raise EosegError(f"{source}: already a numeric label map (its colour table gives each value PALETTE's "
                             "colour of that class id); point LABEL_PATTERN at it")

        def colours(window: Window) -> tuple[np.ndarray, np.ndarray | None]:
            """(h, W, 3) RGB of ``window``, and its pixels left unlabelled (transparent)."""
            if table is not None:  # an indexed image: its colours, not its indices, are the classes
                values = src.read(1, window=window)
                return np.moveaxis(expand_colour_table(values, table, str(source)), 0, -1), table.transparent_pixels(values)
            return np.moveaxis(src.read([1, 2, 3], window=window), 0, -1), colour_unlabelled(src, window)

        grey_image = all(all_grey(*colours(window)) for window in windows)  # stops at the first window of colours
        unknown: dict[int, int] = {}  # colours no class has, over the whole image: refused once all is read
        near: dict = {}  # colours read through LABEL_TOLERANCE, likewise
        tif = target.suffix.lower() in (".tif", ".tiff")
        with label_map_writer(target, info, palette, class_names, colour_table=tif) as writer:
            for window in windows:
                rgb, empty = colours(window)
                labels, found = palette.read_colours(rgb, str(source), empty, grey_image, near)
                for colour, pixels in found.items():
                    unknown[colour] = unknown.get(colour, 0) + pixels
                writer.write(labels, row=window.row_off)
            palette.check_whole_image(unknown, near, str(source), unknown_to_ignore)  # before the map is published
    return target


def label_map_writer(target: Path, like: RasterInfo, palette: Palette, class_names: Sequence[str] | None,
                     colour_table: bool = True) -> RasterWriter:
    """The writer of a map of class ids on ``like``'s grid, as inference and convert_gt.py write them: unlabelled pixels
    (IGNORE_LABEL) are its nodata, ``class_names`` (CLASS_NAMES), where given, name the values, and with
    ``colour_table`` the palette colours them (see :class:`RasterWriter`)."""
    return RasterWriter(target, like, 1, "uint8", palette.colormap() if colour_table else None,
                        nodata=palette.ignore_label, class_names=class_names)


def holds_class_ids(present: Iterable[int], table: ColourTable, palette: Palette) -> bool:
    """Whether a paletted raster whose values are ``present`` holds class ids or IGNORE_LABEL, each class id coloured
    in its colour table ``table`` as PALETTE colours that class (a label map eoseg wrote, for one)."""
    classes = [value for value in sorted(present) if value != palette.ignore_label]
    if table.transparent.intersection(classes):  # "not drawn", whatever colour lies beneath: no class id's colour
        return False
    coloured = palette.classes_coloured(table, classes)
    return bool(classes) and all(coloured[value] == value for value in classes)


def label_map_reader(info: RasterInfo, palette: Palette, values: LabelValues) -> RasterLabels:
    """A one-band label raster read as class ids, its values checked over the whole raster: as it is where its colour
    table says it holds class ids (:func:`holds_class_ids`: a label map eoseg wrote), else through LABEL_VALUES
    (``values``), as every step reads label rasters."""
    labels = RasterLabels(info, info, values, "label map", palette)
    raw = labels.counts()
    if info.colour_table is not None and holds_class_ids(raw, info.colour_table, palette):
        labels = RasterLabels(info, info, LabelValues([], palette.num_classes, palette.ignore_label), "label map", palette)
    labels.check_values(raw)
    return labels


def labels_file_to_color(source: Path, target: Path, palette: Palette, values: LabelValues) -> Path:
    """Single-band label map -> colour image in the palette, its unlabelled pixels masked (a GeoTIFF's mask, a
    PNG's alpha band), by rows.

    A map whose colour table says it holds class ids (eoseg's) is coloured as it is; others are read through
    LABEL_VALUES, as every step reads label rasters."""
    info = raster_info(source, "label map")
    if info.count != 1:
        raise EosegError(f"{source}: has {info.count} bands, a numeric label map has 1; is it already colour-coded?")
    labels = label_map_reader(info, palette, values)
    with RasterWriter(target, info, 3, "uint8", masked=True, colour=True) as writer:
        for window in row_windows(info.height, info.width):
            ids = labels.read(window)
            writer.write(np.moveaxis(palette.to_color(ids), -1, 0), row=window.row_off, valid=ids != palette.ignore_label)
    return target


def values_file_to_labels(source: Path, target: Path, palette: Palette, values: LabelValues,
                          class_names: Sequence[str] | None = None) -> Path:
    """Label raster of raw values -> single-band uint8 class ids through LABEL_VALUES (checked), written by
    :func:`label_map_writer`, by rows, georeference kept."""
    info = raster_info(source, "label raster")
    labels = RasterLabels(info, info, values, "label raster", palette)
    labels.check()
    with label_map_writer(target, info, palette, class_names, target.suffix.lower() in (".tif", ".tiff")) as writer:
        for window in row_windows(info.height, info.width):
            writer.write(labels.read(window), row=window.row_off)
    return target
