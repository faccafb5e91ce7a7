"""Label maps as they come, read as class ids on their image's pixel grid.

Every step that reads labels (extraction, training from tiles, validation, scoring,
check_data.py) goes through :func:`label_source`, so that all of them agree:

- the raw values of a label raster are mapped through LABEL_VALUES (:class:`LabelValues`);
  a value it does not name, a fractional value, or a 0/255 mask read as if 255 meant
  "unlabelled" is an error naming the file, the values and their pixel counts, and so is a
  colour table that colours the values as other classes of PALETTE (values or colours?);
- a label raster on another grid than its image is warped onto the image's grid (nearest
  neighbour; pixels it does not reach are unlabelled);
- polygons (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, ...: a file per tile or one for all)
  are reprojected to the image's CRS and rasterised on its grid (:class:`VectorLabels`).
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import pyogrio
import rasterio.features
import shapely
from pyogrio.raw import read as read_vector
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from eoseg.config import IGNORE, VECTOR_SUFFIXES, Config, label_value_pairs
from eoseg.errors import EosegError
from eoseg.grid import bounds, check_relatable, describe_box, needs_warp, note_once, open_on_grid, same_crs
from eoseg.io import (RasterInfo, holds_data, not_one_band, open_raster, raster_info, recorded_class_names,
                      unlabelled_by_mask)
from eoseg.palette import (AREA_SHARE, COMPRESSION_SHIFT, Palette, check_value_tolerance, nearest_reference,
                           tolerance_remedy)

# a label map with at least this share of IGNORE_LABEL pixels and one class present is most likely
# a binary mask whose class value collides with IGNORE_LABEL (255 of a 0/255 mask); with no class
# at all it is a tile with nothing labelled, which training skips. Below it, another tool's raster whose nodata tag
# does not name IGNORE_LABEL is noted: a tile of 2% buildings, or one of background with a void border, alike
SUSPICIOUS_IGNORE_SHARE = 0.05
SCAN_ROWS = 1024  # rows per read when a whole label raster is checked by windows


def row_windows(height: int, width: int, rows: int = SCAN_ROWS) -> Iterator[Window]:
    """Full-width windows of ``rows`` rows, top to bottom: a whole raster read in bounded memory."""
    for first in range(0, height, rows):
        yield Window(0, first, width, min(rows, height - first))
LISTED = 4  # values listed in an error, most frequent first


def number_text(value) -> bool:
    """Whether ``value`` is a whole number written as text ('1', ' -2'), as an attribute may hold it."""
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def is_vector(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


# the files a vector format keeps beside its own, by its suffix: a shapefile's attributes, index, CRS and encoding; the
# edits an SQLite database (a GeoPackage) holds in its write-ahead log while a GIS keeps it open
VECTOR_PARTS = {".shp": (".dbf", ".shx", ".prj", ".cpg"), ".gpkg": (".gpkg-wal",), ".sqlite": (".sqlite-wal",)}


def files_read_with(path: str | Path) -> list[Path]:
    """The files read with ``path`` (resolved, sorted, without it): a raster's VRT sources, world file, .aux.xml, .msk,
    .ovr (as GDAL lists them); a vector file's parts beside it (VECTOR_PARTS: a shapefile's .dbf and .prj, a
    GeoPackage's -wal, which holds the edits of a GIS that keeps it open)."""
    path = Path(path)
    if is_vector(path):  # the parts its driver reads, not a GIS's style or metadata beside it (.qml, .shp.xml)
        parts = VECTOR_PARTS.get(path.suffix.lower(), ())
        return sorted(other.resolve() for other in path.parent.glob(f"{glob.escape(path.stem)}.*")
                      if other != path and other.name[len(path.stem):].lower() in parts)
    with open_raster(path) as src:
        return sorted({Path(name).resolve() for name in src.files} - {path.resolve()})


def value_counts(raw: np.ndarray) -> dict:
    """{value: pixel count} of a label array: integral values as int, fractions as float, NaN left out."""
    raw = np.asarray(raw).ravel()
    if np.issubdtype(raw.dtype, np.floating):
        raw = raw[~np.isnan(raw)]
    if raw.dtype in (np.uint8, np.uint16):
        counts = np.bincount(raw, minlength=1)
        found = np.flatnonzero(counts)
        return {int(v): int(counts[v]) for v in found}
    values, counts = np.unique(raw, return_counts=True)
    return {(int(v) if float(v).is_integer() else float(v)): int(c) for v, c in zip(values.tolist(), counts.tolist())}


def class_pixels(labels: np.ndarray, num_classes: int) -> list[int]:
    """Pixels of each class id in the class-id array ``labels`` (IGNORE_LABEL left out)."""
    return np.bincount(np.asarray(labels).ravel(), minlength=num_classes)[:num_classes].tolist()


def merge_counts(total: dict, more: dict) -> dict:
    for value, count in more.items():
        total[value] = total.get(value, 0) + count
    return total


def describe_counts(counts: dict, unit: str = "px") -> str:
    """"7 x 120 px, 100 x 3 px and 2 more values", most frequent first."""
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    text = ", ".join(f"{value!r} x {count} {unit}" for value, count in ordered[:LISTED])
    return text + (f" and {len(ordered) - LISTED} more values" if len(ordered) > LISTED else "")


NOT_BLUR = ("compression and resampling blur values only along edges, so it is a code of its own (a 0/1 mask beside "
            "0/255 ones?)")


def _largest_area(unnamed: dict, counts: dict, named: Iterable[int] = ()) -> tuple[int, float] | None:
    """The value of ``unnamed`` (values LABEL_VALUES does not name) with the most pixels, and its share of all the
    pixels ``counts`` counts, where that is over AREA_SHARE; else None. Values :func:`_moved_by_compression` from
    one of the ``named`` (LABEL_VALUES' numbers) are passed over."""
    total = sum(counts.values())
    moved = _moved_by_compression(unnamed, counts, named)
    whole_numbers = {v: c for v, c in unnamed.items() if isinstance(v, int) and v not in moved}
    if not whole_numbers or not total:
        return None
    value = max(whole_numbers, key=whole_numbers.get)
    share = whole_numbers[value] / total
    return (value, share) if share > AREA_SHARE else None


BLUR_LEVELS = 4  # values near a LABEL_VALUES value that compression's blur leaves at least (it spreads over levels)


def _moved_by_compression(values: Iterable, counts: dict, named: Iterable[int]) -> set[int]:
    """The whole ``values`` within COMPRESSION_SHIFT levels of a value of ``named``, each of which covers at most
    AREA_SHARE of the pixels ``counts`` counts and has BLUR_LEVELS or more of ``values`` that near: JPEG moves a flat
    area a level or two off (a 0/255 mask's black read as 1) and blurs its edges into many levels, leaving little of
    the value itself, where a 0/1 mask beside 0/255 ones holds both 0 and 1 over areas, and codes left out of
    LABEL_VALUES beside a rare one (CORINE's 112 and 122 beside 111) are a value or two. The total is counted once: a
    raster of thousands of values (an image given as labels) is checked in one pass."""
    total = sum(counts.values())
    whole = [value for value in values if isinstance(value, int)]
    spread = {number: counts.get(number, 0) <= AREA_SHARE * total
              and sum(abs(number - value) <= COMPRESSION_SHIFT for value in whole) >= BLUR_LEVELS for number in named}

    def moved(value: int) -> bool:
        near = [blurred for number, blurred in spread.items() if abs(number - value) <= COMPRESSION_SHIFT]
        return bool(near) and all(near)

    return {value for value in whole if moved(value)}


class LabelValues:
    """LABEL_VALUES: raw label values -> class ids, IGNORE_LABEL for "ignore".

    An empty map means the raw values are the class ids 0..n-1, and IGNORE_LABEL unlabelled.
    A whole raw value within ``tolerance`` of one whole value of the map reads as that one.
    """

    def __init__(self, pairs: list[list], num_classes: int, ignore_label: int, unknown_to_ignore: bool = False,
                 tolerance: int = 0):
        self.identity = not pairs
        self.mapping = {raw: ignore_label if target == IGNORE else int(target) for raw, target in pairs}
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.unknown_to_ignore = unknown_to_ignore
        self._numbers, self.tolerance = check_value_tolerance(tolerance, self.mapping)
        self._near: dict = {}  # raw value -> its target through the tolerance

    @classmethod
    def from_config(cls, cfg: Config) -> "LabelValues":
        return cls(label_value_pairs(cfg.to_dict()), cfg.num_classes, cfg.IGNORE_LABEL, cfg.UNKNOWN_LABELS_TO_IGNORE,
                   cfg.LABEL_TOLERANCE)

    def target(self, raw) -> int | None:
        """The class id (or IGNORE_LABEL) of raw value ``raw``; None if the map does not name it."""
        if self.identity:
            if isinstance(raw, int) and (0 <= raw < self.num_classes or raw == self.ignore_label):
                return raw
            return None
        if raw in self.mapping or not self.tolerance or not isinstance(raw, int) or not len(self._numbers):
            return self.mapping.get(raw)
        if raw not in self._near:  # asked once per value of each block read
            nearest = nearest_reference(np.array([[raw]]), self._numbers, self.tolerance)[0]
            self._near[raw] = None if nearest < 0 else self.mapping[int(self._numbers[nearest, 0])]
        return self._near[raw]

    def named_as_text(self, values) -> list[int]:
        """The whole numbers of ``values`` that the map names only as text ('1' for 1)."""
        return sorted(v for v in values if isinstance(v, int) and self.target(v) is None and self.target(str(v)) is not None)

    def named_as_number(self, values) -> list[str]:
        """The texts of ``values`` that the map names only as numbers (1 for '1')."""
        return sorted(v for v in values if number_text(v)
                      and self.target(v) is None and self.target(int(v)) is not None)

    def check(self, counts: dict, source: str, whole: bool = True, unlabelled_tagged: bool = False) -> None:
        """Refuse fractional values, values the map does not name (unless UNKNOWN_LABELS_TO_IGNORE: then one that
        covers areas is noted) and, of ``whole`` rasters, a value LABEL_TOLERANCE reads that covers areas (not blur,
        see AREA_SHARE) and, read without a map, a 0/255 mask whose class reads as IGNORE_LABEL, unless
        ``unlabelled_tagged`` (the raster's nodata tag is IGNORE_LABEL: its file says those pixels are unlabelled)."""
        fractions = {v: c for v, c in counts.items() if isinstance(v, float)}
        if fractions:
            raise EosegError(f"{source}: label values must be whole numbers, this raster holds fractions "
                             f"({describe_counts(fractions)}); is it a label map? (resampled labels must be "
                             "resampled by nearest neighbour)")
        unknown = {v: c for v, c in counts.items() if self.target(v) is None}
        named = [value for value in self.mapping if isinstance(value, int)]
        area = _largest_area(unknown, counts, named) if unknown and whole else None
        if area is not None and self.unknown_to_ignore:  # wanted, perhaps, but a whole class lost must be seen
            note_once(("unknown area", source, area[0]),
                      f"{source}: value {area[0]}, not in LABEL_VALUES, covers {area[1]:.0%} of the pixels and is read "
                      "as unlabelled (UNKNOWN_LABELS_TO_IGNORE): a class of its own, or labels encoded otherwise?")
        if unknown and not self.unknown_to_ignore:
            if self.identity:
                raise EosegError(
                    f"{source}: label values outside the class ids 0..{self.num_classes - 1} and IGNORE_LABEL "
                    f"{self.ignore_label}: {describe_counts(unknown)}; map the raw values to classes with LABEL_VALUES "
                    f"(e.g. {{0: 0, 255: 1}} for a 0/255 mask, {{0: 'ignore', 1: 0, 2: 1, ...}} for codes 1..n)")
            whole_numbers = {v: c for v, c in unknown.items() if isinstance(v, int)}  # texts are matched exactly
            as_text = self.named_as_text(whole_numbers)
            if as_text:
                raise EosegError(f"{source}: label values not in LABEL_VALUES: {describe_counts(unknown)}; LABEL_VALUES "
                                 f"names {', '.join(repr(str(v)) for v in as_text)} as text, which matches a polygon "
                                 f"attribute, and a raster's values are numbers: write {{{as_text[0]}: ...}}, not "
                                 f"{{'{as_text[0]}': ...}}")
            remedy = "add them to LABEL_VALUES (value: class id or 'ignore') or set UNKNOWN_LABELS_TO_IGNORE=True"
            moved = _moved_by_compression(unknown, counts, named)
            codes = sum(c for v, c in unknown.items() if v not in moved)
            if whole and 2 * codes > sum(counts.values()):  # blur touches edges, compression shifts: another encoding
                raise EosegError(f"{source}: most pixels hold label values not in LABEL_VALUES: {describe_counts(unknown)}; "
                                 f"the labels are encoded otherwise than LABEL_VALUES says: {remedy}")
            if area is not None:  # no LABEL_TOLERANCE offered: it would read that code as the value it is nearest to
                remedy = f"value {area[0]} covers {area[1]:.0%} of the pixels: {NOT_BLUR}; {remedy}"
            else:
                remedy = tolerance_remedy(
                    np.array(list(whole_numbers), dtype=np.int64).reshape(-1, 1), list(whole_numbers.values()),
                    self._numbers, self.tolerance, "LABEL_VALUES values", "value", remedy=remedy,
                    rest="UNKNOWN_LABELS_TO_IGNORE=True the rest as unlabelled")
            raise EosegError(f"{source}: label values not in LABEL_VALUES: {describe_counts(unknown)}; {remedy}")
        area = _largest_area({v: c for v, c in counts.items() if v not in self.mapping and self.target(v) is not None},
                             counts, named) if whole and self.tolerance and not self.identity else None  # read through it
        if area is not None:
            value, share = area
            raise EosegError(f"{source}: value {value} is not in LABEL_VALUES and covers {share:.0%} of the pixels, which "
                             f"LABEL_TOLERANCE={self.tolerance} reads as {self._named(self.target(value))}: {NOT_BLUR}; "
                             "name it in LABEL_VALUES (value: class id or 'ignore')")
        mask = self.mask_like(counts) if whole and not unlabelled_tagged else None
        if mask is not None:
            raise EosegError(
                f"{source}: {mask[0]:.0%} of the pixels are IGNORE_LABEL {self.ignore_label} (unlabelled) and "
                f"only class {mask[1]} of {self.num_classes} occurs: a 0/{self.ignore_label} "
                f"mask? map its values with LABEL_VALUES, e.g. {{0: 0, {self.ignore_label}: 1}}; if {self.ignore_label} "
                f"does mean unlabelled (a tile of one class), tag it as the raster's nodata: rio edit-info --nodata "
                f"{self.ignore_label} FILE (or name it: LABEL_VALUES = {self.unlabelled_named()})")

    def mask_like(self, counts: dict, share: float = SUSPICIOUS_IGNORE_SHARE) -> tuple[float, int] | None:
        """(share of IGNORE_LABEL, the one class present) of a raster read as class ids (``counts`` of its values)
        that looks like a 0/255 mask: IGNORE_LABEL on at least ``share`` of it, and class 0, a mask's background, the
        only other value (a tile of forest with a void border is none); None for others."""
        if not self.identity or self.num_classes < 2:
            return None
        total = sum(counts.values())
        ignored = counts.get(self.ignore_label, 0)
        present = [v for v in counts if isinstance(v, int) and 0 <= v < self.num_classes]
        if ignored and ignored / total >= share and present == [0]:
            return ignored / total, present[0]
        return None

    def unlabelled_named(self) -> str:
        """The LABEL_VALUES that reads the class ids as themselves and IGNORE_LABEL as unlabelled, as text."""
        return "{" + ", ".join([f"{i}: {i}" for i in range(self.num_classes)] + [f"{self.ignore_label}: 'ignore'"]) + "}"

    def _named(self, target: int) -> str:
        return "IGNORE_LABEL" if target == self.ignore_label else f"class {target}"

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Class ids (uint8) of the raw values; values without a target become IGNORE_LABEL."""
        raw = np.asarray(raw)
        if raw.dtype in (np.uint8, np.uint16):  # a lookup table: no sort of the whole raster
            table = [self.target(v) for v in range(int(raw.max()) + 1 if raw.size else 1)]
            return np.array([self.ignore_label if t is None else t for t in table], dtype=np.uint8)[raw]
        nan = np.isnan(raw) if np.issubdtype(raw.dtype, np.floating) else None
        if nan is not None:
            raw = np.where(nan, 0, raw)
        values, inverse = np.unique(raw, return_inverse=True)
        targets = [self.target(int(v) if float(v).is_integer() else float(v)) for v in values.tolist()]
        table = np.array([self.ignore_label if t is None else t for t in targets], dtype=np.uint8)
        labels = table[inverse].reshape(raw.shape)
        if nan is not None:
            labels[nan] = self.ignore_label
        return labels


def check_class_ids(labels: np.ndarray, num_classes: int, ignore_label: int, source: str) -> None:
    """Refuse class ids that are neither a class nor IGNORE_LABEL (labels already mapped, e.g. patches)."""
    counts = value_counts(labels)
    bad = {v: c for v, c in counts.items() if not (0 <= v < num_classes or v == ignore_label)}
    if bad:
        raise EosegError(f"{source}: class ids outside 0..{num_classes - 1} and IGNORE_LABEL {ignore_label}: "
                         f"{describe_counts(bad)}; extract the patches again with this version and config")


class RasterLabels:
    """A label raster read as class ids on ``image``'s grid (warped there by nearest neighbour).

    A paletted raster's colour table must not say otherwise: where it gives every class value
    present a colour of ``palette`` and one of them another class's, the raster could mean
    its values or its colours, and unless LABEL_VALUES says what its values mean it is
    refused (see :meth:`check_values`).
    """

    def __init__(self, info: RasterInfo, image: RasterInfo, values: LabelValues, what: str = "label map",
                 palette: Palette | None = None, class_names: Sequence[str] | None = None, colour_coded: bool = False):
        if info.count != 1:
            raise not_one_band(info.path, info.count, info.colorinterp)
        self.info, self.image, self.values, self.what, self.palette = info, image, values, what, palette
        # a colour-coded ground truth saved with a colour table (the eroded one): colours that contradict its values
        # are refused even under LABEL_VALUES, which was written for the label rasters
        self.colour_coded = colour_coded
        self.class_names = class_names  # CLASS_NAMES, which a map eoseg wrote must record, where given
        self.warped = needs_warp(image, info, what)
        self.path = info.path

    @cached_property
    def recorded_names(self) -> list[str] | None:
        """The class names the raster gives its values as the label maps eoseg writes do (a CLASS_NAMES tag), if any."""
        return recorded_class_names(self.path)

    @property
    def records_class_names(self) -> bool:
        return self.recorded_names is not None

    def check_values(self, counts: dict, whole: bool = True) -> None:
        """Refuse a label map eoseg wrote (it records CLASS_NAMES) under other CLASS_NAMES, read through LABEL_VALUES
        for raw codes, or whose unlabelled pixels would be read as a class; values that the raster's colour table
        colours as another class than they read as (or as unlabelled); then what :meth:`LabelValues.check` refuses,
        saying where the value refused is the raster's nodata value."""
        if self.class_names is not None and self.records_class_names and self.recorded_names != list(self.class_names):
            raise EosegError(f"{self.path}: it records the class names {self.recorded_names} (a label map eoseg made), "
                             f"the config gives CLASS_NAMES {list(self.class_names)}: its class ids would be read as "
                             "other classes; set CLASS_NAMES (and PALETTE) to those it was made with, or convert its ground "
                             "truth again under these with --force")
        present = [value for value in counts if isinstance(value, int) and value != self.values.ignore_label]
        # a LABEL_VALUES that reads some class id as itself may merge classes of a map of class ids; one that reads
        # none so is for raw codes
        if (not self.values.identity and present and not any(self.values.target(v) == v for v in present)
                and self.records_class_names):
            raise EosegError(f"{self.path}: it names its classes (CLASS_NAMES) as the label maps eoseg writes do, so it "
                             "holds class ids, but LABEL_VALUES reads its values as raw codes; read it with LABEL_VALUES = "
                             "{} (LABEL_VALUES is for raw codes, which convert_gt.py --from-values turns into class ids)")
        ignored = self.values.ignore_label
        target = self.values.target(ignored) if ignored in counts else None
        written = ignored in counts and (target not in (None, ignored) or (whole and self.values.mask_like(counts)))
        if written and self.records_class_names:  # eoseg's 255: pixels read as unlabelled when the map was made
            if target in (None, ignored):  # class 0 and 255 alone: a mask's white given as IGNORE_COLOR, or one class
                read_as, alone = "", ("; if they are unlabelled indeed (a tile of class 0 alone), say so: LABEL_VALUES = "
                                      + self.values.unlabelled_named())
            else:
                read_as, alone = f", but LABEL_VALUES reads them as class {target}", ""
            raise EosegError(
                f"{self.path}: it names its classes (CLASS_NAMES) as the label maps eoseg writes do, so its "
                f"{counts[ignored] / sum(counts.values()):.0%} of IGNORE_LABEL {ignored} are pixels left unlabelled when it "
                f"was made (its colour IGNORE_COLOR, or its value 'ignore' in LABEL_VALUES){read_as}; if they are a "
                "class, give the class that colour in PALETTE (or that value in LABEL_VALUES) and convert the ground "
                f"truth again with --force{alone}")
        if self.info.colour_table is not None and self.palette is not None:
            self._check_colour_table(counts)
        try:
            self.values.check(counts, str(self.path), whole, unlabelled_tagged=self.info.nodata == self.values.ignore_label)
        except EosegError as err:  # its nodata tag, which is not read as unlabelled, may name the value that is
            nodata = self.info.nodata
            if nodata is None or not float(nodata).is_integer() or int(nodata) not in counts \
                    or self.values.target(int(nodata)) is not None:
                raise
            raise EosegError(f"{err}; {int(nodata)} is the raster's nodata value: if it marks unlabelled pixels, name "
                             f"it so in LABEL_VALUES ({int(nodata)}: 'ignore')") from None
        if whole:
            self._note_sparse_mask(counts)

    def _note_sparse_mask(self, counts: dict) -> None:
        """A note where another tool's raster (no CLASS_NAMES or colour table) holds one class and IGNORE_LABEL: under
        SUSPICIOUS_IGNORE_SHARE of it, which :meth:`LabelValues.check` refuses above, unless the nodata tag names it (then
        noted from that share on): a 0/255 mask of few buildings, read as background and unlabelled, or a tile of
        background with a void border."""
        ignored = self.values.ignore_label
        if self.records_class_names or self.info.colour_table is not None:
            return
        if self.info.nodata == ignored:  # its tag says unlabelled; a 0/255 mask tagged so would lose its class
            mask = self.values.mask_like(counts)
            if mask is not None:
                note_once(("tagged unlabelled", str(self.path)),
                          f"{self.path}: {mask[0]:.0%} of the pixels are {ignored}, read as unlabelled as its nodata tag "
                          f"says, and only class {mask[1]} occurs; if it is a 0/{ignored} mask, map its values: "
                          f"LABEL_VALUES = {{0: 0, {ignored}: 1}}")
            return
        mask = self.values.mask_like(counts, share=0.0)
        if mask is not None:
            note_once(("few unlabelled", str(self.path)),
                      f"{self.path}: {mask[0]:.2%} of the pixels are IGNORE_LABEL {ignored} (unlabelled) and only class "
                      f"{mask[1]} occurs: a 0/{ignored} mask of few objects? map its values with LABEL_VALUES, e.g. "
                      f"{{0: 0, {ignored}: 1}}; if {ignored} does mean unlabelled, tag it as the raster's nodata "
                      f"(gdal_edit.py -a_nodata {ignored} FILE) and this note goes")

    def _check_colour_table(self, counts: dict) -> None:
        """Where the colour table gives most values present PALETTE colours (of a class, or IGNORE_COLOR), the
        colours say what the values are: refuse a value that reads as another class than its colour, unless
        LABEL_VALUES says what the values mean; but refuse a LABEL_VALUES for raw codes over a map of class ids. A
        table of other colours (a grey ramp, whose black may be IGNORE_COLOR's) is for display."""
        table, palette = self.info.colour_table, self.palette
        if self.colour_coded:
            self._check_colours_agree(counts)
            return
        classes = {value: self.values.target(value) for value in counts}
        classes = {value: target for value, target in classes.items() if target is not None and target != self.values.ignore_label}
        coloured = palette.classes_coloured(table, classes)
        known = [value for value in classes if coloured[value] is not None]  # a colour no class has says nothing
        if 2 * len(known) <= len(classes):
            return
        wrong = {value: target for value, target in sorted(classes.items()) if coloured[value] not in (None, target)}
        if not wrong:
            return
        value, target = next(iter(wrong.items()))
        colour = f"PALETTE's colour of class {coloured[value]}" if coloured[value] != palette.ignore_label else "IGNORE_COLOR"
        if not self.values.identity:
            # LABEL_VALUES says what the values mean, whatever their colours, and may merge classes of a map of
            # class ids; one that reads no class id of such a map as itself is for raw codes, not for this map
            if not all(coloured[v] == v != palette.ignore_label for v in classes) or any(t == v for v, t in classes.items()):
                return
            raise EosegError(
                f"{self.path}: its colour table gives each value PALETTE's colour of that class id: it holds class ids (a "
                f"label map eoseg wrote, for one), but LABEL_VALUES reads value {value} as class {target}; read it with "
                "LABEL_VALUES = {} (LABEL_VALUES is for raw codes, which convert_gt.py --from-values turns into class ids)")
        present = sorted(v for v in counts if isinstance(v, int))
        # every value a class id could take, not only this raster's: other tiles hold others
        spanned = sorted(set(range(max([palette.num_classes] + [v + 1 for v in classes]))) | set(present))
        by_colour = palette.classes_coloured(table, spanned)
        read_by_colour = ", ".join(f"{v}: 'ignore'" if c == palette.ignore_label else f"{v}: {c}"
                                   for v, c in by_colour.items() if c is not None)
        others = [v for v, c in by_colour.items() if c is None]
        others = f" and name {', '.join(map(str, others))}, whose colours no class has" if others else ""
        raise EosegError(
            f"{self.path}: its colour table gives value {value} the colour {table[value]}, {colour}, but the value reads "
            f"as class {target}: made by convert_gt.py under another PALETTE? convert its colour ground truth again "
            "(convert_gt.py --from-color --force); if its colours are the classes, read it by them: LABEL_VALUES = "
            f"{{{read_by_colour}}}{others}; if its values are, say so: LABEL_VALUES = "
            f"{{{', '.join(f'{v}: {v}' for v in range(palette.num_classes))}}}, or set PALETTE to its colours")

    def _check_colours_agree(self, counts: dict) -> None:
        """A colour-coded ground truth saved with a colour table (see ``colour_coded``): where its table gives most
        values present PALETTE colours (or IGNORE_COLOR), and not greys only (a table for display), refuse a value
        read otherwise than its colour says: through a LABEL_VALUES written for the label rasters, or not at all."""
        table, palette = self.info.colour_table, self.palette
        present = sorted(value for value in counts if isinstance(value, int) and value not in table.transparent)
        shown = [table[value] for value in present if value < len(table) and table[value] is not None]
        coloured = palette.classes_coloured(table, present)
        if 2 * sum(c is not None for c in coloured.values()) <= len(present) or all(r == g == b for r, g, b in shown):
            return
        for value in present:
            colour, target = coloured[value], self.values.target(value)
            if target is None and self.values.unknown_to_ignore:  # UNKNOWN_LABELS_TO_IGNORE reads it as unlabelled
                target = palette.ignore_label
            if colour is None or target == colour:
                continue
            named = f"PALETTE's colour of class {colour}" if colour != palette.ignore_label else "IGNORE_COLOR"
            read = ("is read as no class" if target is None else "reads as unlabelled" if target == palette.ignore_label
                    else f"reads as class {target}") + (
                "" if self.values.identity else " through LABEL_VALUES")
            raise EosegError(
                f"{self.path}: its colour table gives value {value} the colour {table[value]}, {named}, but the value "
                f"{read}: if its colours are the classes (a colour ground truth saved with a colour table), expand it "
                "to RGB, which is read by colour: gdal_translate -expand rgb FILE FILE_rgb.tif, and point "
                "GT_ERODED_PATTERN at those; if its values are, score against LABEL_PATTERN instead: "
                "GT_ERODED_PATTERN = \"\"")

    def _read(self, src, window: Window | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw values of ``window`` and which of them hold labels (None: all): those the raster reaches, where it is
        warped, and not marked empty by its own mask or alpha band (its nodata tag is not read: see open_on_grid)."""
        raw = src.read(1, window=window)
        if self.warped:  # the warper carries the raster's own mask over
            return raw, holds_data(src.read_masks(1, window=window))
        empty = unlabelled_by_mask(src, window)
        return raw, None if empty is None else ~empty

    def read(self, window: Window | None = None) -> np.ndarray:
        """(h, w) uint8 class ids of ``window`` of the image's grid (all of it if None), checked."""
        with open_on_grid(self.info, self.image, self.what, "nearest", labels=True) as src:
            raw, covered = self._read(src, window)
        if window is None and self.warped and not covered.any():
            raise self._covers_nothing()
        self.check_values(value_counts(raw if covered is None else raw[covered]), whole=window is None)
        labels = self.values.apply(raw)
        if covered is not None:
            labels[~covered] = self.values.ignore_label
        return labels

    def counts(self) -> dict:
        """{raw value: pixels} over the image's grid, read by windows (pixels the raster does not reach left out)."""
        total: dict = {}
        reached = not self.warped
        with open_on_grid(self.info, self.image, self.what, "nearest", labels=True) as src:
            for window in row_windows(self.image.height, self.image.width):
                raw, covered = self._read(src, window)
                merge_counts(total, value_counts(raw if covered is None else raw[covered]))
                reached = reached or covered.any()
        if not reached:
            raise self._covers_nothing()
        return total

    def _covers_nothing(self) -> EosegError:
        """A warped raster that reaches none of the image's pixels: the overlap of their bounding boxes that
        :func:`needs_warp` checks is not one of pixels where either grid is rotated."""
        return EosegError(f"{self.path} ({self.what}) covers none of the pixels of its image {self.image.path}: only "
                          "their bounding boxes overlap (a rotated grid); check the file and its CRS")

    def check(self) -> None:
        """Check the whole raster's values by windows (for readers that go on to read it by rows)."""
        self.check_values(self.counts())


def _boxes_meet(box: Sequence[float], other: Sequence[float]) -> bool:
    """Whether two (left, bottom, right, top) boxes overlap."""
    return box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]


class VectorLabels:
    """Polygons rasterised on ``image``'s grid: classes from an attribute through LABEL_VALUES, or
    one fixed class; the rest VECTOR_BACKGROUND_CLASS; edges as VECTOR_BOUNDARY says."""

    def __init__(self, cfg: Config, path: Path, image: RasterInfo, values: LabelValues):
        self.path, self.image, self.values = path, image, values
        self.background = int(cfg.VECTOR_BACKGROUND_CLASS)
        self.boundary = cfg.VECTOR_BOUNDARY
        self.boundary_width = float(cfg.VECTOR_BOUNDARY_WIDTH)
        self.overlap = cfg.VECTOR_OVERLAP
        self.value_polygons: dict = {}  # VECTOR_CLASS_FIELD value -> polygons on the image
        if not image.georeferenced or image.crs is None:
            raise EosegError(f"{path}: polygons need an image with a CRS to be placed on, and {image.path} has none; "
                             + (image.unplaced or "give the image a georeference or rasterise the labels yourself"))
        try:
            layer = _polygon_layer(path, cfg.VECTOR_LAYER)
            info = pyogrio.read_info(path, layer=layer, force_total_bounds=True)
        except EosegError:
            raise
        except Exception as err:  # pyogrio raises its own DataSourceError / DataLayerError and GDAL's
            raise EosegError(f"{path}: cannot read these vector labels ({str(err).splitlines()[0]})") from None
        field = cfg.VECTOR_CLASS_FIELD
        if field and path.suffix.lower() == ".shp" and not any(path.with_suffix(ext).is_file() for ext in (".dbf", ".DBF")):
            raise EosegError(f"{path}: its .dbf, which holds the polygons' attributes ({field!r}, VECTOR_CLASS_FIELD), "
                             "is not beside it: copy the shapefile's .dbf there with it")
        texts = [key for key in values.mapping if isinstance(key, str) and not number_text(key)]
        if not field and texts:  # every polygon would be VECTOR_POLYGON_CLASS, the texts read nowhere (review)
            raise EosegError(f"{path}: LABEL_VALUES names texts ({', '.join(map(repr, texts[:3]))}), which a polygon "
                             "attribute holds, but VECTOR_CLASS_FIELD is '', which gives every polygon VECTOR_POLYGON_CLASS; "
                             f"set VECTOR_CLASS_FIELD to the attribute that holds them (the file has "
                             f"{', '.join(map(repr, info['fields'])) or 'no attributes'})")
        if field and field not in list(info["fields"]):
            raise EosegError(f"{path}: no attribute {field!r} (VECTOR_CLASS_FIELD) in its features; it has "
                             f"{', '.join(map(repr, info['fields'])) or 'no attributes'}; set VECTOR_CLASS_FIELD to one "
                             "of them, or to '' to give every polygon VECTOR_POLYGON_CLASS")
        crs = CRS.from_user_input(info["crs"]) if info["crs"] else image.crs
        if not info["crs"]:  # said per CRS: tiles in several CRSs read the one file in each of them
            note_once(("no CRS", str(path), str(image.crs)),
                      f"{path} declares no CRS (a shapefile without its .prj?): its coordinates are taken to be in "
                      f"the CRS of {image.path.name}, {image.crs}")
        check_relatable(crs, str(path), image.crs, f"its image {image.path}")
        box = bounds(image)
        reproject = not same_crs(crs, image.crs)
        query = transform_bounds(image.crs, crs, *box) if reproject else box
        _, _, geometry, fields = read_vector(path, layer=layer, bbox=query, columns=[field] if field else [])
        shapes, feature, others = polygon_parts(shapely.from_wkb(geometry))
        if others:
            note_once(("points or lines", str(path), str(image.path)),
                      f"{path}: {others} points or lines over the image {image.path} left out: they cover no area, and "
                      "only polygons label pixels")
        if reproject and len(shapes):
            shapes = shapely.transform(
                shapes, lambda xy: np.column_stack(transform_points(crs, image.crs, xy[:, 0], xy[:, 1])))
        inside = shapely.intersects(shapes, shapely.box(*box)) if len(shapes) else np.zeros(0, dtype=bool)
        if info["features"] and not inside.any():
            extent = info.get("total_bounds")  # None where no feature has a geometry
            if extent is not None and _boxes_meet(query, extent):  # a tile of fields among a region's buildings
                note_once(("no polygon", str(path), str(image.path)),
                          f"{path}: no polygon over the image {image.path}, which lies within the file's extent: all of "
                          f"it is VECTOR_BACKGROUND_CLASS ({self.background})")
            else:
                declared = crs if info["crs"] else f"none declared (no .prj, say): taken to be the image's, {crs}"
                raise EosegError(f"{path}: none of its {info['features']} features overlaps the image {image.path} "
                                 f"({describe_box(*box)} in {image.crs}), which lies outside the file's extent; check "
                                 f"the file and its CRS ({declared})")
        shapes, feature = shapes[inside], feature[inside]
        if field:
            feature_values = [_plain(v) for v in np.asarray(fields[0]).tolist()]
            raw = [feature_values[i] for i in feature]
            self.value_polygons = dict(Counter(feature_values[i] for i in np.unique(feature)))
            unknown = {value: count for value, count in self.value_polygons.items() if values.target(value) is None}
            if unknown and not values.unknown_to_ignore:
                raise EosegError(f"{path}: {field} values not in LABEL_VALUES: "
                                 f"{_unknown_attributes(unknown, values, cfg.CLASS_NAMES)}")
            classes = np.array([values.ignore_label if (t := values.target(v)) is None else t for v in raw], dtype=np.int64)
            drawn = [value for value in self.value_polygons if values.target(value) == self.background]
            if drawn and self.background != values.ignore_label:  # land-cover polygons: the gaps between them are no class
                note_once(("background drawn", str(path)),
                          f"{path}: pixels outside every polygon are read as VECTOR_BACKGROUND_CLASS {self.background} "
                          f"({cfg.CLASS_NAMES[self.background]}), a class its polygons label too ({field} {drawn[0]!r}): "
                          "if the polygons are to cover the land, leave the rest unlabelled: VECTOR_BACKGROUND_CLASS = "
                          f"{values.ignore_label}")
        else:
            classes = np.full(len(shapes), int(cfg.VECTOR_POLYGON_CLASS), dtype=np.int64)
        # in the order they are drawn: a later polygon over an earlier one (VECTOR_OVERLAP "last", or "smallest" with
        # the largest first)
        order = np.argsort(-shapely.area(shapes), kind="stable") if self.overlap == "smallest" else np.arange(len(shapes))
        # in the image's pixel coordinates: a window's are these less whole numbers, exactly, so that a pixel centre on
        # an edge falls on the same side whichever window of rows rasterises it (world coordinates rounded per window)
        to_pixels = ~image.transform
        self.polygons = shapely.transform(shapes[order], lambda xy: np.column_stack(to_pixels * (xy[:, 0], xy[:, 1])))
        self.classes = classes[order]
        overlaps, pixels = _overlaps(shapes, classes, box, abs(image.transform.determinant))
        if overlaps:
            given = {"ignore": "are left unlabelled (IGNORE_LABEL), not given to either class by the file's order",
                     "smallest": "take the class of the smaller polygon", "last": "take the class of the polygon "
                     "later in the file"}[self.overlap]
            note_once(("overlaps", str(path), str(image.path), self.overlap),
                      f"{path}: {overlaps} pairs of polygons of different classes overlap over the image {image.path} "
                      f"(about {pixels:.0f} px): those pixels {given} (VECTOR_OVERLAP={self.overlap!r})")

    def read(self, window: Window | None = None) -> np.ndarray:
        """(h, w) uint8 class ids of ``window`` of the image's grid (all of it if None). Pixels polygons of different
        classes share, as VECTOR_OVERLAP says: "ignore", each class's polygons rasterised on their own, those pixels
        IGNORE_LABEL whatever the file's order; else the polygons drawn in their order, a later one on top."""
        window = window or Window(0, 0, self.image.width, self.image.height)
        shape = (int(window.height), int(window.width))
        transform = Affine.translation(window.col_off, window.row_off)  # the polygons are in the image's pixels
        labels = np.full(shape, self.background, dtype=np.uint8)
        if not len(self.polygons):
            return labels
        all_touched = self.boundary == "all_touched"
        if self.overlap == "ignore":
            claims = np.zeros(shape, dtype=np.uint16)  # how many classes claim each pixel
            # all_touched: polygons that only touch (neighbouring parcels) both claim the pixels along their shared
            # edge; those go to the class whose polygon holds the pixel's centre, as under "centre"
            centre_claims, centre_labels = (np.zeros(shape, dtype=np.uint16), labels.copy()) if all_touched else (None, None)

            def rasterized(polygons, touched: bool) -> np.ndarray:
                return rasterio.features.rasterize(polygons, out_shape=shape, transform=transform, fill=0, default_value=1,
                                                   dtype=np.uint8, all_touched=touched).view(bool)

            for class_id in np.unique(self.classes):
                polygons = self.polygons[self.classes == class_id].tolist()
                claimed = rasterized(polygons, all_touched)
                labels[claimed] = class_id
                claims += claimed
                if all_touched:
                    centred = rasterized(polygons, False)
                    centre_labels[centred] = class_id
                    centre_claims += centred
            shared = claims > 1
            if all_touched:
                by_centre = shared & (centre_claims == 1)
                labels[by_centre] = centre_labels[by_centre]
                shared &= centre_claims != 1
            labels[shared] = self.values.ignore_label
        else:
            rasterio.features.rasterize(zip(self.polygons.tolist(), self.classes.tolist()), out=labels,
                                        transform=transform, all_touched=all_touched)
        if self.boundary == "ignore_band":
            rasterio.features.rasterize(((edge, self.values.ignore_label) for edge in self._edge_bands),
                                        out=labels, transform=transform)
        return labels

    @cached_property
    def _edge_bands(self) -> list:
        """VECTOR_BOUNDARY "ignore_band": a band VECTOR_BOUNDARY_WIDTH px wide across every polygon's edges (built once
        for all the windows read)."""
        edges = shapely.buffer(shapely.boundary(self.polygons), self.boundary_width / 2)
        return [edge for edge in edges.tolist() if not edge.is_empty]

    def check(self) -> None:
        """Nothing left to check: the attribute values were checked when the polygons were read."""


def _polygon_layer(path: Path, wanted: str) -> str:
    """The layer of ``path`` that holds the labels: ``wanted`` (VECTOR_LAYER), else the file's only layer
    with geometries; a file with several is refused, as reading one would leave the others' polygons out."""
    layers = [(str(name), geometry) for name, geometry in pyogrio.list_layers(path)]
    names = ", ".join(repr(name) for name, _ in layers) or "none"
    if wanted:
        if wanted not in [name for name, _ in layers]:
            raise EosegError(f"{path}: no layer {wanted!r} (VECTOR_LAYER); its layers: {names}")
        return wanted
    spatial = [name for name, geometry in layers if geometry is not None]
    if len(spatial) != 1:
        raise EosegError(f"{path}: {'no layer' if not spatial else f'{len(spatial)} layers'} with geometries "
                         f"(its layers: {names}); " + ("set VECTOR_LAYER to the one that holds the labels"
                                                       if spatial else "labels need polygons"))
    return spatial[0]


def _plain(value):
    """An attribute value as LABEL_VALUES names it: whole numbers as int, a null (None, or NaN of a number field) None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float) and value != value:
        return None
    return value


def _unknown_attributes(unknown: dict, values: LabelValues, class_names: Sequence[str] = ()) -> str:
    """The attribute values LABEL_VALUES does not name, {value: polygons}, and what to do: nulls can be no key; texts
    that are CLASS_NAMES (in any case) get the LABEL_VALUES that reads each as its class."""
    named = {value: count for value, count in unknown.items() if value is not None}
    ids = {str(name).strip().lower(): index for index, name in enumerate(class_names)}
    as_classes = {value: ids[value.strip().lower()] for value in named if isinstance(value, str) and value.strip().lower() in ids}
    listed = [describe_counts(named, "polygons")] if named else []
    if None in unknown:
        listed.append(f"null (no value) x {unknown[None]} polygons")
    remedies = []
    as_text, as_number = values.named_as_text(named), values.named_as_number(named)
    if as_text:
        remedies.append(f"LABEL_VALUES names '{as_text[0]}' as text and the attribute holds numbers: write "
                        f"{{{as_text[0]}: ...}}, not {{'{as_text[0]}': ...}}")
    if as_number and values.identity:
        remedies.append(f"the class ids are numbers and the attribute holds text: map its values with LABEL_VALUES "
                        f"(e.g. {{'{as_number[0]}': {as_number[0]}, ...}})")
    elif as_number:
        remedies.append(f"LABEL_VALUES names {as_number[0]} as a number and the attribute holds text: write "
                        f"{{'{as_number[0]}': ...}}, not {{{as_number[0]}: ...}}")
    if None in unknown:
        remedies.append("fill the attribute of the polygons without a value, or set UNKNOWN_LABELS_TO_IGNORE=True to "
                        "leave them unlabelled")
    if as_classes and len(as_classes) == len(named):  # read as no class, every polygon would be lost to the ignore
        remedies.append("they are CLASS_NAMES: read each as its class, LABEL_VALUES = "
                        + "{" + ", ".join(f"{value!r}: {index}" for value, index in sorted(as_classes.items(), key=lambda item: item[1]))
                        + ("" if values.identity else ", ...") + "}")
    elif named and not (as_text or as_number):
        remedies.append("add them to LABEL_VALUES (value: class id or 'ignore') or set UNKNOWN_LABELS_TO_IGNORE=True")
    return f"{', '.join(listed)}; {'; '.join(remedies)}"


def polygon_parts(shapes: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The polygons of the geometries ``shapes`` (multi-part geometries and collections exploded), the index of
    the geometry each comes from, and how many points and lines were left out; missing and empty ones give none."""
    feature = np.arange(len(shapes))
    while len(shapes) and (shapely.get_type_id(shapes) >= 4).any():  # Multi* (4..6) and GeometryCollection (7)
        shapes, part_of = shapely.get_parts(shapes, return_index=True)
        feature = feature[part_of]
    present = ~shapely.is_missing(shapes) & ~shapely.is_empty(shapes)
    polygon = present & (shapely.get_type_id(shapes) == 3)
    return shapes[polygon], feature[polygon], int((present & ~polygon).sum())


OVERLAP_NOISE = 0.01  # of a pixel's area: a shared area below it is rounding, not an overlap (review: 121 such pairs)


def _overlaps(polygons: np.ndarray, classes: np.ndarray, box: tuple, pixel_area: float) -> tuple[int, float]:
    """How many pairs of ``polygons`` of different ``classes`` share area within ``box``, and about how many pixels
    of ``pixel_area`` it covers (shared by several pairs, counted in each); found through a spatial index, not
    by testing every pair."""
    if len(np.unique(classes)) < 2:
        return 0, 0.0
    first, second = shapely.STRtree(polygons).query(polygons, predicate="intersects")
    pair = (first < second) & (classes[first] != classes[second])
    first, second = first[pair], second[pair]
    # invalid polygons (a bowtie) are rasterised as drawn; their overlaps are measured on their valid twins
    shared = shapely.intersection(shapely.make_valid(polygons[first]), shapely.make_valid(polygons[second]))
    area = shapely.area(shapely.intersection(shared, shapely.box(*box)))
    area = area[area > OVERLAP_NOISE * pixel_area]  # polygons that only touch, reprojected: slivers of rounding
    return int(area.size), float(area.sum() / pixel_area)


def label_source(cfg: Config, path: Path, image: RasterInfo, what: str = "label map",
                 colour_coded: bool = False) -> RasterLabels | VectorLabels:
    """The labels at ``path`` (a raster or a vector file) for ``image``, read as class ids on its grid; with
    ``colour_coded`` (a ground truth documented as colours) a colour table must not contradict its values."""
    values = LabelValues.from_config(cfg)
    if is_vector(path):
        return VectorLabels(cfg, path, image, values)
    return RasterLabels(raster_info(path, what), image, values, what, cfg.palette, cfg.CLASS_NAMES, colour_coded)
