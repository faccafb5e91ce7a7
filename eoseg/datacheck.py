"""What check_data.py reports on a dataset before anyone trains: images, band statistics,
label values against LABEL_VALUES, class shares, and every problem found, each in one line.

Tiles are read by windows of SCAN_ROWS rows through the readers every other step uses
(eoseg.tiles, eoseg.labels), so that what is checked is what training will read.
"""

from __future__ import annotations

import ast
import os
import stat
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.gis import brief_crs
from eoseg.grid import PIXEL_SIZE_TOLERANCE, mean_pixel_size_m, pixel_sides, pixel_size_range
from eoseg.holdout import TileSplit, report_overlapping_tiles, tile_split
from eoseg.io import RasterInfo, alpha_band_problem, atomic_path, nodata_kind, spread_windows
from eoseg.labels import LabelValues, RasterLabels, VectorLabels, is_vector, merge_counts, row_windows, value_counts
from eoseg.normalization import (VALUE_SCALE_LIMIT, VALUE_SCALE_NOTE, BandStatistics, absolute_source_note, off_scale,
                                 scale_problem, source_finding, value_scale)
from eoseg.plots import class_frequency_figure, save_figure
from eoseg.tiles import (check_band_names, check_patch_fits, check_same_dtype, eroded_fallback, eval_truth, fits_patch,
                         image_bands_record, tile_labels, tile_stack, unmasked_fill_note)

SPLITS = ("train", "test")


@dataclass
class DataReport:
    images: list[dict] = field(default_factory=list)  # tile, split, size, bands, dtype, crs, resolution, nodata (kind)
    band_names: list[str] = field(default_factory=list)
    statistics: BandStatistics | None = None
    raw_values: dict = field(default_factory=dict)  # raw label value -> pixels, every tile
    raw_polygons: dict = field(default_factory=dict)  # VECTOR_CLASS_FIELD value -> polygons, summed over the tiles
    class_pixels: dict = field(default_factory=dict)  # split -> pixels per class
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what may be wrong, which only the user can tell

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def check_dataset(cfg: Config, norm_to_write: bool = False) -> DataReport:
    """Read every train and test tile of ``cfg`` by windows and report on them; of VAL_IDS's others, what
    training needs of them (an image that opens, ground truth, values on the training tiles' scale). With
    ``norm_to_write`` (replaced by what is measured), the image's NORM_MEAN / NORM_STD are not judged."""
    values = LabelValues.from_config(cfg)
    report = DataReport(band_names=cfg.stacked_band_names, statistics=BandStatistics(cfg.num_bands),
                        class_pixels={split: np.zeros(cfg.num_classes, dtype=np.int64) for split in SPLITS})
    seen, polygons_counted, training_tiles_read = set(), set(), 0
    stacked_dtype = None  # of the tiles before: one data type for all
    tile_values: dict[str, BandStatistics] = {}  # each tile's values, sampled: their scales compared below
    tile_sources: dict[str, list[tuple[str, slice]]] = {}  # each tile's extra sources, named with their files
    class_pixels, class_in_blocks = np.zeros(cfg.num_classes, np.int64), np.zeros(cfg.num_classes, np.int64)
    eroded_pixels, eroded_in_blocks = np.zeros(cfg.num_classes, np.int64), np.zeros(cfg.num_classes, np.int64)
    training_infos: list[RasterInfo] = []
    scored_infos: dict[str, RasterInfo] = {}  # the test and validation tiles' images
    report_overlapping_tiles(cfg)
    for split in SPLITS:
        if not cfg.tile_ids(split):
            report.problem(f"{'TRAIN_IDS' if split == 'train' else 'TEST_IDS'} is empty: no {split} tiles")
        for tile_id in cfg.tile_ids(split):
            if (split, tile_id) in seen:
                continue
            seen.add((split, tile_id))
            try:
                stack = tile_stack(cfg, tile_id)
                info = stack.info
                report.images.append({
                    "tile": tile_id, "split": split, "size": f"{info.width} x {info.height}", "bands": info.count,
                    "dtype": info.dtype, "crs": brief_crs(info.crs) if info.crs else "-",
                    "resolution": resolution_text(info),
                    "nodata": nodata_kind(info.path, cfg.BANDS)})
                if alpha := alpha_band_problem(info, cfg.BANDS):
                    report.note(alpha)
                # extraction patches the train tiles, and the test tiles a patch fits, into one data type
                if split == "train" or (cfg.TRAIN_SOURCE == "lmdb" and fits_patch(info, cfg.PATCH_SIZE)):
                    try:
                        stacked_dtype = check_same_dtype(stack, stacked_dtype)
                    except EosegError as err:
                        report.problem(str(err))
                if split == "train":  # test tiles are labelled whole: one smaller than a patch is left out of test patches
                    try:
                        check_patch_fits(info, cfg.PATCH_SIZE)
                    except EosegError as err:
                        report.problem(str(err))
                blocks = tile_split(cfg, tile_id, info.height, info.width)
                if tile_id not in tile_values:
                    tile_values[tile_id], fills = stack.sample()
                    tile_sources[tile_id] = stack.named_source_bands(cfg)
                    collar = unmasked_fill_note(fills)
                    if collar:  # learned or scored as land, and counted into the statistics --write-norm writes
                        report.note(f"tile {tile_id}: {collar}")
                labels = tile_labels(cfg, tile_id, info)
                if isinstance(labels, VectorLabels) and tile_id not in polygons_counted:
                    merge_counts(report.raw_polygons, labels.value_polygons)
                    polygons_counted.add(tile_id)
                mapped: dict = {}
                whole_raster = isinstance(labels, RasterLabels)
                if whole_raster and (blocks is None or split == "train"):  # a split tile's raw values once
                    raw = labels.counts()
                    merge_counts(report.raw_values, raw)
                    labels.check_values(raw)
                    if blocks is None and split != "train":
                        for value, pixels in raw.items():
                            target = values.target(value)
                            merge_counts(mapped, {values.ignore_label if target is None else target: pixels})
                elif whole_raster:  # its test blocks: refused, if it is, as its training pass refused it (one problem)
                    labels.check()
                # after the whole raster's check: a refusal counts its pixels, not a window's
                pixels, in_blocks = thin_line_counts(info.height, info.width, cfg.num_classes, labels.read)
                class_pixels += pixels
                class_in_blocks += in_blocks
                if split == "train":  # what training learns from: labels where the image holds data, of the trained part
                    with stack:
                        for window in row_windows(info.height, info.width):
                            pixels = stack.read(window)
                            valid = stack.valid_mask(pixels, window)
                            inside = split_part(blocks, split, window.row_off, window.row_off + window.height)
                            kept = valid if inside is None else valid & inside
                            report.statistics.add(pixels, kept)
                            merge_counts(mapped, value_counts(labels.read(window)[kept]))
                elif blocks is not None or not whole_raster:  # class ids by windows, of this split's blocks
                    for window in row_windows(info.height, info.width):
                        ids = labels.read(window)
                        inside = split_part(blocks, split, window.row_off, window.row_off + window.height)
                        merge_counts(mapped, value_counts(ids if inside is None else ids[inside]))
                for class_id, pixels in mapped.items():
                    if class_id < cfg.num_classes:
                        report.class_pixels[split][class_id] += pixels
                if split == "train" and not any(pixels for class_id, pixels in mapped.items() if class_id < cfg.num_classes):
                    report.note(f"training tile {tile_id}: none of its pixels holds both data and a class (all nodata, or "
                                "unlabelled where it holds data): it adds nothing to training")
                training_tiles_read += split == "train"
                if split == "train":
                    training_infos.append(info)
                else:
                    scored_infos[tile_id] = info
                eroded = cfg.tile_path("GT_ERODED_PATTERN", tile_id)
                if split == "test" and eroded is not None and eroded.is_file():  # what scoring reads beside the labels
                    truth = eval_truth(cfg, tile_id, info)
                    if not truth.colour:  # read through the label maps' LABEL_VALUES: its boundaries may read as a class
                        pixels, in_blocks = thin_line_counts(info.height, info.width, cfg.num_classes, truth.labels.read)
                        eroded_pixels += pixels
                        eroded_in_blocks += in_blocks
            except EosegError as err:
                report.problem(str(err))
    checked = set(cfg.tile_ids("train")) | set(cfg.tile_ids("test"))
    for tile_id in (t for t in cfg.ids("VAL_IDS") if t not in checked):  # training validates on them: open, labelled
        try:
            stack = tile_stack(cfg, tile_id)
            if eval_truth(cfg, tile_id, stack.info) is None:
                report.problem(f"validation tile {tile_id} (VAL_IDS) has no ground truth; choose VAL_IDS with labels")
            else:
                if tile_id not in tile_values:
                    tile_values[tile_id], tile_sources[tile_id] = stack.sample_statistics(), stack.named_source_bands(cfg)
                scored_infos[tile_id] = stack.info
        except EosegError as err:
            report.problem(str(err))
    try:  # the training images name their bands alike, and the others as they do
        bands_record = image_bands_record(training_infos, cfg.BANDS)
    except EosegError as err:
        report.problem(str(err))
        bands_record = None
    for tile_id, info in scored_infos.items():
        try:
            note = check_band_names(info, cfg.BANDS, bands_record, "the training images")
        except EosegError as err:
            report.problem(str(err))
        else:
            if note:
                report.note(f"tile {tile_id}: {note.removeprefix('note: ')}")
    judged = cfg
    if norm_to_write and report.statistics.count:  # judged as it will be written
        means, stds = report.statistics.normalization(0, len(cfg.BANDS))
        judged = cfg.replace(NORM_MEAN=means, NORM_STD=stds)
    scale = scale_problem(report.statistics, judged)
    if scale:
        report.problem(scale)
    for name, positions in cfg.source_bands:
        note = absolute_source_note(report.statistics, name, positions)
        if note:
            report.note(note)
    training_values = report.statistics.record()
    training_ids = set(cfg.tile_ids("train"))
    for tile_id, values in tile_values.items() if training_values else ():
        ratio = value_scale(training_values, values, len(cfg.BANDS))
        if ratio is not None and off_scale(ratio, VALUE_SCALE_LIMIT):
            report.problem(f"tile {tile_id}: its values are {ratio:.2g} times those of the training tiles together: "
                           "another scale or encoding (12 against 16 bits, reflectance 0..1 against 0..10000), which one "
                           "normalisation cannot serve; rescale the tiles alike")
        elif ratio is not None and off_scale(ratio, VALUE_SCALE_NOTE):  # as training's validation and labelling say
            report.note(f"tile {tile_id}: its values are {ratio:.2g} times those of the training tiles together: its labels "
                        "may suffer (much darker or brighter light, another sensor setting)")
        for name, positions in tile_sources[tile_id]:  # each extra source held as labelling holds it
            finding = source_finding(training_values, values, name, positions, f"tile {tile_id}",
                                     "those of the training tiles together")
            # a training tile is part of the mean it is measured against: one higher up among many lies about
            # sqrt(tiles - 1) standard deviations away however alike its heights, and is only noted
            if finding and finding.severe and not (finding.moved and tile_id in training_ids):
                report.problem(f"{finding.found}: {finding.cause}, which one normalisation cannot serve; {finding.remedy}")
            elif finding:
                report.note(f"{finding.found}: its labels may suffer ({finding.mild_cause})")
    fallback = eroded_fallback(cfg, list(dict.fromkeys(cfg.tile_ids("test") + cfg.ids("VAL_IDS"))))
    if fallback:
        report.problem(fallback)
    sizes = pixel_size_range(training_infos)
    if sizes and sizes[1] > sizes[0] * PIXEL_SIZE_TOLERANCE:
        report.note(f"the training tiles have pixels of {sizes[0]:.3g} to {sizes[1]:.3g} m: the network learns objects at "
                    f"each of those sizes, and inference labels finer images at {sizes[0]:.3g} m (INFER_PIXEL_SIZE); "
                    "resample the tiles to one pixel size if that is not meant")
    thin = thin_class_note(cfg, class_pixels, class_in_blocks)
    if thin:
        report.note(thin)
    thin = thin_class_note(cfg, eroded_pixels, eroded_in_blocks)
    if thin:
        report.note(f"in the eroded ground truth (GT_ERODED_PATTERN), which is read as the label maps are: {thin}")
    train_pixels = report.class_pixels["train"]
    absent = [name for name, pixels in zip(cfg.CLASS_NAMES, train_pixels) if not pixels]
    if training_tiles_read and absent:  # where no training tile could be read, its own problems say why
        report.problem(f"classes absent from the training tiles: {', '.join(absent)}; the network cannot learn them")
    return report


THIN_SIDE = 5  # a pixel is in a block of its class when the THIN_SIDE x THIN_SIDE px around it all are
THIN_SHARE = 0.3  # a class with fewer of its pixels in blocks lies in thin lines (ISPRS boundaries: 13-23%; classes,
                  # cars too: 46% and more, on real 5-9 cm crops)


def count_block_pixels(ids: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Of (H, W) class ids: each class's pixels (away from the edges), and how many of them lie in a THIN_SIDE x
    THIN_SIDE block of their class."""
    margin = THIN_SIDE // 2
    centre = ids[margin:ids.shape[0] - margin, margin:ids.shape[1] - margin]
    uniform = np.ones(centre.shape, dtype=bool)
    for row in range(THIN_SIDE):
        for col in range(THIN_SIDE):
            uniform &= ids[row:row + centre.shape[0], col:col + centre.shape[1]] == centre
    classes = centre < num_classes
    return (np.bincount(centre[classes], minlength=num_classes)[:num_classes],
            np.bincount(centre[classes & uniform], minlength=num_classes)[:num_classes])


def thin_line_counts(height: int, width: int, num_classes: int, read) -> tuple[np.ndarray, np.ndarray]:
    """:func:`count_block_pixels` of a ``height`` x ``width`` label raster over a few windows spread across it
    (``read(window)``: their class ids), for :func:`thin_class_note`."""
    pixels, in_blocks = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    for window in spread_windows(height, width, 4, 256):
        counted, blocks = count_block_pixels(read(window), num_classes)
        pixels, in_blocks = pixels + counted, in_blocks + blocks
    return pixels, in_blocks


def thin_class_note(cfg: Config, pixels: np.ndarray, in_blocks: np.ndarray) -> str | None:
    """A note naming a class whose labels (``pixels``, ``in_blocks`` of them: :func:`count_block_pixels`) lie in thin
    lines where the others lie in areas: the boundaries of an eroded ground truth (ISPRS: 0 for boundaries, 1..6 for
    the classes) read as a class, which shifts every class by one. A note: a class can be thin (roads at 10 m)."""
    share = np.divide(in_blocks, pixels, out=np.ones(len(pixels)), where=pixels > 0)
    present = pixels >= max(1000, 0.005 * pixels.sum())
    thin = [c for c in range(len(pixels)) if present[c] and share[c] < THIN_SHARE]
    areas = [c for c in range(len(pixels)) if present[c] and share[c] >= THIN_SHARE]
    if len(thin) != 1 or not areas:
        return None
    c = thin[0]
    values = LabelValues.from_config(cfg)
    shifted = ("; with ids 0 for boundaries and 1.. for the classes, LABEL_VALUES = {0: 'ignore', "
               + ", ".join(f"{v}: {v - 1}" for v in range(1, cfg.num_classes + 1)) + "}") if values.identity and c == 0 else ""
    return (f"class {c} ({cfg.CLASS_NAMES[c]}) lies in thin lines: {share[c]:.0%} of its pixels lie in {THIN_SIDE} x "
            f"{THIN_SIDE} px blocks of it, against {min(share[a] for a in areas):.0%} or more for the other classes; if "
            f"those are the boundaries of an eroded ground truth, read their label value as 'ignore' in LABEL_VALUES"
            f"{shifted}")


def split_part(blocks: TileSplit | None, split: str, first: int, end: int) -> np.ndarray | None:
    """The pixels of rows first..end-1 that ``split`` reads of a tile whose ``blocks`` are split between
    training and test (see eoseg.holdout); None: all of them."""
    return None if blocks is None else blocks.mask(first, end, held_out=split != "train")


def resolution_text(info: RasterInfo) -> str:
    """The pixel size in metres, or in the transform's units where the CRS gives none; "-" without a georeference."""
    size = mean_pixel_size_m(info)
    if size is not None:
        return f"{size:.4g} m"
    return f"{sum(pixel_sides(info.transform)) / 2:.4g}" if info.georeferenced else "-"


def format_report(cfg: Config, report: DataReport) -> str:
    """The report as text: tables, the NORM_MEAN / NORM_STD lines, then one line per problem."""
    tile = max([10, *(len(image["tile"]) for image in report.images)])  # a long id (los_angeles) widens its column
    crs = max([14, *(len(image["crs"]) for image in report.images)])
    lines = ["images:", f"  {'tile':<{tile}} {'split':<6} {'size':<13} {'bands':>5} {'dtype':<8} {'CRS':<{crs}} {'res.':>7} "
                        "nodata"]
    for image in report.images:
        lines.append(f"  {image['tile']:<{tile}} {image['split']:<6} {image['size']:<13} {image['bands']:>5} "
                     f"{image['dtype']:<8} {image['crs']:<{crs}} {image['resolution']:>7} {image['nodata']}")
    if not report.images:
        lines.append("  none could be read: see the problems below")
    stats = report.statistics
    if stats is not None and stats.count:
        lines += ["", f"bands over the training tiles ({stats.count} valid pixels):",
                  f"  {'band':<10} {'min':>10} {'max':>10} {'mean':>10} {'std':>10}"]
        for i, name in enumerate(report.band_names):
            lines.append(f"  {name:<10} {stats.low[i]:>10.4g} {stats.high[i]:>10.4g} {stats.mean[i]:>10.4g} {stats.std[i]:>10.4g}")
        lines += ["", "normalisation of the image's BANDS (config lines):", *norm_lines(cfg, report)]
        if cfg.extra_sources:
            lines += ["", 'normalisation of EXTRA_SOURCES (each entry\'s "mean" and "std"):', *extra_norm_lines(cfg, report)]
    values = LabelValues.from_config(cfg)
    if is_vector(cfg.LABEL_PATTERN) and not cfg.VECTOR_CLASS_FIELD:  # no values: every polygon is one class
        meaning = lambda class_id: ("ignored" if class_id == values.ignore_label  # noqa: E731
                                    else f"class {class_id} ({cfg.CLASS_NAMES[class_id]})")
        lines += ["", "labels: polygons without a class attribute (VECTOR_CLASS_FIELD is empty):",
                  f"  inside a polygon -> {meaning(cfg.VECTOR_POLYGON_CLASS)} (VECTOR_POLYGON_CLASS)",
                  f"  outside them     -> {meaning(cfg.VECTOR_BACKGROUND_CLASS)} (VECTOR_BACKGROUND_CLASS)"]
    else:
        lines += ["", f"label values found ({'LABEL_VALUES' if not values.identity else 'no LABEL_VALUES: values are class ids'}):"]
    found = [(value, f"{pixels:>12} px") for value, pixels in report.raw_values.items()]
    found += [(value, f"{polygons:>12} polygons") for value, polygons in report.raw_polygons.items()]
    for value, amount in sorted(found, key=lambda item: (isinstance(item[0], str), item[0])):  # numbers in order, then texts
        target = values.target(value)
        unmapped = "ignored (UNKNOWN_LABELS_TO_IGNORE)" if values.unknown_to_ignore else "NOT MAPPED"
        meaning = (unmapped if target is None else "ignored" if target == values.ignore_label
                   else f"class {target} ({cfg.CLASS_NAMES[target]})")
        lines.append(f"  {value!r:>8} {amount} -> {meaning}")
    if report.raw_polygons:  # one file of a region: its features over several tiles
        lines.append("  (polygons over the tiles: one over two tiles counted in each)")
    lines += ["", "class shares of the labelled pixels:", f"  {'class':<24} {'train':>8} {'test':>8}"]
    shares = {split: 100 * pixels / max(pixels.sum(), 1) for split, pixels in report.class_pixels.items()}
    counted = {split: pixels.sum() > 0 for split, pixels in report.class_pixels.items()}
    for i, name in enumerate(cfg.CLASS_NAMES):
        lines.append(f"  {name:<24} " + " ".join(f"{shares[split][i]:>7.2f}%" if counted[split] else f"{'-':>8}"
                                                for split in ("train", "test")))
    if not any(counted.values()):
        lines.append("  no labelled pixel could be read: see the problems below")
    lines += ["", f"problems: {len(report.problems) or 'none'}"]
    lines += [f"problem: {text}" for text in report.problems]
    lines += [f"note: {text}" for text in report.notes]
    return "\n".join(lines)


def norm_lines(cfg: Config, report: DataReport) -> list[str]:
    """NORM_MEAN and NORM_STD lines of the image's BANDS, measured over the training tiles."""
    mean, std = report.statistics.normalization(0, len(cfg.BANDS))
    return [f"NORM_MEAN = {mean}", f"NORM_STD = {std}"]


def extra_norm_lines(cfg: Config, report: DataReport) -> list[str]:
    """The "mean" and "std" of each EXTRA_SOURCES entry's bands, measured over the training tiles."""
    lines, first = [], len(cfg.BANDS)
    for index, entry in enumerate(cfg.extra_sources):
        end = first + len(entry["band_names"])
        mean, std = report.statistics.normalization(first, end)
        lines.append(f'  EXTRA_SOURCES[{index}] ({", ".join(entry["band_names"])}): "mean": {mean}, "std": {std}')
        first = end
    return lines


def write_norm(config_file: Path, lines: list[str]) -> None:
    """Put the NORM_MEAN / NORM_STD ``lines`` into ``config_file``, replacing its own assignments whole (an
    assignment over several lines too) or appending them."""
    text, encoding = "", "utf-8"
    if config_file.is_file():
        try:  # in the encoding its coding line declares, as Python reads it (review: latin-1, a traceback)
            with tokenize.open(config_file) as handle:
                text, encoding = handle.read(), handle.encoding
        except (SyntaxError, UnicodeDecodeError) as err:
            raise EosegError(f"{config_file}: cannot read it as Python reads it ({err}); it was left as it is") from None
    for line in lines:
        name = line.split(" =", 1)[0]
        try:
            tree = ast.parse(text, str(config_file))
        except SyntaxError as err:
            raise EosegError(f"{config_file}, line {err.lineno}: syntax error: {err.msg}; it was left as it is") from None
        assigned = [node for node in tree.body if isinstance(node, ast.Assign)
                    and any(isinstance(target, ast.Name) and target.id == name for target in node.targets)]
        for node in assigned:  # its lines are replaced whole: what else they hold would be lost
            beside = [other for other in tree.body if other is not node
                      and other.lineno <= node.end_lineno and other.end_lineno >= node.lineno]
            if beside or len(node.targets) > 1:
                raise EosegError(f"{config_file}, line {node.lineno}: {name} shares its line with other statements; put "
                                 "it on a line of its own (the file was left as it is)")
        rows = text.splitlines(keepends=True)
        if not assigned:
            text += ("" if text.endswith("\n") or not text else "\n") + line + "\n"
            continue
        for node in reversed(assigned):  # every assignment of it, the last first: earlier line numbers stay valid
            rows[node.lineno - 1:node.end_lineno] = [line + "\n"] if node is assigned[-1] else []
        text = "".join(rows)
    target = config_file.resolve()  # a linked config is changed where it lies: the link stays a link
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else None
    with atomic_path(target) as written:
        written.write_text(text, encoding=encoding)
        if mode is not None:  # the new file takes the old one's permissions, not the umask's
            os.chmod(written, mode)


def plot_class_shares(cfg: Config, report: DataReport, path: Path) -> Path:
    fig = class_frequency_figure({split: pixels for split, pixels in report.class_pixels.items()},
                                 cfg.CLASS_NAMES, cfg.palette, "Class shares of the labelled pixels")
    return save_figure(fig, path)
