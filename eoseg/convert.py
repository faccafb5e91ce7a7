"""Colour-coded ground truth <-> numeric label maps, file by file, keeping georeference."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from rasterio.windows import Window
from tqdm import tqdm

from eoseg.errors import EosegError
from eoseg.io import (ColourTable, RasterInfo, RasterWriter, check_colour_alpha, check_outputs, expand_colour_table,
                      open_raster, raster_info, unlabelled_by_mask)
from eoseg.labels import SUSPICIOUS_IGNORE_SHARE, LabelValues, RasterLabels, row_windows
from eoseg.palette import Palette, all_grey, rgb_text
from eoseg.tiles import configured_inputs, existing_path, record_conversion

CONFIG_RECORD = "config.convert_gt.json"  # the effective config of the conversion, beside its outputs


def check_targets(pairs: Sequence[tuple[Path, Path]], inputs: dict[Path, str], force: bool, where: str) -> None:
    """Refuse, before anything is written, an input of ``pairs`` (source, target) not found, and outputs that
    :func:`eoseg.io.check_outputs` refuses, the inputs converted among ``inputs``."""
    missing = [source for source, _ in pairs if not source.is_file()]
    if missing:
        raise EosegError(f"input not found: {missing[0]}")
    targets = [target.resolve() for _, target in pairs]
    twice = [source for (source, _), target in zip(pairs, targets) if targets.count(target) > 1]
    if twice:
        raise EosegError(f"{', '.join(map(str, twice))} would be written to the same output (their names are alike); "
                         "convert them into different folders")
    check_outputs([target for _, target in pairs],
                  {**inputs, **{source.resolve(): f"the input {source}" for source, _ in pairs}}, force, where)


def absent_classes_note(class_pixels: np.ndarray, palette: Palette, class_names: Sequence[str], maps: int) -> str | None:
    """A note naming the classes no pixel of ``maps`` converted label maps holds (``class_pixels``: the pixels of each
    value, IGNORE_LABEL's among them), and, where IGNORE_COLOR covers a share of them, that it may be their colour
    (a building mask's white taken for unlabelled); None where every class occurs."""
    absent = [index for index in range(palette.num_classes) if not class_pixels[index]]
    if not absent:
        return None
    named = ", ".join(f"{index} ({class_names[index]}, PALETTE {rgb_text(palette.colors[index])})" for index in absent)
    note = f"note: class {named} occurs in none of the {maps} label maps"
    unlabelled = class_pixels[palette.ignore_label] / max(int(class_pixels.sum()), 1)
    if palette.ignore_color is not None and unlabelled >= SUSPICIOUS_IGNORE_SHARE:
        note += (f"; {unlabelled:.0%} of their pixels are unlabelled (IGNORE_COLOR {rgb_text(palette.ignore_color)}): "
                 "if that colour is a class's, give it to the class in PALETTE, set IGNORE_COLOR = None (or the "
                 "colour of unlabelled pixels), and convert again with --force")
    return note


def color_file_to_labels(source: Path, target: Path, palette: Palette, unknown_to_ignore: bool = False,
                         class_names: Sequence[str] | None = None, class_pixels: np.ndarray | None = None) -> Path:
    """Colour GT (3+ bands, RGB first, or one band with a colour table) -> single-band uint8 label
    map, written by :func:`label_map_writer`, by rows (memory follows the width, not the raster). Pixels its alpha
    band or mask marks empty, or of a transparent entry of its colour table, are unlabelled. ``class_pixels``, where
    given (256 counts), gains the pixels of each value written: class ids and IGNORE_LABEL."""
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
            return np.moveaxis(src.read([1, 2, 3], window=window), 0, -1), unlabelled_by_mask(src, window)

        grey_image = all(all_grey(*colours(window)) for window in windows)  # stops at the first window of colours
        unknown: dict[int, int] = {}  # colours no class has, over the whole image: refused once all is read
        near: dict = {}  # colours read through LABEL_TOLERANCE, likewise
        with label_map_writer(target, info, palette, class_names) as writer:
            for window in windows:
                rgb, empty = colours(window)
                labels, found = palette.read_colours(rgb, str(source), empty, grey_image, near)
                for colour, pixels in found.items():
                    unknown[colour] = unknown.get(colour, 0) + pixels
                if class_pixels is not None:
                    class_pixels += np.bincount(labels.ravel(), minlength=256)
                writer.write(labels, row=window.row_off)
            palette.check_whole_image(unknown, near, str(source), unknown_to_ignore)  # before the map is published
    return target


def colour_files_to_labels(pairs: Sequence[tuple[Path, Path]], palette: Palette, class_names: Sequence[str],
                           unknown_to_ignore: bool = False, record: bool = False, progress: bool = True) -> str | None:
    """Convert each (colour ground truth, label map) of ``pairs`` (:func:`color_file_to_labels`), with ``record``
    noting what each was made from (:func:`record_conversion`); return :func:`absent_classes_note` of them all.

    Every map is written beside its target under a hidden name and published once all are converted: a colour
    refused in the fifth file left four maps, which the rerun its error advised then refused as existing."""
    class_pixels = np.zeros(256, dtype=np.int64)
    staged = [target.with_name(f".{target.stem}.staged-{os.getpid()}{target.suffix}") for _, target in pairs]
    for _, target in pairs:  # a killed run's
        for leftover in target.parent.glob(glob.escape(f".{target.stem}.staged-") + "*"):
            leftover.unlink()
    try:
        for (source, _), stage in zip(tqdm(pairs, desc="convert", unit="file", disable=not progress), staged):
            color_file_to_labels(source, stage, palette, unknown_to_ignore, class_names, class_pixels)
        for (source, target), stage in zip(pairs, staged):
            os.replace(stage, target)
            companion = stage.with_name(stage.name + ".aux.xml")  # the class names of a GeoTIFF's values
            if companion.exists():
                os.replace(companion, target.with_name(target.name + ".aux.xml"))
            if record:  # the configured tiles' label maps, which every step checks against their source
                record_conversion(source, target)
    finally:
        for stage in staged:
            for leftover in (stage, stage.with_name(stage.name + ".aux.xml")):
                leftover.unlink(missing_ok=True)
    return absent_classes_note(class_pixels, palette, class_names, len(pairs))


def convert_colour_tiles(cfg, force: bool = False, unknown_to_ignore: bool = False,
                         progress: bool = True) -> tuple[list[tuple[Path, Path]], str | None]:
    """convert_gt.py --from-color over the configured tiles: each one's colour ground truth (GT_COLOR_PATTERN) into its
    label map (LABEL_PATTERN), checked by :func:`check_targets` first, recorded, the config saved beside them. Returns
    the (source, target) pairs and :func:`absent_classes_note`."""
    ids = list(dict.fromkeys(cfg.tile_ids("train") + cfg.tile_ids("test")))
    pairs = [(existing_path(cfg, "GT_COLOR_PATTERN", t, "colour ground truth"), cfg.tile_path("LABEL_PATTERN", t)) for t in ids]
    if len({target for _, target in pairs}) < len(pairs):
        raise EosegError(f"LABEL_PATTERN {cfg.LABEL_PATTERN!r} has no {{id}}, and convert_gt.py --from-color writes "
                         "a label map per tile; put {id} where the tile id goes in the file name")
    check_targets(pairs, configured_inputs(cfg, "LABEL_PATTERN"), force, "LABEL_PATTERN")
    note = colour_files_to_labels(pairs, cfg.palette, cfg.CLASS_NAMES, unknown_to_ignore, record=True, progress=progress)
    for folder in dict.fromkeys(target.parent for _, target in pairs):
        cfg.save(folder, CONFIG_RECORD)
    return pairs, note


def label_map_writer(target: Path, like: RasterInfo, palette: Palette, class_names: Sequence[str] | None) -> RasterWriter:
    """The writer of a map of class ids on ``like``'s grid, as inference and convert_gt.py write them: unlabelled pixels
    (IGNORE_LABEL) are its nodata, ``class_names`` (CLASS_NAMES), where given, name the values, and the palette colours
    them (as a GeoTIFF's colour table or a PNG's palette, which also tell a later PALETTE that they were made under
    another; see :class:`RasterWriter`)."""
    return RasterWriter(target, like, 1, "uint8", palette.colormap(), nodata=palette.ignore_label,
                        class_names=class_names)


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
    with label_map_writer(target, info, palette, class_names) as writer:
        for window in row_windows(info.height, info.width):
            writer.write(labels.read(window), row=window.row_off)
    return target
