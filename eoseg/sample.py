"""Synthetic urban tiles in the ISPRS Vaihingen layout: the project's bundled sample.

The ISPRS data may not be redistributed, so ``make_sample.py`` draws small procedural
scenes instead: streets with sidewalks, parking lots and plazas, houses with pitched or
flat roofs and cast shadows, lawns, clusters of trees, cars and a little clutter. The
image is IRRG false colour (near-infrared, red, green) like Vaihingen, the ground truth
uses the six ISPRS classes, a DSM gives terrain plus object heights and an nDSM the
heights of buildings, trees and the rest above the terrain.

The scenes are built so that colour alone does not separate the classes: grey roofs
look like pavement, bare soil like tiled roofs, lawns like trees. A model has to use
texture (smooth lawn, lumpy crowns), shape and context (cars lie on roads, shadows lie
beside buildings) as it must on the real data.

Scale: the GeoTIFFs carry Vaihingen's 9 cm pixel, but objects are drawn at about
``SCENE_M_PER_PX`` = 0.2 m per pixel (a car is 24 x 11 px instead of 50 x 22 px) so that
a 512-pixel tile holds a whole block with several streets and houses, and a 128-pixel
training patch still shows whole objects.

Everything is drawn with vectorised numpy over small windows, deterministically from a
``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import from_origin

from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.io import RasterInfo, write_raster

# Class ids, in the order of the ISPRS CLASS_NAMES of config.py.
IMPERVIOUS, BUILDING, LOW_VEG, TREE, CAR, CLUTTER = range(6)
NUM_CLASSES = 6

SCENE_M_PER_PX = 0.2  # size of a pixel for the drawn objects (see the module docstring)
PIXEL_SIZE_M = 0.09  # pixel size written into the GeoTIFFs, as in ISPRS Vaihingen
CRS_EPSG = 32632  # WGS 84 / UTM zone 32N, the CRS of Vaihingen
ORIGIN_X, ORIGIN_Y = 496000.0, 5420000.0  # upper-left corner of the first tile, near Vaihingen
TILE_GAP_M = 10.0  # space between neighbouring tiles so that they never overlap

# Patterns of the collections written for every tile, in writing order.
COLLECTIONS = ("IMAGE_PATTERN", "GT_COLOR_PATTERN", "GT_ERODED_PATTERN", "DSM_PATTERN", "NDSM_PATTERN")

MIN_SIZE = 8  # pixels per side of the smallest scene (the shading needs a few pixels)
CAR_LENGTH, CAR_WIDTH = 24.0, 11.0  # pixels: a 4.8 m x 2.2 m car at SCENE_M_PER_PX

# Surface colours as (NIR, red, green) reflectance on a 0..255 scale. Vegetation is
# bright in NIR, man-made surfaces are grey-ish; several are close on purpose.
ASPHALT = (100, 98, 100)
PAVEMENT = (150, 146, 142)
PLAZA = (168, 158, 148)
MARKING = (220, 220, 214)
LAWN = (172, 100, 108)
TREE_LEAVES = (188, 74, 90)
HEDGE = (160, 80, 92)
PITCHED_ROOFS = [(150, 140, 96), (116, 98, 76), (140, 138, 134), (80, 78, 82), (62, 62, 68)]
FLAT_ROOFS = [(128, 126, 124), (205, 200, 195), (72, 72, 76), (150, 146, 138)]
SOIL = (142, 128, 96)  # bare soil: close to the tiled roofs
WATER = (28, 52, 84)
GRAVEL = (196, 190, 182)  # construction sites: close to the bright flat roofs
MATERIALS = [(200, 120, 60), (90, 110, 150), (170, 60, 60), (230, 225, 215), (120, 120, 110)]
CAR_COLOURS = [(215, 215, 212), (165, 165, 168), (45, 45, 50), (95, 95, 100), (150, 178, 44), (48, 40, 78)]
WINDSCREEN = (40, 44, 52)


# ---------------------------------------------------------------- small helpers
def _rgb(colour, rng: np.random.Generator | None = None, jitter: float = 0.0) -> np.ndarray:
    """A colour as a (3, 1, 1) float32 array, optionally scaled by a random factor per object."""
    value = np.asarray(colour, dtype=np.float32)
    if rng is not None and jitter:
        value = value * rng.uniform(1 - jitter, 1 + jitter, 3).astype(np.float32)
    return value[:, None, None]


def _noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth random field with blobs about ``cell`` pixels wide, zero mean, std ~0.7.

    Random values on a coarse grid, interpolated with a smoothstep so that the grid's
    straight seams do not show; a random phase keeps the grid off the pixel grid.
    """
    h, w = shape
    grid = rng.standard_normal((int(h / cell) + 3, int(w / cell) + 3)).astype(np.float32)

    def axis(n: int) -> tuple[np.ndarray, np.ndarray]:
        t = (np.arange(n, dtype=np.float32) + rng.uniform(0, cell)) / cell
        i = t.astype(np.intp)
        f = t - i
        return i, f * f * (3 - 2 * f)

    iy, fy = axis(h)
    ix, fx = axis(w)
    fy = fy[:, None]
    rows0, rows1 = grid[iy], grid[iy + 1]
    top = rows0[:, ix] * (1 - fx) + rows0[:, ix + 1] * fx
    bottom = rows1[:, ix] * (1 - fx) + rows1[:, ix + 1] * fx
    return top * (1 - fy) + bottom * fy


def _blur(a: np.ndarray) -> np.ndarray:
    """3x3 binomial blur over the last two axes (edges repeated): the optics' softness."""
    pad = [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(a, pad, mode="edge")
    v = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]
    return (v[..., :-2] + 2 * v[..., 1:-1] + v[..., 2:]) / 16


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = a[y + dy, x + dx]``, zero where that lies outside ``a``."""
    h, w = a.shape
    out = np.zeros_like(a)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = a[
        max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)
    ]
    return out


def _cast_shadows(height: np.ndarray, to_sun: tuple[float, float], elevation: float) -> np.ndarray:
    """True where something taller on the way towards the sun hides it.

    ``height`` is in metres above ground, ``to_sun`` the (dy, dx) unit vector towards the
    sun in pixels. Walking s pixels towards the sun, the sun ray rises by s * rise metres;
    a pixel is shaded if the surface there is higher than the ray. One shifted comparison
    of the whole image per distinct step.
    """
    rise = math.tan(elevation) * SCENE_M_PER_PX
    longest = float(height.max()) / rise
    steps = np.arange(1.0, longest + 1.0, 1.0)
    offsets = dict.fromkeys((round(s * to_sun[0]), round(s * to_sun[1])) for s in steps)
    shadow = np.zeros(height.shape, dtype=bool)
    for dy, dx in offsets:
        if dy == dx == 0:
            continue
        shadow |= _shift(height, dy, dx) > height + math.hypot(dy, dx) * rise
    return shadow


def _to_pixel(cy: float, cx: float, angle: float, u: float, v: float) -> tuple[float, float]:
    """(y, x) of the point (u, v) of the frame centred at (cy, cx) and turned by ``angle``.

    The inverse of the coordinates of :meth:`_Scene.frame`.
    """
    c, s = math.cos(angle), math.sin(angle)
    return cy + u * s + v * c, cx + u * c - v * s


@dataclass(frozen=True)
class _Road:
    """A straight road through the tile: centre line point, direction, widths in pixels."""

    cy: float
    cx: float
    angle: float  # direction of the road, radians from the +x axis towards +y
    width: float  # carriageway
    sidewalk: float  # on each side

    @property
    def half(self) -> float:
        """Half the width including both sidewalks."""
        return self.width / 2 + self.sidewalk

    @property
    def horizontal(self) -> bool:
        return self.angle == 0.0

    @property
    def vertical(self) -> bool:
        return self.angle == math.pi / 2

    def point(self, along: float, across: float) -> tuple[float, float]:
        """(y, x) of the point ``along`` pixels down the road and ``across`` to its side."""
        return _to_pixel(self.cy, self.cx, self.angle, along, across)


# ---------------------------------------------------------------- the scene
class _Scene:
    """A tile under construction: label, surface colour and height of every pixel.

    Objects are painted with a height test (a pixel takes the new object where it is at
    least as high as what is there), so the label is always the surface seen from above:
    a crown over a car or a roof edge is tree, as in the ISPRS ground truth.
    """

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator):
        self.shape = shape
        self.rng = rng
        self.area = shape[0] * shape[1]
        # shared texture fields, sliced by every object that needs texture
        self.fine = _noise(rng, shape, 2.5)
        self.medium = _noise(rng, shape, 9.0)
        self.coarse = _noise(rng, shape, 48.0)
        self.label = np.full(shape, LOW_VEG, dtype=np.uint8)
        self.height = np.zeros(shape, dtype=np.float32)  # metres above the terrain
        # lawn everywhere to start with: mild blotches, drier (less NIR) patches
        lawn = _rgb(LAWN) * (1 + 0.06 * self.coarse + 0.05 * self.medium + 0.03 * self.fine)
        lawn[0] *= 1 + 0.08 * _noise(rng, shape, 30.0)
        self.albedo = lawn.astype(np.float32)
        self.blocked = np.zeros(shape, dtype=bool)  # where no building may stand
        self.asphalt = np.zeros(shape, dtype=bool)  # carriageways: cars drive here
        self.roads: list[_Road] = []
        self.buildings: list[tuple[int, int, int, int]] = []  # bounding boxes y0, y1, x0, x1

    # ------------------------------------------------------------ drawing primitives
    def frame(self, cy: float, cx: float, angle: float, radius: float):
        """Window around (cy, cx) clipped to the tile, and coordinates in a rotated frame.

        Returns ``(window, u, v)``: ``u`` runs along ``angle``, ``v`` across it, both in
        pixels from the centre; None if the window misses the tile.
        """
        h, w = self.shape
        y0, y1 = max(math.floor(cy - radius), 0), min(math.ceil(cy + radius) + 1, h)
        x0, x1 = max(math.floor(cx - radius), 0), min(math.ceil(cx + radius) + 1, w)
        if y0 >= y1 or x0 >= x1:
            return None
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        return (slice(y0, y1), slice(x0, x1)), xs * c + ys * s, ys * c - xs * s

    def paint(self, window, mask: np.ndarray, label: int, albedo: np.ndarray, height=0.0) -> None:
        """Draw an object over ``mask`` of ``window`` where it is not lower than the surface."""
        height = np.broadcast_to(np.asarray(height, dtype=np.float32), mask.shape)
        mask = mask & (height >= self.height[window])
        self.label[window][mask] = label
        self.height[window][mask] = height[mask]
        albedo = np.broadcast_to(albedo, (3, *mask.shape))
        self.albedo[(slice(None), *window)][:, mask] = albedo[:, mask]

    def inside(self, y: float, x: float) -> bool:
        return 0 <= y < self.shape[0] and 0 <= x < self.shape[1]

    def random_pixel(self, label: int, tries: int = 30) -> tuple[int, int] | None:
        """A random pixel of ``label`` at ground level, or None if none was hit."""
        h, w = self.shape
        for _ in range(tries):
            y, x = int(self.rng.integers(h)), int(self.rng.integers(w))
            if self.label[y, x] == label and self.height[y, x] == 0:
                return y, x
        return None

    def share(self, label: int) -> float:
        return float(np.count_nonzero(self.label == label)) / self.area

    # ------------------------------------------------------------ roads
    def add_roads(self) -> None:
        """A loose grid of horizontal and vertical streets, sometimes a diagonal one."""
        rng, (h, w) = self.rng, self.shape
        for angle, length in ((0.0, h), (math.pi / 2, w)):
            position = rng.uniform(-120, 60)
            while True:
                position += rng.uniform(180, 310)
                if position > length + 20:
                    break
                self.roads.append(self.straight_road(angle, position))
        if not self.roads:  # a small tile between the streets: every scene has one road
            angle = rng.choice([0.0, math.pi / 2])
            self.roads.append(self.straight_road(angle, rng.uniform(0, h if angle == 0.0 else w)))
        if rng.random() < 0.3:
            angle = rng.uniform(0.35, 1.2) * rng.choice([-1, 1])
            self.roads.append(
                _Road(rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, angle, rng.uniform(24, 34), rng.uniform(4, 6))
            )
        # roads cross the whole tile: every frame covers all of it (centres lie near the tile)
        frames = [self.frame(r.cy, r.cx, r.angle, 2 * math.hypot(h, w)) for r in self.roads]
        # sidewalks of every road first, so that carriageways win at crossings
        for road, (window, u, v) in zip(self.roads, frames):
            walk = np.abs(v) <= road.half
            paving = _rgb(PAVEMENT, rng, 0.05) * (1 + 0.05 * self.fine[window] + 0.03 * self.medium[window])
            self.paint(window, walk, IMPERVIOUS, paving)
            self.blocked[window] |= walk
        carriageways = []
        for road, (window, u, v) in zip(self.roads, frames):
            lane = np.abs(v) <= road.width / 2
            tar = _rgb(ASPHALT, rng, 0.08) * (1 + 0.06 * self.coarse[window] + 0.04 * self.medium[window] + 0.03 * self.fine[window])
            self.paint(window, lane, IMPERVIOUS, tar)
            self.asphalt[window] |= lane
            carriageways.append(lane)
        # dashed centre lines on wide roads, interrupted where another road crosses
        for i, (road, (window, u, v)) in enumerate(zip(self.roads, frames)):
            if road.width < 34:
                continue
            dash = (np.abs(v) < 0.9) & (np.mod(u, 22) < 11)
            for j, other in enumerate(carriageways):
                if j != i:
                    dash &= ~other
            self.paint(window, dash, IMPERVIOUS, _rgb(MARKING))

    def straight_road(self, angle: float, position: float) -> _Road:
        """A horizontal (angle 0) or vertical road at ``position`` px; one in three is a main road."""
        rng, (h, w) = self.rng, self.shape
        width = rng.uniform(34, 46) if rng.random() < 0.35 else rng.uniform(22, 30)
        cy, cx = (position, w / 2) if angle == 0.0 else (h / 2, position)
        return _Road(cy, cx, float(angle), width, rng.uniform(3, 6))

    def add_lots(self) -> None:
        """Parking lots (with stalls and parked cars) and paved plazas beside the roads."""
        rng, (h, w) = self.rng, self.shape
        reach = math.hypot(h, w) / 2
        for _ in range(rng.poisson(2.2 * self.area / 512**2)):
            road = self.roads[rng.integers(len(self.roads))]
            length, depth = rng.uniform(70, 150), rng.uniform(52, 84)
            side = rng.choice([-1, 1])
            cy, cx = road.point(rng.uniform(-reach, reach), side * (road.half + depth / 2 - 1))
            if not self.inside(cy, cx):
                continue
            window, u, v = self.frame(cy, cx, road.angle, math.hypot(length, depth) / 2 + 1)
            lot = (np.abs(u) <= length / 2) & (np.abs(v) <= depth / 2)
            self.blocked[window] |= lot
            if rng.random() < 0.4:
                tiles = (np.mod(u, 8) < 1) | (np.mod(v, 8) < 1)  # joints of the paving slabs
                paving = _rgb(PLAZA, rng, 0.06) * (1 + 0.04 * self.fine[window]) * np.where(tiles, 0.93, 1.0)
                self.paint(window, lot, IMPERVIOUS, paving)
                continue
            tar = _rgb(ASPHALT, rng, 0.08) * (0.92 + 0.05 * self.medium[window] + 0.03 * self.fine[window])
            self.paint(window, lot, IMPERVIOUS, tar)
            # a row of stalls along each long side, an aisle between them
            for row in (-(depth / 2 - 13), depth / 2 - 13):
                in_row = lot & (np.abs(v - row) < 13)
                lines = in_row & (np.mod(u + length / 2, 14) < 1)
                self.paint(window, lines, IMPERVIOUS, _rgb(MARKING) * 0.9)
                for stall in np.arange(-length / 2 + 7, length / 2 - 7, 14):
                    if rng.random() < 0.55:
                        self.add_car(*_to_pixel(cy, cx, road.angle, stall, row), road.angle + math.pi / 2)

    # ------------------------------------------------------------ buildings
    def add_buildings(self) -> None:
        """Rows of houses facing the straight streets, then more buildings in the gaps.

        Buildings are rectangles or L-shapes kept off roads and lots; they stop once
        they cover about 30 % of the tile (trees hide some of that later).
        """
        rng, (h, w) = self.rng, self.shape
        target = rng.uniform(0.27, 0.34) * self.area
        built = 0
        reach = math.hypot(h, w) / 2
        for road in self.roads:
            if not (road.horizontal or road.vertical):
                continue
            for side in (-1, 1):
                along = -reach + rng.uniform(0, 40)
                while along < reach and built < target:
                    length, depth = rng.uniform(40, 100), rng.uniform(40, 90)
                    cy, cx = road.point(along + length / 2, side * (road.half + rng.uniform(4, 14) + depth / 2))
                    bh, bw = (depth, length) if road.horizontal else (length, depth)
                    built += self.try_building(int(cy - bh / 2), int(cx - bw / 2), bh, bw, margin=2)
                    along += length + rng.uniform(4, 30)
        for _ in range(1000):
            if built >= target:
                break
            kind = rng.random()
            if kind < 0.15:  # an apartment block
                long, short = rng.uniform(120, 180), rng.uniform(45, 70)
                bh, bw = (long, short) if rng.random() < 0.5 else (short, long)
            elif kind < 0.4:  # a garage or shed, which also fills the gaps between houses
                bh, bw = rng.uniform(18, 34), rng.uniform(18, 34)
            else:  # a house
                bh, bw = rng.uniform(38, 110), rng.uniform(38, 110)
            y0, x0 = int(rng.uniform(-bh / 2, h - bh / 2)), int(rng.uniform(-bw / 2, w - bw / 2))
            built += self.try_building(y0, x0, bh, bw, margin=int(rng.uniform(2, 8)))

    def try_building(self, y0: int, x0: int, bh: float, bw: float, margin: int) -> int:
        """Draw a building of bh x bw px at (y0, x0) if nothing blocked lies within ``margin``.

        Returns the number of pixels drawn (0 if the place was taken).
        """
        y1, x1 = y0 + int(bh), x0 + int(bw)
        near = self.blocked[self.clip(y0 - margin, y1 + margin, x0 - margin, x1 + margin)]
        if near.size == 0 or near.any():
            return 0
        return self.draw_building(y0, y1, x0, x1)

    def draw_building(self, y0: int, y1: int, x0: int, x1: int) -> int:
        """Draw a building in the box [y0, y1) x [x0, x1); return its pixel count in the tile.

        The roof is modelled as a height field (gable, hip or flat per wing), so that the
        shading in :meth:`render` lights one slope and darkens the other around the ridge.
        """
        rng = self.rng
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        frame = self.frame(cy, cx, 0.0, max(y1 - y0, x1 - x0) / 2 + 1)
        if frame is None:
            return 0
        window, u, v = frame  # u along x, v along y
        bh, bw = y1 - y0, x1 - x0
        wings = [(0.0, 0.0, bw / 2, bh / 2)]  # centre (du, dv) and half sizes of each wing
        if rng.random() < 0.35 and min(bh, bw) > 50:  # an L: two wings sharing a corner
            fy, fx = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
            sy, sx = rng.choice([-1, 1]), rng.choice([-1, 1])
            wings = [
                (0.0, sy * (bh / 2 - fy * bh / 2), bw / 2, fy * bh / 2),  # full-width wing at one side
                (sx * (bw / 2 - fx * bw / 2), 0.0, fx * bw / 2, bh / 2),  # full-height wing at one end
            ]
        kind = rng.choice(["gable", "hip", "flat"], p=[0.5, 0.2, 0.3])
        eave = rng.uniform(4.5, 10.0)
        max_rise = min(5.0, 15.0 - eave)
        roof = np.full(u.shape, -np.inf, dtype=np.float32)
        from_ridge = np.zeros(u.shape, dtype=np.float32)  # across the slope, for the rows of tiles
        for du, dv, half_u, half_v in wings:
            au, av = np.abs(u - du), np.abs(v - dv)
            inside = (au <= half_u) & (av <= half_v)
            # the ridge runs along the wing's long side; the slope falls across it
            across, half_across, along, half_along = (
                (av, half_v, au, half_u) if half_u >= half_v else (au, half_u, av, half_v)
            )
            if kind == "flat":
                to_eave = np.zeros_like(u)
            elif kind == "gable":
                to_eave = half_across - across
            else:
                to_eave = np.minimum(half_across - across, half_along - along)
            slope = min(math.tan(math.radians(rng.uniform(30, 45))) * SCENE_M_PER_PX, max_rise / max(half_across, 1.0))
            wing = np.where(inside, eave + slope * to_eave, -np.inf)
            from_ridge = np.where(wing > roof, across, from_ridge)
            roof = np.maximum(roof, wing)
        footprint = roof > 0
        if not footprint.any():  # only the margin of the box reached into the tile
            return 0
        colours = FLAT_ROOFS if kind == "flat" else PITCHED_ROOFS
        colour = _rgb(colours[rng.integers(len(colours))], rng, 0.06)
        texture = 1 + 0.05 * self.medium[window] + 0.04 * self.fine[window]
        if kind != "flat":
            texture = texture * np.where(np.mod(from_ridge, 3.0) < 1.0, 0.92, 1.0)  # rows of tiles
        height = np.where(footprint, roof, 0).astype(np.float32)
        self.paint(window, footprint, BUILDING, colour * texture, height)
        if kind == "flat":
            self.add_roof_boxes(window, u, v, footprint, eave)
        self.blocked[window] |= footprint
        self.buildings.append((y0, y1, x0, x1))
        return int(np.count_nonzero(footprint))

    def add_roof_boxes(self, window, u, v, footprint, eave: float) -> None:
        """Vents and air conditioners: small raised boxes on flat roofs, casting small shadows."""
        rng = self.rng
        ys, xs = np.nonzero(footprint)
        for _ in range(rng.integers(0, 4)):
            i = rng.integers(len(ys))
            su, sv, size = u[0, xs[i]], v[ys[i], 0], rng.uniform(2, 5)
            box = footprint & (np.abs(u - su) <= size) & (np.abs(v - sv) <= size)
            shade = rng.uniform(0.6, 1.4)
            self.paint(window, box, BUILDING, _rgb(FLAT_ROOFS[0]) * shade, eave + rng.uniform(0.8, 2.0))

    def add_yards(self) -> None:
        """Paved terraces beside some buildings and driveways from some straight to the street."""
        rng = self.rng
        straight = [r for r in self.roads if r.horizontal or r.vertical]
        for y0, y1, x0, x1 in self.buildings:
            if rng.random() < 0.6:  # a terrace along one side
                depth = int(rng.uniform(8, 18))
                side = rng.integers(4)
                box = [(y0 - depth, y0, x0, x1), (y1, y1 + depth, x0, x1), (y0, y1, x0 - depth, x0), (y0, y1, x1, x1 + depth)]
                self.pave(*box[side], PLAZA)
            if rng.random() < 0.4:
                continue
            best = None
            for road in straight:
                # the gap between the box and the road's sidewalk, across the road
                centre = road.cy if road.horizontal else road.cx
                near, far = (y0, y1) if road.horizontal else (x0, x1)
                if centre > far:
                    gap, span = centre - road.half - far, (far, int(centre - road.half) + 1)
                elif centre < near:
                    gap, span = near - centre - road.half, (int(centre + road.half) - 1, near)
                else:
                    continue
                if 0 < gap < 70 and (best is None or gap < best[0]):
                    best = (gap, span, road.horizontal)
            if best is None:
                continue
            _, (a0, a1), horizontal = best
            b0, b1 = (x0, x1) if horizontal else (y0, y1)
            width = int(rng.uniform(10, 16))
            if b1 - b0 <= width:
                continue
            start = int(rng.integers(b0, b1 - width))
            box = (a0, a1, start, start + width) if horizontal else (start, start + width, a0, a1)
            if not (self.label[self.clip(*box)] == BUILDING).any():  # no other house in the way
                self.pave(*box, PAVEMENT)

    def clip(self, y0: int, y1: int, x0: int, x1: int) -> tuple[slice, slice]:
        """The box [y0, y1) x [x0, x1) as slices clipped to the tile (possibly empty)."""
        h, w = self.shape
        return slice(min(max(y0, 0), h), min(max(y1, 0), h)), slice(min(max(x0, 0), w), min(max(x1, 0), w))

    def pave(self, y0: int, y1: int, x0: int, x1: int, colour) -> None:
        """Pave the lawn in a box (whatever else is there stays)."""
        window = self.clip(y0, y1, x0, x1)
        lawn = (self.label[window] == LOW_VEG) & (self.height[window] == 0)
        paving = _rgb(colour, self.rng, 0.08) * (1 + 0.05 * self.fine[window])
        self.paint(window, lawn, IMPERVIOUS, paving)

    def add_hedges(self) -> None:
        """Garden hedges: low vegetation that stands up and looks lumpy like trees."""
        rng = self.rng
        for _ in range(rng.poisson(3 * self.area / 512**2)):
            spot = self.random_pixel(LOW_VEG)
            if spot is None:
                continue
            angle = rng.choice([0.0, math.pi / 2])
            length, half_width = rng.uniform(25, 80), rng.uniform(2.5, 4)
            window, u, v = self.frame(spot[0], spot[1], angle, length / 2 + half_width)
            hedge = (np.abs(u) <= length / 2) & (np.abs(v) <= half_width + self.fine[window])
            hedge &= (self.label[window] == LOW_VEG) & (self.height[window] == 0)
            leaves = _rgb(HEDGE, rng, 0.06) * (1 + 0.08 * self.fine[window])
            self.paint(window, hedge, LOW_VEG, leaves, 1.5 + 0.4 * self.fine[window])

    # ------------------------------------------------------------ clutter
    def add_clutter(self) -> None:
        """Bare soil, pools and construction sites (with piles of materials) on lawns."""
        rng = self.rng
        target = rng.uniform(0.012, 0.028)
        for _ in range(40):
            if self.share(CLUTTER) >= target:
                break
            spot = self.random_pixel(LOW_VEG)
            if spot is None:
                continue
            kind = rng.choice(["soil", "water", "site"], p=[0.4, 0.2, 0.4])
            ry, rx = rng.uniform(8, 26, 2)
            window, u, v = self.frame(spot[0], spot[1], 0.0, 1.6 * max(ry, rx))
            ground = (self.label[window] == LOW_VEG) & (self.height[window] == 0)
            if kind == "water":  # a rounded rectangular pool
                corner = np.hypot(np.maximum(np.abs(u) - rx + 4, 0), np.maximum(np.abs(v) - ry + 4, 0))
                patch = ground & (np.abs(u) <= rx) & (np.abs(v) <= ry) & (corner <= 4)
                surface = _rgb(WATER, rng, 0.1) * (1 + 0.04 * self.medium[window])
            else:  # an irregular patch
                r2 = (u / rx) ** 2 + (v / ry) ** 2
                patch = ground & (r2 < 1 + 0.6 * self.medium[window])
                colour = SOIL if kind == "soil" else GRAVEL
                surface = _rgb(colour, rng, 0.08) * (1 + 0.08 * self.medium[window] + 0.06 * self.fine[window])
            self.paint(window, patch, CLUTTER, surface)
            if kind == "site":
                self.add_materials(window, u, v, patch)

    def add_materials(self, window, u, v, site) -> None:
        """Stacks of building material on a construction site: raised clutter."""
        rng = self.rng
        ys, xs = np.nonzero(site)
        if len(ys) == 0:
            return
        for _ in range(rng.integers(1, 4)):
            i = rng.integers(len(ys))
            su, sv = u[0, xs[i]], v[ys[i], 0]
            hu, hv = rng.uniform(2, 7, 2)
            pile = site & (np.abs(u - su) <= hu) & (np.abs(v - sv) <= hv)
            colour = _rgb(MATERIALS[rng.integers(len(MATERIALS))], rng, 0.1)
            self.paint(window, pile, CLUTTER, colour * (1 + 0.05 * self.fine[window]), rng.uniform(0.8, 2.5))

    # ------------------------------------------------------------ cars
    def add_car(self, cy: float, cx: float, angle: float, on_asphalt: bool = False) -> bool:
        """Draw a car centred at (cy, cx) heading ``angle`` if the paved ground there is free."""
        rng = self.rng
        angle += rng.normal(0, 0.03)
        hl, hw = CAR_LENGTH / 2, CAR_WIDTH / 2
        frame = self.frame(cy, cx, angle, math.hypot(hl, hw) + 3)
        if frame is None:
            return False
        window, u, v = frame
        body = (np.abs(u) <= hl) & (np.abs(v) <= hw)
        body &= ~((np.abs(u) > hl - 2) & (np.abs(v) > hw - 2))  # rounded corners
        room = (np.abs(u) <= hl + 2) & (np.abs(v) <= hw + 1)  # keep a gap to other cars
        free = (self.label[window] == IMPERVIOUS) & (self.height[window] == 0)
        if on_asphalt:
            free &= self.asphalt[window]
        if not body.any() or not free[room].all():
            return False
        paint = _rgb(CAR_COLOURS[rng.integers(len(CAR_COLOURS))], rng, 0.05)
        glass = ((u > 0.2 * hl) & (u < 0.5 * hl) | (u < -0.6 * hl) & (u > -0.85 * hl)) & (np.abs(v) < hw - 1.2)
        albedo = np.where(glass, _rgb(WINDSCREEN), paint * (1 + 0.04 * self.fine[window]))
        self.paint(window, body, CAR, albedo, np.where(glass, 1.3, 1.5))
        return True

    def add_road_cars(self) -> None:
        """Cars in the lanes of the roads, or parked at the kerb of narrow streets."""
        rng, (h, w) = self.rng, self.shape
        reach = math.hypot(h, w) / 2
        wanted = rng.poisson(16 * self.area / 512**2)
        placed = 0
        for _ in range(6 * wanted):
            if placed >= wanted:
                break
            road = self.roads[rng.integers(len(self.roads))]
            lane = road.width / 4 if road.width >= 30 else road.width / 2 - CAR_WIDTH / 2 - 1
            side = rng.choice([-1, 1])
            cy, cx = road.point(rng.uniform(-reach, reach), side * lane)
            heading = road.angle + (0.0 if side > 0 else math.pi)  # drive on the right
            if self.inside(cy, cx) and self.add_car(cy, cx, heading, on_asphalt=True):
                placed += 1

    # ------------------------------------------------------------ trees
    def add_crown(self, cy: float, cx: float, radius: float, top: float) -> None:
        """One tree crown: a dome with a ragged outline and leaf clumps in its height.

        The clumps make the shading (and self-shadowing) of the crown strongly textured,
        which is what tells trees from the smooth lawns of the same colour.
        """
        frame = self.frame(cy, cx, 0.0, 1.3 * radius)
        if frame is None:
            return
        window, u, v = frame
        r2 = (u * u + v * v) / (radius * radius)
        fine = self.fine[window]
        crown = r2 < 1 + 0.3 * self.medium[window]
        inner = np.sqrt(np.clip(1 - r2, 0, 1))
        dome = top * (0.6 + 0.4 * inner) + 1.2 * fine
        # sunlit tops of the leaf clumps are bright, the gaps between them dark
        leaves = _rgb(TREE_LEAVES, self.rng, 0.07) * (0.8 + 0.3 * inner) * (1 + 0.2 * fine)
        self.paint(window, crown, TREE, leaves, dome)

    def add_trees(self) -> None:
        """Street trees along some roads, then clusters in the gardens up to ~20 % cover."""
        rng, (h, w) = self.rng, self.shape
        reach = math.hypot(h, w) / 2
        for road in self.roads:
            if rng.random() < 0.55:
                continue
            side, spacing = rng.choice([-1, 1]), rng.uniform(30, 45)
            for along in np.arange(-reach, reach, spacing):
                y, x = road.point(along + rng.normal(0, 3), side * (road.half - rng.uniform(0, 4)))
                if self.inside(y, x) and not self.asphalt[int(y), int(x)] and self.label[int(y), int(x)] != BUILDING:
                    self.add_crown(y, x, rng.uniform(9, 15), rng.uniform(5, 10))
        target = rng.uniform(0.16, 0.23)
        for _ in range(200):
            if self.share(TREE) >= target:
                break
            spot = self.random_pixel(LOW_VEG)
            if spot is None:
                continue
            count = int(rng.integers(1, 9))
            mean_radius = rng.uniform(9, 20)
            spread = mean_radius * 0.8 * math.sqrt(count)
            for _ in range(count):
                y, x = spot[0] + rng.normal(0, spread), spot[1] + rng.normal(0, spread)
                if self.inside(y, x) and self.label[int(y), int(x)] != BUILDING:
                    self.add_crown(y, x, mean_radius * rng.uniform(0.7, 1.3), rng.uniform(4, 12))

    # ------------------------------------------------------------ rendering
    def render(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Light the scene (slopes, cast shadows), add blur and noise: image, DSM and nDSM."""
        rng, (h, w) = self.rng, self.shape
        elevation = math.radians(rng.uniform(55, 65))
        # sun in the south-east or south-west: shadows fall northwards, and both gables
        # running north-south and east-west show a lit and a dark slope
        azimuth = math.radians(180 + rng.choice([-1, 1]) * rng.uniform(20, 50))
        to_sun = (-math.cos(azimuth), math.sin(azimuth))  # (dy, dx), north is up
        # Lambert shading of the height field; slopes are clipped so that walls, which a
        # true orthophoto does not show, only leave a thin line at the eaves
        gy, gx = np.gradient(self.height)
        gy = np.clip(gy / SCENE_M_PER_PX, -1.5, 1.5)
        gx = np.clip(gx / SCENE_M_PER_PX, -1.5, 1.5)
        cos_el, sin_el = math.cos(elevation), math.sin(elevation)
        direct = (sin_el - cos_el * (gx * to_sun[1] + gy * to_sun[0])) / np.sqrt(1 + gx * gx + gy * gy)
        ambient = 0.36
        light = ambient + (1 - ambient) * np.clip(direct, 0, None) / sin_el  # flat ground: 1
        light[_cast_shadows(self.height, to_sun, elevation)] = ambient
        image = self.albedo * light
        image[2] += 6 * (light < 0.5)  # blue-ish skylight fills the shadows a little
        image = _blur(image) * rng.uniform(0.94, 1.06, (3, 1, 1)).astype(np.float32)
        image += rng.standard_normal((3, h, w), dtype=np.float32) * 3.0
        image = np.clip(image + 0.5, 0, 255).astype(np.uint8)

        # gently rolling terrain with a slight tilt, kept within 250..260 m
        tilt_y, tilt_x = rng.uniform(-0.005, 0.005, 2)
        rows = np.arange(h, dtype=np.float32)[:, None] - h / 2
        cols = np.arange(w, dtype=np.float32)[None, :] - w / 2
        terrain = np.clip(255 + 2.5 * _noise(rng, self.shape, 400.0) + tilt_y * rows + tilt_x * cols, 250, 260)
        # dense matching smooths the object edges a little and leaves some noise
        dsm = _blur(terrain + self.height) + 0.05 * rng.standard_normal((h, w), dtype=np.float32)
        # the nDSM as made from a DSM and a terrain model: the DSM minus the (equally blurred)
        # terrain, with the DSM's noise, never below the ground; no random draw of its own
        ndsm = np.clip(dsm - _blur(terrain), 0, None)
        return image, dsm.astype(np.float32), ndsm.astype(np.float32)


# ---------------------------------------------------------------- public API
def generate_scene(size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one synthetic urban tile of ``size`` = (height, width) pixels.

    Returns the image (3, H, W) uint8 in IRRG band order, the labels (H, W) uint8 with
    class ids 0..5 (impervious, building, low vegetation, tree, car, clutter) and the
    DSM (H, W) float32 in metres. The same generator state gives the same scene.
    """
    image, labels, dsm, _ = generate_scene_with_ndsm(size, rng)
    return image, labels, dsm


def generate_scene_with_ndsm(size: tuple[int, int], rng: np.random.Generator
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`generate_scene` plus the nDSM (H, W) float32: metres above the terrain, >= 0.

    The same generator state gives the same image, labels and DSM as :func:`generate_scene`.
    """
    height, width = (int(s) for s in size)
    if height < MIN_SIZE or width < MIN_SIZE:
        raise EosegError(f"a sample scene needs at least {MIN_SIZE} x {MIN_SIZE} px, got {height} x {width}")
    scene = _Scene((height, width), rng)
    scene.add_roads()
    scene.add_lots()
    scene.add_buildings()
    scene.add_yards()
    scene.add_hedges()
    scene.add_clutter()
    scene.add_road_cars()
    scene.add_trees()
    image, dsm, ndsm = scene.render()
    return image, scene.label, dsm, ndsm


def erode_labels(labels: np.ndarray, radius: int, ignore_label: int) -> np.ndarray:
    """Set to ``ignore_label`` every pixel within ``radius`` px of a pixel of another label.

    "Within" is the Euclidean distance, as the disc used for the ISPRS "noBoundary"
    ground truth; pixels beyond the tile edge do not count. Each offset of the disc is
    one shifted comparison of the whole map; a difference marks both pixels, so half the
    disc suffices.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise EosegError(f"erode_labels expects an (H, W) label map, got shape {labels.shape}")
    if radius < 0:
        raise EosegError(f"erosion radius must be >= 0, got {radius}")
    h, w = labels.shape
    boundary = np.zeros((h, w), dtype=bool)
    for dy in range(radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius or (dy == 0 and dx <= 0):
                continue
            if dy >= h or abs(dx) >= w:
                continue
            # pixel p against pixel p + (dy, dx), over all p where both lie in the tile
            here = (slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
            there = (slice(dy, h), slice(max(0, dx), w - max(0, -dx)))
            differs = labels[here] != labels[there]
            boundary[here] |= differs
            boundary[there] |= differs
    eroded = labels.copy()
    eroded[boundary] = ignore_label
    return eroded


def tile_paths(cfg: Config, tile_id: str) -> dict[str, Path]:
    """The files written for one tile, by pattern name; collections with pattern "" are skipped."""
    if not cfg.IMAGE_PATTERN:
        raise EosegError("IMAGE_PATTERN is empty; the sample needs somewhere to write its images")
    paths = {name: cfg.tile_path(name, tile_id) for name in COLLECTIONS}
    return {name: path for name, path in paths.items() if path is not None}


def tile_georeference(index: int, size: int, path: Path) -> RasterInfo:
    """CRS and 9 cm transform of the ``index``-th tile: tiles sit in a row, never overlapping."""
    step = math.ceil(size * PIXEL_SIZE_M + TILE_GAP_M)
    transform = from_origin(ORIGIN_X + index * step, ORIGIN_Y, PIXEL_SIZE_M, PIXEL_SIZE_M)
    return RasterInfo(path, size, size, 3, "uint8", CRS.from_epsg(CRS_EPSG), transform, None)


def check_classes(cfg: Config) -> None:
    """The generator draws the six ISPRS classes; refuse a config with other classes."""
    if cfg.num_classes != NUM_CLASSES:
        raise EosegError(
            f"the synthetic sample draws the {NUM_CLASSES} ISPRS classes (impervious surfaces, building, "
            f"low vegetation, tree, car, clutter) but the config has {cfg.num_classes} CLASS_NAMES; "
            "use the 'sample' preset's classes"
        )


def write_sample_tile(
    cfg: Config, tile_id: str, index: int, size: int = 512, seed: int = 0, erosion_radius: int = 3
) -> tuple[Path, np.ndarray]:
    """Generate and write tile ``tile_id``, the ``index``-th of its dataset.

    The scene depends only on (``seed``, ``index``). Returns the image path and the labels.
    """
    check_classes(cfg)
    if seed < 0:
        raise EosegError(f"seed must be >= 0, got {seed}")
    paths = tile_paths(cfg, tile_id)
    image, labels, dsm, ndsm = generate_scene_with_ndsm((size, size), np.random.default_rng([seed, index]))
    like = tile_georeference(index, size, paths["IMAGE_PATTERN"])
    palette = cfg.palette
    write_raster(paths["IMAGE_PATTERN"], image, like)
    if "GT_COLOR_PATTERN" in paths:
        write_raster(paths["GT_COLOR_PATTERN"], palette.to_color(labels).transpose(2, 0, 1), like)
    if "GT_ERODED_PATTERN" in paths:
        eroded = erode_labels(labels, erosion_radius, palette.ignore_label)
        write_raster(paths["GT_ERODED_PATTERN"], palette.to_color(eroded).transpose(2, 0, 1), like)
    if "DSM_PATTERN" in paths:
        write_raster(paths["DSM_PATTERN"], dsm, like)
    if "NDSM_PATTERN" in paths:
        write_raster(paths["NDSM_PATTERN"], ndsm, like)
    return paths["IMAGE_PATTERN"], labels


def write_sample_dataset(
    cfg: Config, tile_ids: list[str], size: int = 512, seed: int = 0, erosion_radius: int = 3
) -> list[Path]:
    """Write every tile of ``tile_ids`` under cfg.DATA_ROOT with the config's patterns.

    Image, colour ground truth, eroded ground truth, DSM and nDSM per tile (a collection whose
    pattern is "" is skipped), coloured with the config's palette. Tile ``i`` of the list
    uses the generator seeded with (``seed``, ``i``). Returns the image paths.
    """
    check_classes(cfg)
    return [write_sample_tile(cfg, str(t), i, size, seed, erosion_radius)[0] for i, t in enumerate(tile_ids)]
