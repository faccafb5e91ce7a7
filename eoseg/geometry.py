"""Sliding-window geometry: where the windows of a tile lie.

Windows start every ``stride`` pixels; the last one along each axis is moved back so
that it ends exactly on the tile's edge. Every pixel is covered, every window lies
inside the tile and has the full window size (a tile smaller than the window is the
caller's to pad or refuse).
"""

from __future__ import annotations

from typing import Iterator

from eoseg.errors import EosegError


def axis_starts(length: int, window: int, stride: int, allow_gaps: bool = False) -> list[int]:
    """Start offsets of windows of size ``window`` along an axis of ``length`` pixels.

    A stride larger than the window would leave pixels in no window; that is refused
    unless ``allow_gaps`` (sparse sampling of training patches).
    """
    if window < 1 or stride < 1:
        raise EosegError(f"window and stride must be positive, got {window} and {stride}")
    if stride > window and not allow_gaps:
        raise EosegError(f"stride {stride} is larger than the window {window}: pixels between windows would be missed")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def sliding_windows(height: int, width: int, window: int, stride: int, allow_gaps: bool = False) -> Iterator[tuple[int, int]]:
    """(row, col) of the top-left corner of each window, row by row."""
    cols = axis_starts(width, window, stride, allow_gaps)
    for row in axis_starts(height, window, stride, allow_gaps):
        for col in cols:
            yield row, col


def count_windows(height: int, width: int, window: int, stride: int, allow_gaps: bool = False) -> int:
    return len(axis_starts(height, window, stride, allow_gaps)) * len(axis_starts(width, window, stride, allow_gaps))
