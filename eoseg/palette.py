"""Colour-coded ground truth <-> numeric label maps.

One palette (class colours) and one ignore colour define both directions. The
conversion is a single table lookup over packed 24-bit colours, not a loop per class.
Ground truth saved as JPEG or resampled holds colours near the class colours: within
LABEL_TOLERANCE levels of exactly one of them, such a colour reads as it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from eoseg.errors import EosegError


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack an (..., 3) uint8 colour array into (...) uint32 values 0xRRGGBB."""
    rgb = rgb.astype(np.uint32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


# compression and resampling blur values and colours along edges, each blurred one a sliver: one that covers more than
# AREA_SHARE of a raster is a code (colour) of its own, whatever LABEL_TOLERANCE would read it as. JPEG also moves flat
# colours by a few levels in a channel: a colour closer than COMPRESSION_SHIFT to a class's may cover areas
COMPRESSION_SHIFT = 16
AREA_SHARE = 0.05
NOT_COMPRESSION = "compression shifts flat colours by a few levels and blurs edges into slivers, so it is a colour of its own"


class Palette:
    """Class colours plus the colour of undefined pixels (mapped to ``ignore_label``).

    ``colors[i]`` is the RGB colour of class ``i``. ``ignore_color`` (or None) is the
    colour of pixels that carry no class, such as the black boundaries of the ISPRS
    eroded ground truth.
    """

    def __init__(self, colors, ignore_color=(0, 0, 0), ignore_label: int = 255, tolerance: int = 0):
        self.colors = np.array([_rgb(c, "PALETTE") for c in colors], dtype=np.uint8).reshape(-1, 3)
        self.ignore_color = None if ignore_color is None else _rgb(ignore_color, "IGNORE_COLOR")
        self.ignore_label = int(ignore_label)
        if not 0 <= self.ignore_label <= 255:
            raise EosegError(f"IGNORE_LABEL must be in 0..255, got {self.ignore_label}")
        if self.ignore_label < len(self.colors):
            raise EosegError(
                f"IGNORE_LABEL {self.ignore_label} collides with a class id "
                f"(there are {len(self.colors)} classes); use a value >= {len(self.colors)}, e.g. 255"
            )
        packed = pack_rgb(self.colors)
        if len(set(packed.tolist())) != len(packed):
            raise EosegError("PALETTE has two classes with the same colour")
        if self.ignore_color is not None and pack_rgb(np.array(self.ignore_color)) in packed:
            raise EosegError(f"IGNORE_COLOR {self.ignore_color} is also a class colour in PALETTE; set IGNORE_COLOR "
                             "to the colour of unlabelled pixels, or None if the ground truth has none")
        self._packed = packed
        self._order = np.argsort(packed)
        # every colour a pixel may carry, with the label it reads as
        self._references = self.colors if self.ignore_color is None else np.vstack([self.colors, [self.ignore_color]])
        self._targets = np.append(np.arange(len(self.colors)), self.ignore_label)[:len(self._references)]
        self.tolerance = check_tolerance(tolerance, self._references, "PALETTE and IGNORE_COLOR colours", rgb_text)

    @property
    def num_classes(self) -> int:
        return len(self.colors)

    def classes_coloured(self, table: Sequence[tuple[int, int, int] | None], values) -> dict[int, int | None]:
        """For each of ``values`` of a paletted raster, the class whose colour its colour table
        ``table`` (RGB by value) gives it, IGNORE_LABEL for IGNORE_COLOR; None for a colour no class has."""
        owners = {tuple(map(int, colour)): class_id for class_id, colour in enumerate(self.colors)}
        if self.ignore_color is not None:
            owners[tuple(self.ignore_color)] = self.ignore_label
        return {value: owners.get(table[value]) if 0 <= value < len(table) else None for value in values}

    def to_labels(self, rgb: np.ndarray, unknown_to_ignore: bool = False, source: str = "image",
                  empty: np.ndarray | None = None, grey_image: bool = True) -> np.ndarray:
        """Convert an (H, W, 3) colour image into (H, W) uint8 class ids.

        A colour within ``tolerance`` levels (in each of R, G, B) of a class colour or the
        ignore colour reads as it. Any other colour is an error that names ``source``, the
        colour and its pixel count, unless ``unknown_to_ignore`` maps such pixels to the
        ignore label. Pixels ``empty`` marks (transparent, beyond the image) are the ignore
        label, whatever colour they hold. Class ids saved in three grey bands are refused, with or without
        a tolerance (of a part of an image: where ``grey_image`` says the whole may be grey, see :meth:`read_colours`).
        """
        labels, unknown = self.read_colours(rgb, source, empty, grey_image)
        if unknown and not unknown_to_ignore:
            self.refuse_unknown(unknown, source)
        return labels

    def read_colours(self, rgb: np.ndarray, source: str = "image", empty: np.ndarray | None = None,
                     grey_image: bool = True, near: dict | None = None) -> tuple[np.ndarray, dict[int, int]]:
        """:meth:`to_labels` of a part of an image read by windows: its class ids, colours no class has read as the
        ignore label, and those colours (packed) with their pixel counts, for :meth:`refuse_unknown` once the whole
        image is read. ``grey_image``: whether every pixel of the whole image may be grey (:func:`all_grey`), without
        which class ids in three grey bands are not looked for (a grey window of a colour image holds none).
        ``near``, where given, counts the pixels of each colour read through LABEL_TOLERANCE, and ``""`` all the
        pixels read, for :meth:`refuse_other_colours` once the whole image is read."""
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise EosegError(
                f"{source}: expected a 3-band colour ground truth, got shape {rgb.shape}; "
                "is it already a numeric label map?"
            )
        packed = pack_rgb(rgb)
        keys = self._packed[self._order]
        pos = np.searchsorted(keys, packed).clip(0, len(keys) - 1)
        found = keys[pos] == packed
        labels = np.where(found, self._order[pos], self.ignore_label).astype(np.uint8)
        unknown = ~found
        if self.ignore_color is not None:
            unknown &= packed != pack_rgb(np.array(self.ignore_color))
        if empty is not None:
            labels[empty] = self.ignore_label
            unknown &= ~empty
        if unknown.any() and grey_image:  # before the tolerance, which would read class ids 1, 2, ... as black
            self._refuse_class_ids_in_three_bands(rgb, packed[unknown], empty, source)
        if near is not None:
            near[""] = near.get("", 0) + (packed.size if empty is None else int((~empty).sum()))
        if unknown.any() and self.tolerance:
            colours, inverse, counts = np.unique(packed[unknown], return_inverse=True, return_counts=True)
            nearest = nearest_reference(_unpack(colours), self._references, self.tolerance)
            if near is not None:
                for colour, pixels in zip(colours[nearest >= 0].tolist(), counts[nearest >= 0].tolist()):
                    near[colour] = near.get(colour, 0) + pixels
            nearest = nearest[inverse]
            labels[unknown] = np.where(nearest >= 0, self._targets[nearest], self.ignore_label)
            unknown[unknown] = nearest < 0
        values, counts = np.unique(packed[unknown], return_counts=True)
        return labels, dict(zip(values.tolist(), counts.tolist()))

    def refuse_unknown(self, unknown: dict[int, int], source: str, pixels: int = 0) -> None:
        """Refuse ``source`` for its colours no class has (packed colour -> pixels, :meth:`read_colours`), naming the
        most frequent and the LABEL_TOLERANCE or setting that reads them; none where one of them, farther than
        COMPRESSION_SHIFT from every colour, covers over AREA_SHARE of the image's ``pixels`` (where given)."""
        values, counts = np.array(list(unknown), dtype=np.uint32), np.array(list(unknown.values()))
        worst = np.argsort(counts)[::-1][:3]
        described = ", ".join(f"{_rgb_of(values[i])} x {counts[i]} px" for i in worst)
        more = f" and {len(values) - 3} more colours" if len(values) > 3 else ""
        remedy = ("fix PALETTE in the config, or set UNKNOWN_LABELS_TO_IGNORE=True (convert_gt.py: or --unknown-to-ignore) "
                  "to read them as unlabelled")
        areas = (counts > AREA_SHARE * pixels) & (_distances(_unpack(values), self._references).min(axis=1) > COMPRESSION_SHIFT)
        if pixels and areas.any():  # no LABEL_TOLERANCE offered: it would merge that colour into its nearest class
            largest = int(np.argmax(np.where(areas, counts, -1)))
            remedy = f"{_rgb_of(values[largest])} covers {counts[largest] / pixels:.0%} of the pixels: {NOT_COMPRESSION}; {remedy}"
        else:
            remedy = tolerance_remedy(_unpack(values), counts, self._references, self.tolerance, "class colours", "colour",
                                      remedy=remedy,
                                      rest="UNKNOWN_LABELS_TO_IGNORE=True (or --unknown-to-ignore) the rest as unlabelled")
        raise EosegError(f"{source}: {int(counts.sum())} pixels have colours outside the palette ({described}{more}); {remedy}")

    def check_whole_image(self, unknown: dict[int, int], near: dict, source: str, unknown_to_ignore: bool) -> None:
        """Once a whole image is read by windows (:meth:`read_colours`): refuse its colours no class has (``unknown``,
        unless ``unknown_to_ignore``), then those LABEL_TOLERANCE reads that are colours of their own (``near``)."""
        if unknown and not unknown_to_ignore:
            self.refuse_unknown(unknown, source, near.get("", 0))
        self.refuse_other_colours(near, source)

    def refuse_other_colours(self, near: dict, source: str) -> None:
        """Refuse ``source`` where a colour LABEL_TOLERANCE reads as a class (``near``, of :meth:`read_colours`) lies
        more than COMPRESSION_SHIFT levels from that class's colour and covers over AREA_SHARE of the pixels read:
        compression shifts flat colours by a few levels and blurs edges into slivers, so that is a colour of its own
        (a class PALETTE lacks), which the tolerance would merge into its nearest class."""
        total = near.get("", 0)
        colours = {colour: pixels for colour, pixels in near.items() if colour != "" and pixels > AREA_SHARE * total}
        if not colours:
            return
        points = _unpack(np.array(list(colours)))
        distance = _distances(points, self._references)
        nearest = distance.argmin(axis=1)
        far = distance[np.arange(len(points)), nearest] > COMPRESSION_SHIFT
        if not far.any():
            return
        index = int(np.argmax(np.where(far, list(colours.values()), -1)))
        target = int(self._targets[nearest[index]])
        read_as = "IGNORE_COLOR" if target == self.ignore_label else f"class {target}'s colour"
        raise EosegError(
            f"{source}: the colour {rgb_text(points[index])} covers {list(colours.values())[index] / total:.0%} of the "
            f"pixels, and LABEL_TOLERANCE={self.tolerance} reads it as {read_as} "
            f"{rgb_text(self._references[nearest[index]])}, {int(distance[index, nearest[index]])} levels away: "
            f"{NOT_COMPRESSION}; give its class a PALETTE colour, or, to leave it unlabelled, set LABEL_TOLERANCE below "
            "that distance and UNKNOWN_LABELS_TO_IGNORE=True")

    def _refuse_class_ids_in_three_bands(self, rgb: np.ndarray, unknown: np.ndarray, empty: np.ndarray | None,
                                         source: str) -> None:
        """Refuse an (H, W, 3) image whose pixels (but ``empty`` ones) are all grey and whose ``unknown`` colours
        (packed, no colour of PALETTE or IGNORE_COLOR) are all exact levels 1..number of classes: class ids copied
        into three bands, however few pixels the ids other than 0 cover (a 0/1 building mask). As colours they are
        unknown, and LABEL_TOLERANCE would read them as black (class 0 or IGNORE_COLOR), every object lost. JPEG
        blur scatters levels beyond the class ids, so compressed grey ground truth is not taken for this."""
        colours = np.unique(unknown)
        levels = colours & 255
        if not ((colours == levels * 0x010101).all() and 1 <= levels.min() and levels.max() <= self.num_classes):
            return
        if not all_grey(rgb, empty):
            return
        present = np.unique(rgb[..., 0] if empty is None else rgb[..., 0][~empty])
        raise EosegError(f"{source}: every pixel is grey, of levels {', '.join(map(str, present.tolist()))}: class ids "
                         f"saved in all three bands, not class colours; take its first band as the label map "
                         f"(gdal_translate -b 1 {source} ids.tif) and point LABEL_PATTERN (GT_ERODED_PATTERN for eroded "
                         f"ground truth) at it, with LABEL_VALUES for what the levels mean")

    def to_color(self, labels: np.ndarray) -> np.ndarray:
        """Convert (H, W) class ids into an (H, W, 3) uint8 colour image.

        The ignore label (and any id without a class) is drawn in the ignore colour,
        black if there is none.
        """
        table = np.zeros((256, 3), dtype=np.uint8)
        if self.ignore_color is not None:
            table[:] = self.ignore_color
        table[: self.num_classes] = self.colors
        return table[labels]

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table for a single-band label GeoTIFF."""
        cmap = {i: (*map(int, c), 255) for i, c in enumerate(self.colors)}
        ignore = self.ignore_color or (0, 0, 0)
        cmap[self.ignore_label] = (*ignore, 255)
        return cmap


def all_grey(rgb: np.ndarray, empty: np.ndarray | None = None) -> bool:
    """Whether every pixel of an (H, W, 3) image but ``empty`` ones is grey (R = G = B)."""
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    return bool((grey if empty is None else grey | empty).all())


def _rgb(colour, name: str) -> tuple[int, int, int]:
    """``colour`` as (R, G, B), refused unless it is three integers in 0..255."""
    values = list(colour) if isinstance(colour, (list, tuple, np.ndarray)) else []
    if len(values) != 3 or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255 for c in values):
        raise EosegError(f"{name}: a colour is an [R, G, B] list of integers in 0..255, got {colour!r}")
    return tuple(int(c) for c in values)


def nearest_reference(points: np.ndarray, references: np.ndarray, tolerance: int) -> np.ndarray:
    """For each row of ``points`` (N, D), the index of the row of ``references`` (M, D) within
    ``tolerance`` of it in every component, or -1 where there is none. ``check_tolerance`` makes
    sure that there is never more than one."""
    distance = _distances(points, references)
    nearest = distance.argmin(axis=1)
    return np.where(distance[np.arange(len(points)), nearest] <= tolerance, nearest, -1)


def tolerance_remedy(points: np.ndarray, counts, references: np.ndarray, tolerance: int, what: str, noun: str,
                     remedy: str, rest: str) -> str:
    """What to say about ``points`` (with their pixel ``counts``) near none of ``references``: the
    LABEL_TOLERANCE that would place them all, or the most there can be and how much it places; then ``remedy``."""
    most = largest_tolerance(references)
    if not len(points) or most is None:  # with one value to be near, nothing tells blur from another value
        return remedy
    distance = _distances(points, references).min(axis=1)
    needed = int(distance.max())
    blurred = f"if they are {what} blurred by compression or resampling, LABEL_TOLERANCE="
    if tolerance < needed <= most:
        return f"{blurred}{needed} (at most {most}) reads each as the {noun} it is nearest to (now {tolerance}); else {remedy}"
    placed, total = int(np.asarray(counts)[distance <= most].sum()), int(np.sum(counts))
    if tolerance < most and placed:
        return (f"{blurred}{most} (the most) reads {placed} of these {total} px as the {noun} each is nearest to, and "
                f"{rest}; else {remedy}")
    return remedy


def largest_tolerance(references: np.ndarray) -> int | None:
    """The largest tolerance at which no value can lie near two rows of ``references`` (None: any, for one row)."""
    if len(references) < 2:
        return None
    distance = _distances(references, references)
    np.fill_diagonal(distance, np.iinfo(np.int64).max)
    return int((distance.min() - 1) // 2)


def check_tolerance(tolerance, references: np.ndarray, what: str, describe) -> int:
    """LABEL_TOLERANCE, refused unless it is a whole number >= 0 that keeps every value near one
    of ``references`` at most (``what`` and ``describe`` name them in the message)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise EosegError(f"LABEL_TOLERANCE is a whole number of levels >= 0, got {tolerance!r}")
    most = largest_tolerance(references)
    if most is not None and tolerance > most:
        distance = _distances(references, references)
        np.fill_diagonal(distance, np.iinfo(np.int64).max)
        first, second = np.unravel_index(distance.argmin(), distance.shape)
        raise EosegError(
            f"LABEL_TOLERANCE {tolerance}: the {what} {describe(references[first])} and {describe(references[second])} "
            f"differ by {distance[first, second]} levels, so a value could lie within {tolerance} of both; "
            f"use at most {most}")
    return int(tolerance)


def check_value_tolerance(tolerance, values) -> tuple[np.ndarray, int]:
    """The whole numbers among LABEL_VALUES's raw ``values`` as an (N, 1) array, and LABEL_TOLERANCE
    checked against them (texts, vector attribute values, are matched exactly)."""
    numbers = np.array(sorted(v for v in values if isinstance(v, int)), dtype=np.int64).reshape(-1, 1)
    return numbers, check_tolerance(tolerance, numbers, "LABEL_VALUES values", lambda value: str(int(value[0])))


def _distances(points: np.ndarray, references: np.ndarray) -> np.ndarray:
    """(N, M) largest component difference between each row of ``points`` and each of ``references``."""
    points, references = np.asarray(points, dtype=np.int64), np.asarray(references, dtype=np.int64)
    return np.abs(points[:, None, :] - references[None, :, :]).max(axis=2)


def _unpack(packed: np.ndarray) -> np.ndarray:
    """(N,) packed 0xRRGGBB values -> (N, 3) colours."""
    packed = np.asarray(packed, dtype=np.int64)
    return np.stack([packed >> 16, (packed >> 8) & 255, packed & 255], axis=1)


def rgb_text(colour) -> str:
    return f"({', '.join(str(int(c)) for c in colour)})"


def _rgb_of(packed: int) -> str:
    return rgb_text(_unpack([packed])[0])
