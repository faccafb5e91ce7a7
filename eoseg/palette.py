"""Colour-coded ground truth <-> numeric label maps.

One palette (class colours) and one ignore colour define both directions. The
conversion is a single table lookup over packed 24-bit colours, not a loop per class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from eoseg.errors import EosegError


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack an (..., 3) uint8 colour array into (...) uint32 values 0xRRGGBB."""
    rgb = rgb.astype(np.uint32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class Palette:
    """Class colours plus the colour of undefined pixels (mapped to ``ignore_label``).

    ``colors[i]`` is the RGB colour of class ``i``. ``ignore_color`` (or None) is the
    colour of pixels that carry no class, such as the black boundaries of the ISPRS
    eroded ground truth.
    """

    def __init__(self, colors, ignore_color=(0, 0, 0), ignore_label: int = 255):
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

    @property
    def num_classes(self) -> int:
        return len(self.colors)

    def classes_coloured(self, table: Sequence[tuple[int, int, int] | None], values) -> dict[int, int | None]:
        """For each of ``values`` of a paletted raster, the class whose colour its colour table
        ``table`` (RGB by value) gives it; None for a colour no class has."""
        owners = {tuple(map(int, colour)): class_id for class_id, colour in enumerate(self.colors)}
        return {value: owners.get(table[value]) if 0 <= value < len(table) else None for value in values}

    def to_labels(self, rgb: np.ndarray, unknown_to_ignore: bool = False, source: str = "image") -> np.ndarray:
        """Convert an (H, W, 3) colour image into (H, W) uint8 class ids.

        A colour that is neither a class colour nor the ignore colour is an error that
        names ``source``, the colour and its pixel count, unless ``unknown_to_ignore``
        maps such pixels to the ignore label.
        """
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
        if unknown.any() and not unknown_to_ignore:
            values, counts = np.unique(packed[unknown], return_counts=True)
            worst = np.argsort(counts)[::-1][:3]
            described = ", ".join(
                f"{_rgb_of(values[i])} x {counts[i]} px" for i in worst
            )
            more = f" and {len(values) - 3} more colours" if len(values) > 3 else ""
            raise EosegError(
                f"{source}: {int(unknown.sum())} pixels have colours outside the palette "
                f"({described}{more}); fix PALETTE in the config or pass --unknown-to-ignore"
            )
        return labels

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


def _rgb(colour, name: str) -> tuple[int, int, int]:
    """``colour`` as (R, G, B), refused unless it is three integers in 0..255."""
    values = list(colour) if isinstance(colour, (list, tuple, np.ndarray)) else []
    if len(values) != 3 or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255 for c in values):
        raise EosegError(f"{name}: a colour is an [R, G, B] list of integers in 0..255, got {colour!r}")
    return tuple(int(c) for c in values)


def _rgb_of(packed: int) -> str:
    packed = int(packed)
    return f"({packed >> 16}, {(packed >> 8) & 255}, {packed & 255})"
