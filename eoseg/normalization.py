"""The one place where raw pixel values become network inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from eoseg.errors import EosegError

# how patches, LMDBs and weights made on 2026-12-07 record that nodata held the training imagery's mean, taken to be
# that of their statistics; later ones record the values themselves (the fill was a sample's mean, 7% off on a scene)
TRAINING_MEAN_FILL = "training mean"


@dataclass(frozen=True)
class Normalization:
    """``(x[band_order] - mean) / std`` per band, on the raw value scale of the input.

    ``band_order`` (None = as read) reorders the configured bands before the network,
    e.g. RGB -> BGR for weights trained in Caffe; ``mean``/``std`` follow that order.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    band_order: tuple[int, ...] | None = None
    # data type of the pixels the weights were trained on (None: not recorded); not part of record()
    input_dtype: str | None = None
    # raw value of each input band (as read, before band_order) that nodata pixels take: the training imagery's mean
    # (see training_fill); None: the value that normalises to 0. Not part of record()
    fill: tuple[float, ...] | None = None

    @classmethod
    def from_config(cls, cfg) -> "Normalization":
        """Every stacked band's: NORM_MEAN/NORM_STD for BANDS, then each EXTRA_SOURCES entry's mean/std."""
        return cls(tuple(cfg.stacked_mean), tuple(cfg.stacked_std))

    @classmethod
    def from_record(cls, record: dict) -> "Normalization":
        order = record.get("band_order")
        return cls(tuple(record["mean"]), tuple(record["std"]), None if order is None else tuple(order))

    def record(self) -> dict:
        """How inputs are normalised, as recorded in LMDBs and weights files."""
        record = {"mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std]}
        if self.band_order is not None:
            record["band_order"] = [int(b) for b in self.band_order]
        return record

    def for_values_times(self, factor: float, bands: int) -> "Normalization":
        """This normalisation of raw values whose first ``bands`` bands (the image's BANDS, not
        EXTRA_SOURCES) are multiplied by ``factor`` first (INFER_VALUE_SCALE): ``(factor x - m) / s`` is
        ``(x - m / factor) / (s / factor)``, so those bands' means and stds are divided by ``factor``."""
        if factor == 1:
            return self
        order = self.band_order if self.band_order is not None else range(len(self.mean))
        divisor = [factor if source < bands else 1.0 for source in order]  # network band k reads input band order[k]
        fill = None if self.fill is None else tuple(v / factor if band < bands else v for band, v in enumerate(self.fill))
        return replace(self, mean=tuple(m / d for m, d in zip(self.mean, divisor)),
                       std=tuple(s / d for s, d in zip(self.std, divisor)), fill=fill)

    def apply(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) raw values (any dtype) -> normalised float32."""
        if self.band_order is not None:
            batch = batch[:, list(self.band_order)]
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
        return (batch.float() - mean) / std

    def fill_invalid(self, pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(C, H, W) raw ``pixels`` with every band of each pixel where ``valid`` is False set to
        :attr:`fill`, else to the raw value that normalises to 0 (the band's NORM_MEAN).

        A nodata value such as -9999 would otherwise reach the network as a huge input: it
        corrupts the activations of every window around it and, in training, batch norm's
        statistics. NaN is replaced alike (``valid`` is False there). The training imagery's mean
        is a flat, ordinary colour; NORM_MEAN 0 (the method's 1/255) would make a hole black, an
        object a trained network labels into the pixels around it (1 px from a hole: 2.5% right
        against 89.7% with the mean on the sample; mixed on real crops, bench/RESULTS.md).
        """
        if valid.all():
            return pixels
        if self.fill is not None:
            neutral = np.asarray(self.fill, dtype=np.float64)
        elif self.band_order is not None:  # network band k is input band band_order[k]
            neutral = np.zeros(len(self.band_order))
            neutral[list(self.band_order)] = self.mean
        else:
            neutral = np.asarray(self.mean, dtype=np.float64)
        if np.issubdtype(pixels.dtype, np.integer):  # the nearest value the stored type holds
            limits = np.iinfo(pixels.dtype)
            neutral = np.clip(np.rint(neutral), limits.min, limits.max)
        return np.where(valid[None], pixels, neutral.astype(pixels.dtype)[:, None, None])

    def filled_as_recorded(self, statistics: dict | None, fill: str | list | None) -> "Normalization":
        """This normalisation filling nodata as the training data were filled, as their ``fill`` record says: with its
        values (:meth:`fill_record`); with the training imagery's mean (``statistics``) where it is
        TRAINING_MEAN_FILL; else (patches, LMDBs and weights made before 2026-12-07) with NORM_MEAN, as they were
        trained."""
        if isinstance(fill, list):
            return replace(self, fill=tuple(float(v) for v in fill)) if len(fill) == len(self.mean) else self
        return self.filled_with(statistics) if fill == TRAINING_MEAN_FILL else self

    def fill_record(self) -> list[float] | None:
        """What nodata pixels take, as patches, LMDBs and weights record it (None: the value that normalises to 0)."""
        return None if self.fill is None else [float(v) for v in self.fill]

    def filled_with(self, statistics: dict | None) -> "Normalization":
        """This normalisation with nodata pixels given the mean of ``statistics`` (:meth:`BandStatistics.record` of
        the training imagery, one value per input band); as it is where they are None or of other bands."""
        if not statistics or len(statistics["mean"]) != len(self.mean):
            return self
        return replace(self, fill=tuple(float(v) for v in statistics["mean"]))


@dataclass
class BandStatistics:
    """Running count, sum, sum of squares, min and max per band over valid pixels."""

    bands: int
    count: int = 0
    total: np.ndarray = None
    squares: np.ndarray = None
    low: np.ndarray = None
    high: np.ndarray = None
    ROWS = 256

    def __post_init__(self):
        self.total, self.squares = np.zeros(self.bands), np.zeros(self.bands)
        self.low, self.high = np.full(self.bands, np.inf), np.full(self.bands, -np.inf)

    def add(self, pixels: np.ndarray, valid: np.ndarray) -> None:
        """Count the (C, H, W) ``pixels`` where ``valid`` (H, W) is True."""
        for first in range(0, pixels.shape[1], self.ROWS):  # by blocks: a float64 copy of a whole tile is 8 times its size
            values = pixels[:, first:first + self.ROWS][:, valid[first:first + self.ROWS]].astype(np.float64)
            if not values.size:
                continue
            self.count += values.shape[1]
            self.total += values.sum(axis=1)
            self.squares += (values ** 2).sum(axis=1)
            self.low, self.high = np.minimum(self.low, values.min(axis=1)), np.maximum(self.high, values.max(axis=1))

    def merge(self, other: "BandStatistics") -> None:
        """Count ``other``'s pixels too (of the same bands)."""
        self.count += other.count
        self.total, self.squares = self.total + other.total, self.squares + other.squares
        self.low, self.high = np.minimum(self.low, other.low), np.maximum(self.high, other.high)

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.squares / max(self.count, 1) - self.mean ** 2, 0))

    def record(self) -> dict | None:
        """Each band's mean and std of the raw values counted, at 6 significant digits, as patches,
        LMDBs and weights record the training imagery's (see :func:`check_value_scale`); None where
        nothing was counted."""
        if not self.count:
            return None
        digits = lambda values: [float(f"{v:.6g}") for v in values]  # noqa: E731
        return {"mean": digits(self.mean), "std": digits(self.std)}

    @classmethod
    def from_record(cls, record: dict) -> "BandStatistics":
        """Statistics with the mean and std of a :meth:`record` (what an LMDB holds of its training tiles)."""
        mean, std = np.asarray(record["mean"], dtype=np.float64), np.asarray(record["std"], dtype=np.float64)
        statistics = cls(len(mean), count=1)
        statistics.total, statistics.squares = mean, std ** 2 + mean ** 2
        return statistics

    def normalization(self, first: int, end: int) -> tuple[list[float], list[float]]:
        """Mean and std of bands first..end-1 to normalise by, at 6 significant digits (a constant
        band's std at least 1e-6: it must not divide by 0)."""
        digits = lambda values: [float(f"{v:.6g}") for v in values[first:end]]  # noqa: E731
        return digits(self.mean), digits(np.maximum(self.std, 1e-6))


# The root mean square of a training band's normalised values must lie in this range. 8-bit
# values divided by 255 (the method's) give 0..1, a band's own mean and std give 1. Outside it
# the scale is wrong, e.g. 12-bit imagery divided by 255 (about 5: 4-8 points of mean F1 lost on
# the real Vaihingen crop) or reflectances of 0..1 divided by 255 (about 0.001: mean F1 12 points
# apart between two seeds); bench/RESULTS.md, "The normalisation's scale".
NORMALISED_RMS_RANGE = (0.005, 4.0)


FILL_VALUE_BELOW = -9999.0  # a value this low or lower is a nodata fill (-9999, -32768, -3.4e38), no measurement


def scale_problem(statistics: BandStatistics, cfg) -> str | None:
    """Why ``cfg``'s normalisation (NORM_MEAN/NORM_STD, each EXTRA_SOURCES entry's mean/std) leaves
    bands of the training tiles (``statistics`` of every stacked band) far from unit scale, with the
    values to set instead; None where every band lies in NORMALISED_RMS_RANGE (or nothing was read). A band
    reaching a fill value without a nodata tag is said first: a normalisation around it would squeeze the real
    values (review: a DSM's untagged -9999 gave "mean -157, std 907")."""
    if not statistics.count:
        return None
    names = cfg.stacked_band_names
    filled = [i for i, low in enumerate(statistics.low) if low <= FILL_VALUE_BELOW]
    if filled:
        i = filled[0]
        return (f"the training tiles' {names[i]} values reach {statistics.low[i]:g}, no measurement: a nodata value "
                f"without a tag? tag it in its files (gdal_edit.py -a_nodata {statistics.low[i]:g} FILE), or mask "
                "those pixels; a normalisation around it would squeeze the real values")
    mean, std = np.asarray(cfg.stacked_mean), np.asarray(cfg.stacked_std)
    offset, spread = (statistics.mean - mean) / std, statistics.std / np.abs(std)
    rms = np.sqrt(offset ** 2 + spread ** 2)
    low, high = NORMALISED_RMS_RANGE
    bad = [i for i, value in enumerate(rms) if statistics.std[i] > 0 and not low <= value <= high]
    if not bad:
        return None
    found = ", ".join(f"{names[i]} into values of mean {offset[i]:.3g} and std {spread[i]:.3g}" for i in bad)
    image_bands = len(cfg.BANDS)
    fixes = []
    if any(i < image_bands for i in bad):
        means, stds = statistics.normalization(0, image_bands)
        fixes.append(f"NORM_MEAN = {means} and NORM_STD = {stds} (`python check_data.py --config FILE --write-norm` "
                     "writes them)")
    first = image_bands
    for index, source in enumerate(cfg.extra_sources):
        end = first + len(source["band_names"])
        if any(first <= i < end for i in bad):  # named as every message names an entry (its index, from 0)
            means, stds = statistics.normalization(first, end)
            fixes.append(f'EXTRA_SOURCES[{index}] ({", ".join(source["band_names"])})\'s "mean": {means} and "std": '
                         f'{stds} (--write-norm leaves EXTRA_SOURCES as they are)')
        first = end
    return (f"the normalisation turns the training tiles' {found} (root mean square outside {low:g}..{high:g}; "
            f"values of order 1 train best); set {'; and '.join(fixes)}")


def check_scale(statistics: BandStatistics, cfg) -> None:
    """Refuse, before training, a normalisation that leaves the training bands far from unit scale."""
    problem = scale_problem(statistics, cfg)
    if problem:
        raise EosegError(problem)


# The values of an image against those the weights were trained on (:func:`value_scale`). Beyond
# VALUE_SCALE_LIMIT times, or that fraction, they are taken for another scale or encoding (12-bit
# values against 16-bit stretched ones, reflectances of 0..1 against 0..10000, 12-bit data cast to
# 8 bits unscaled) that the normalisation turns into inputs the network never saw, and refused;
# beyond VALUE_SCALE_NOTE a note says so. Colour jitter trains for 0.8..1.2. On the real SpaceNet
# scene a U-Net lost two thirds of its building F1 at 1/2 and 4 times the values, a quarter at 2
# times; real test tiles of the ISPRS, WHU and SpaceNet sets lay at 0.72..1.72 times their training
# tiles (bench/RESULTS.md, "Images on another value scale").
VALUE_SCALE_NOTE = 1.5
VALUE_SCALE_LIMIT = 3.0
# valid pixels a sample of a raster needs (tiles.TileStack.sample): fewer say more of the scene (a chip of water or
# shadow) than of its scale
MIN_SAMPLED_PIXELS = 4096


# an extra source's values (heights, another sensor's bands) follow the scene more than an image's do (a flat
# village's nDSM against a city's): a note from VALUE_SCALE_LIMIT, refused only this many times off (a DSM given
# for an nDSM: 60 times; centimetres for metres: 100)
SOURCE_SCALE_LIMIT = 10.0

# an extra source's mean that moved this many of its training standard deviations: a note; refused from
# SOURCE_SHIFT_LIMIT where the source holds values far from 0 against their spread (ABSOLUTE_SOURCE_RATIO: heights
# above the sea), which another datum or a town higher up moves whole; other sources (an nDSM, backscatter, a
# temperature) follow the scene, and are noted only. A DSM keeps its magnitude on another datum (+47 m on some 258 m:
# 1.2 times), so the scale check above passes it. On the sample, a U-Net fed the DSM lost 3-9 points of OA at
# 0.6-1.5 standard deviations, 17-36 at 1.7-2.6, 44 at 3.9-4.7; its own test tiles lay at 0.4-0.5 (bench/RESULTS.md,
# "A DSM on another datum")
SOURCE_SHIFT_NOTE = 1.5
SOURCE_SHIFT_LIMIT = 3.0
# training values this many of their standard deviations from 0, or more: heights above the sea (a DSM: 55 on the
# sample) or another quantity with an arbitrary zero
ABSOLUTE_SOURCE_RATIO = 10.0


# factors between two encodings of the same values, in order of preference where several lie near a measurement:
# decimal scalings (reflectance 0..1 against 0..10000), 8-bit values against 0..1, bit depths
ENCODING_FACTORS = ([10.0 ** k for k in range(-6, 7)], [255.0, 1 / 255], [2.0 ** k for k in range(-16, 17)])
ENCODING_FACTOR_TOLERANCE = 1.15  # a measured factor within this ratio of one of them is read as it


def suggested_value_scale(measured: float) -> str:
    """The INFER_VALUE_SCALE to suggest for values ``measured`` times off the training scale: the factor between two
    encodings it lies near (10000 for reflectance 0..1 against 0..10000, 255, a power of 2 between bit depths), with
    the measured one; a scene's own light (water, haze) moves the measurement some way off the encodings' factor
    (9.38e+03 for 10000, review), which the map then carries. Else the measured factor."""
    for factors in ENCODING_FACTORS:
        nearest = min(factors, key=lambda factor: abs(math.log(factor / measured)))
        if abs(math.log(nearest / measured)) <= math.log(ENCODING_FACTOR_TOLERANCE):
            return f"{nearest:g} ({measured:.3g} measured on its values)"
    return f"{measured:.3g} (measured on its values)"


def value_scale(trained: dict, measured: BandStatistics, bands: int | slice) -> float | None:
    """How many times the values of the first ``bands`` bands (the image's BANDS; or the stacked bands
    of a slice) ``measured`` counted are those the weights were ``trained`` on
    (:meth:`BandStatistics.record`): the median over those bands of the ratio of their root mean squares
    (a band's magnitude, offset and spread together). None where either side has no magnitude to compare."""
    if not measured.count:
        return None
    bands = slice(0, bands) if isinstance(bands, int) else bands
    trained_size = np.hypot(np.asarray(trained["mean"][bands], dtype=np.float64), trained["std"][bands])
    measured_size = np.hypot(measured.mean[bands], measured.std[bands])
    comparable = (trained_size > 0) & (measured_size > 0)
    if not comparable.any():
        return None
    return float(np.exp(np.median(np.log(measured_size[comparable] / trained_size[comparable]))))


def source_shift(trained: dict, measured: BandStatistics, positions: slice) -> float | None:
    """How many of the ``trained`` standard deviations the mean ``measured`` lies from the trained one, over the
    stacked bands ``positions`` (an extra source's; the largest over them): heights on another datum keep their
    magnitude and move every pixel alike. None where nothing was measured or no band varied in training."""
    shifts, _, _ = _mean_shifts(trained, measured, positions)
    return None if shifts is None or np.isnan(shifts).all() else float(np.nanmax(shifts))


def _mean_shifts(trained: dict, measured: BandStatistics, positions: slice):
    """Each band's move of the mean, in ``trained`` standard deviations (NaN where it never varied), with the trained
    means and standard deviations; (None, None, None) where nothing was measured."""
    if not measured.count:
        return None, None, None
    mean, spread = (np.asarray(trained[key][positions], dtype=np.float64) for key in ("mean", "std"))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, np.abs(measured.mean[positions] - mean) / spread, np.nan), mean, spread


def band_scales(trained: dict, measured: BandStatistics, bands: int) -> np.ndarray:
    """Each of the first ``bands`` bands' ratio of root mean squares, ``measured`` against ``trained`` (as in
    :func:`value_scale`, band by band); NaN where either has no magnitude."""
    trained_size = np.hypot(np.asarray(trained["mean"][:bands], dtype=np.float64), trained["std"][:bands])
    measured_size = np.hypot(measured.mean[:bands], measured.std[:bands])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((trained_size > 0) & (measured_size > 0), measured_size / trained_size, np.nan)


def off_scale(ratio: float, limit: float) -> bool:
    """Whether values ``ratio`` times others are ``limit`` times them or more, or that fraction or less."""
    return not 1 / limit < ratio < limit


def values_of_type(trained: dict, measured: BandStatistics, bands: int, dtype: str, measured_is_float: bool) -> bool:
    """Whether the values ``measured`` (an image of another data type) are those of ``dtype`` data like the
    ``trained`` ones: within that type's range and short of VALUE_SCALE_NOTE off their scale (8-bit values stored as
    float32); a float image of integer training data, short of VALUE_SCALE_LIMIT, so that the value check then notes
    or refuses it as it does images of ``dtype`` (a float32 copy of a darker 16-bit scene is no further off than the
    scene), where an 8-bit rendering of 16-bit data may be as far off by another radiometry."""
    ratio = value_scale(trained, measured, bands)
    copy = measured_is_float and np.issubdtype(np.dtype(dtype), np.integer)
    if ratio is None or off_scale(ratio, VALUE_SCALE_LIMIT if copy else VALUE_SCALE_NOTE):
        return False
    if np.issubdtype(np.dtype(dtype), np.integer):
        limits = np.iinfo(np.dtype(dtype))
        return bool((measured.low[:bands] >= limits.min).all() and (measured.high[:bands] <= limits.max).all())
    return True


def check_value_scale(trained: dict | None, measured: BandStatistics, bands: int, what: str, refuse: bool,
                      against: str = "those the weights were trained on", factor: float = 1.0,
                      sources: Sequence[tuple[str, slice]] = (), band_names: Sequence[str] = ()) -> str | None:
    """Refuse ``what`` (``refuse``: INFER_VALUE_CHECK) where its values (``measured``, multiplied by
    ``factor``: INFER_VALUE_SCALE) are VALUE_SCALE_LIMIT times the ``trained`` ones (``against`` says
    whose) or more, or that fraction or less; a note where they are VALUE_SCALE_NOTE times (or where the
    refusal is off), or where one band (of ``band_names``) is VALUE_SCALE_LIMIT times off the others; None
    where they are alike or either is unknown. Each extra source of ``sources`` (its name, its stacked bands)
    is held to SOURCE_SCALE_LIMIT after it (see there)."""
    if trained is None:
        return None
    notes = [note for note in (_check_source_scale(trained, measured, name, positions, what, refuse, against)
                               for name, positions in sources) if note]
    notes += [note for note in (_check_image_scale(trained, measured, bands, what, refuse, against, factor),
                                _check_band_scales(trained, measured, bands, what, against, band_names)) if note]
    return "\n".join(notes) or None


def _check_band_scales(trained: dict, measured: BandStatistics, bands: int, what: str, against: str,
                       band_names: Sequence[str]) -> str | None:
    """A note naming the bands whose values are VALUE_SCALE_LIMIT times off the others' against ``trained`` (the
    median over bands the image's check takes does not see one band alone: a band from another product, or stretched
    on its own). Not refused: a scene of open water has its own near-infrared."""
    ratio = value_scale(trained, measured, bands)
    if ratio is None:
        return None
    relative = band_scales(trained, measured, bands) / ratio
    odd = [index for index, value in enumerate(relative) if np.isfinite(value) and off_scale(value, VALUE_SCALE_LIMIT)]
    if not odd:
        return None
    named = ", ".join(f"{band_names[index] if index < len(band_names) else f'band {index + 1}'} {relative[index]:.2g} times"
                      for index in odd)
    return (f"note: {what}: against {against}, its bands do not scale alike: {named} as much as the others (a band "
            "from another product, or stretched on its own?); the labels may suffer")


def _check_source_scale(trained: dict, measured: BandStatistics, name: str, positions: slice, what: str, refuse: bool,
                        against: str) -> str | None:
    finding = source_finding(trained, measured, name, positions, what, against)
    if finding is None:
        return None
    if refuse and finding.severe:
        raise EosegError(f"{finding.found}: {finding.cause} would make a wrong map; {finding.remedy}, or set "
                         "INFER_VALUE_CHECK=False if they are right as they are")
    return f"note: {finding.found}: the labels may suffer ({finding.mild_cause})"


@dataclass(frozen=True)
class SourceFinding:
    """What an extra source's values are against its training values: ``found`` (where, how far), its ``cause``
    and ``remedy`` where ``severe`` (refused), its ``mild_cause`` where only noted; ``moved``: its mean moved whole
    (the values' scale is alike)."""
    found: str
    severe: bool
    cause: str
    remedy: str
    mild_cause: str
    moved: bool = False


def _absolute(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Which bands hold values far from 0 against their spread (ABSOLUTE_SOURCE_RATIO)."""
    return (std > 0) & (np.abs(mean) >= ABSOLUTE_SOURCE_RATIO * std)


def absolute_source_note(statistics: BandStatistics, name: str, positions: slice) -> str | None:
    """A note where the training values of extra source ``name`` (its stacked bands ``positions``) lie
    ABSOLUTE_SOURCE_RATIO of their standard deviations from 0 or more: on another datum or at another altitude every
    pixel moves alike, and labelling refuses such a source from SOURCE_SHIFT_LIMIT of them away."""
    if not statistics.count:
        return None
    mean, std = statistics.mean[positions], statistics.std[positions]
    if not _absolute(mean, std).any():
        return None
    found = ", ".join(f"mean {m:.4g}, std {s:.3g}" for m, s in zip(mean, std))
    return (f"the training tiles' {name} values lie far from 0 against their spread ({found}): heights above the sea? "
            f"The network learns them on this datum at these altitudes; labelling refuses a tile whose mean lies "
            f"{SOURCE_SHIFT_LIMIT:g} standard deviations away (another datum, a town higher up). Heights above the "
            "ground (an nDSM, or make_composite.py's composite) carry over")


def source_finding(trained: dict, measured: BandStatistics, name: str, positions: slice, what: str,
                   against: str) -> SourceFinding | None:
    """An extra source ``name`` (its stacked bands ``positions``) of ``what`` against the ``trained`` values
    (``against`` says whose): VALUE_SCALE_LIMIT times (or that fraction) or more off, severe from SOURCE_SCALE_LIMIT;
    or its mean moved SOURCE_SHIFT_NOTE standard deviations or more, severe from SOURCE_SHIFT_LIMIT where the source
    is far from 0 (a DSM). The severe one where there is one; None where they are alike or nothing was measured."""
    ratio = value_scale(trained, measured, positions)
    scale = None
    if ratio is not None and off_scale(ratio, VALUE_SCALE_LIMIT):
        means = (f"means {', '.join(f'{v:.4g}' for v in measured.mean[positions])} against "
                 f"{', '.join(f'{v:.4g}' for v in trained['mean'][positions])}")
        scale = SourceFinding(f"{what}: its {name} values are {ratio:.2g} times {against} ({means})",
                              off_scale(ratio, SOURCE_SCALE_LIMIT), "another raster (a DSM for an nDSM) or another unit",
                              "check its pattern and unit", "another raster or unit, or a very different scene")
        if scale.severe:
            return scale
    moved = _moved_finding(trained, measured, name, positions, what, against)
    return moved if moved is not None and (moved.severe or scale is None) else scale


def _moved_finding(trained: dict, measured: BandStatistics, name: str, positions: slice, what: str,
                   against: str) -> SourceFinding | None:
    """The finding of :func:`source_finding` on the move of the mean (see :func:`source_shift`), for the band that
    moved most (of those severe, where any is)."""
    shifts, mean, spread = _mean_shifts(trained, measured, positions)
    if shifts is None or np.isnan(shifts).all():
        return None
    shifts = np.nan_to_num(shifts)
    severe = (shifts >= SOURCE_SHIFT_LIMIT) & _absolute(mean, spread)
    band = int(np.argmax(np.where(severe, shifts, -1.0) if severe.any() else shifts))
    if shifts[band] < SOURCE_SHIFT_NOTE:
        return None
    which = "" if len(shifts) == 1 else f" (band {band + 1})"
    found = (f"{what}: the mean of its {name} values{which}, {measured.mean[positions][band]:.4g}, lies {shifts[band]:.2g} "
             f"standard deviations ({spread[band]:.4g}) from that of {against}, {mean[band]:.4g}")
    return SourceFinding(found, bool(severe[band]),
                         "heights on another datum (ellipsoidal against sea level: some 40-50 m in Europe) or of a town "
                         "at another altitude, or nodata without a tag",
                         "put it on the training tiles' datum, tag its nodata, or train on heights above the ground (an "
                         "nDSM, or make_composite.py's composite), which neither moves",
                         "another datum, altitude, calibration or offset, or a scene unlike the training tiles",
                         moved=True)


def _check_image_scale(trained: dict, measured: BandStatistics, bands: int, what: str, refuse: bool, against: str,
                       factor: float) -> str | None:
    ratio = value_scale(trained, measured, bands)
    if ratio is None:
        return None
    ratio *= factor
    if not off_scale(ratio, VALUE_SCALE_NOTE):
        return None
    means = lambda values: ", ".join(f"{v * factor:.4g}" for v in values[:bands])  # noqa: E731
    scaled = "" if factor == 1 else f" (times INFER_VALUE_SCALE {factor:g})"
    found = (f"{what}: its values{scaled} are {ratio:.2g} times {against} (band means "
             f"{means(measured.mean)} against {', '.join(f'{v:.4g}' for v in trained['mean'][:bands])})")
    moved = _offset_hint(trained, measured, bands, factor)
    if refuse and off_scale(ratio, VALUE_SCALE_LIMIT):
        few = (f"; only {measured.count} valid pixels, whose values may be the scene's more than the scale's"
               if measured.count < MIN_SAMPLED_PIXELS else "")
        # values moved, not scaled: a factor would even their means out and shrink their spread (code review)
        remedy = (f"{moved[2:]}; or INFER_VALUE_CHECK=False" if moved else
                  f"if the images are on another scale, set INFER_VALUE_SCALE={suggested_value_scale(factor / ratio)} to "
                  "bring them to the training scale (a power of 2 where the encodings differ in bits: 0.0625 for 16-bit "
                  "values and weights of 12-bit ones), or INFER_VALUE_CHECK=False")
        raise EosegError(f"{found}{few}: another scale, encoding or offset (12 against 16 bits, reflectance 0..1 against "
                         f"0..10000) would make a wrong map; {remedy} if they are right as they are, only darker or "
                         "brighter (water, shadow, snow)")
    return f"note: {found}: the labels may suffer (another scale or encoding, or much darker or brighter light)" + moved


OFFSET_SPREAD = 1.3  # values whose spread is within this ratio of the training values' (median over the bands)


def _offset_hint(trained: dict, measured: BandStatistics, bands: int, factor: float) -> str:
    """Where values off the training scale keep its spread: they are moved, not scaled; say by how much and what may
    have moved them (an offset the file does not tag, or haze); else ""."""
    spread = np.asarray(trained["std"][:bands], dtype=np.float64)
    measured_spread = measured.std[:bands] * factor
    comparable = (spread > 0) & (measured_spread > 0)
    if not comparable.any() or abs(np.median(np.log(measured_spread[comparable] / spread[comparable]))) > math.log(OFFSET_SPREAD):
        return ""
    shift = float(np.median(measured.mean[:bands] * factor - np.asarray(trained["mean"][:bands], dtype=np.float64)))
    moved = f"; but their spread is the training values', and their means lie about {abs(shift):.4g} " \
            f"{'higher' if shift > 0 else 'lower'}: "
    if measured.count and np.all(measured.high[:bands] <= 255) and np.all(measured.low[:bands] >= 0) \
            and np.all(np.asarray(trained["mean"][:bands]) > 1):  # 8-bit photos: no offset to tag (review: a PNG)
        return moved + "brighter or darker light, haze or another camera's exposure"
    return (moved + "an offset the file does not tag (tag it, gdal_edit.py -offset -OFFSET FILE, and its values are "
            "read without it: -1000 for Sentinel-2 L2A products since processing baseline 04.00), or haze")
