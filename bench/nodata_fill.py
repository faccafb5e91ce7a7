"""Nodata holes: what the network is shown there, and what that does to the pixels around them.

    python bench/nodata_fill.py [--sets vaihingen whu] [--steps 150] [--shared ../shared/data] [--workdir DIR]
                                [--seed 0]

Real imagery from ``../shared/data`` (see its README), split in space as ``bench/pixel_size.py``
splits it (two folds: the ISPRS crops' halves, the WHU cities in two groups), written as
GeoTIFFs. In each fold config.py's default network and recipe train for ``--steps`` steps on
one part; each test tile of the other is then labelled three times through inference.py's path:

- ``intact``: as it is;
- ``holes, training mean``: with four rectangular holes (a quarter of its width by a sixth of its
  height, one in each quadrant) tagged nodata, filled as eoseg fills nodata: with the training
  imagery's mean, which the weights record;
- ``holes, NORM_MEAN``: the same holes filled with the raw value that normalises to 0, as eoseg did
  before 2026-12-07 (black under the default 1/255).

Holed pixels come out unlabelled either way; the table scores the pixels around the holes,
by their distance to the nearest holed pixel (rings of 1, 2-3, 4-7 and 8-15 px), against the
ground truth and against the intact map. Both folds' pixels are pooled. Prints the machine and
the table; writes DIR/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import rasterio
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eoseg.checkpoint import load_checkpoint  # noqa: E402
from eoseg.infer import run_inference  # noqa: E402
from eoseg.io import raster_info, read_raster  # noqa: E402
from eoseg.normalization import Normalization  # noqa: E402
from eoseg.precision import describe_hardware  # noqa: E402
from eoseg.tiles import read_eval_labels  # noqa: E402
from eoseg.train import train  # noqa: E402
from pixel_size import CRS, PIXEL_SIZES, fold_config, source_tiles  # noqa: E402  (bench/, beside this file)
from real_data import add_shared_arguments, run_main, start, write_results  # noqa: E402

RINGS = ((1, 1), (2, 3), (4, 7), (8, 15))  # px from the nearest holed pixel
VARIANTS = ("intact", "holes, training mean", "holes, NORM_MEAN")
HOLED = "_holes"  # suffix of a test tile's id with its holes


def holes(height: int, width: int) -> np.ndarray:
    """(H, W) True in four rectangles, one centred in each quadrant."""
    mask = np.zeros((height, width), dtype=bool)
    rows, cols = max(height // 6, 2), max(width // 4, 2)
    for centre_row in (height // 4, 3 * height // 4):
        for centre_col in (width // 4, 3 * width // 4):
            mask[centre_row - rows // 2:centre_row + rows // 2, centre_col - cols // 2:centre_col + cols // 2] = True
    return mask


def distance_to(mask: np.ndarray, farthest: int) -> np.ndarray:
    """Each pixel's chessboard distance to the nearest True pixel of ``mask``, up to ``farthest`` (beyond: farthest + 1);
    0 inside it."""
    distance = np.where(mask, 0, farthest + 1)
    reached = mask.copy()
    for step in range(1, farthest + 1):
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        distance[grown & ~reached] = step
        reached = grown
    return distance


def write_tiles(shared: Path, work: Path, name: str) -> tuple[list[tuple[list, list]], dict]:
    """Each tile as a GeoTIFF, and each with its holes (0 in every band, tagged nodata 0); the folds and the set's
    config entries."""
    folder = work / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    tiles, folds, data = source_tiles(shared, name)
    for index, (tile, (image, labels)) in enumerate(tiles.items()):
        transform = from_origin(400000 + 1000 * index, 5000000, PIXEL_SIZES[name], PIXEL_SIZES[name])
        holed = image.copy()
        holed[:, ~image.any(axis=0)] = 1  # no other pixel is 0 in every band, as GDAL reads nodata 0 of a uint8 image
        holed[:, holes(*image.shape[1:])] = 0
        for tile_id, pixels, nodata in ((tile, image, None), (tile + HOLED, holed, 0)):
            for suffix, array, tag in (("", pixels, nodata), ("_labels", labels, None)):
                with rasterio.open(folder / f"{tile_id}{suffix}.tif", "w", driver="GTiff", width=array.shape[2],
                                   height=array.shape[1], count=array.shape[0], dtype=array.dtype.name, crs=CRS,
                                   transform=transform, nodata=tag) as dst:
                    dst.write(array)
    return folds, {**data, "DATA_ROOT": str(folder)}


def run_set(work: Path, name: str, folds: list[tuple[list, list]], data: dict, args) -> dict:
    """Train each fold and label its test tiles each way; per variant and ring, [right, differing from intact,
    scored] pixel counts, and the steps of each fold."""
    counts = {variant: np.zeros((len(RINGS), 3), dtype=np.int64) for variant in VARIANTS}
    steps = []
    for fold, (train_ids, test_ids) in enumerate(folds):
        folder = work / "runs" / name / f"fold{fold}"
        cfg = fold_config(folder, data, train_ids, args.seed, ITERATIONS=args.steps, INFER_PIXEL_SIZE="image")
        print(f"{name} fold {fold + 1}: training on {', '.join(train_ids)} for {args.steps} steps ...", flush=True)
        began = time.perf_counter()
        weights = train(cfg, progress=False)
        steps.append(int(load_checkpoint(weights)["iteration"]))
        print(f"  {time.perf_counter() - began:.0f} s; labelling {', '.join(test_ids)}", flush=True)
        maps = {}
        for variant in VARIANTS:
            ids = test_ids if variant == "intact" else [tile + HOLED for tile in test_ids]
            # eoseg before 2026-12-07: nodata normalised to 0, whatever the weights record of the training imagery
            unfilled = mock.patch.object(Normalization, "filled_with", lambda self, statistics: self)
            with unfilled if variant == "holes, NORM_MEAN" else contextlib.nullcontext():
                summary = run_inference(cfg, weights, folder / variant.replace(", ", "_").replace(" ", "_"), ids,
                                        progress=False, force=True)
            maps[variant] = {image.name.removesuffix(HOLED): read_raster(image.outputs["labels"])[0]
                             for image in summary.images}
        for tile in test_ids:
            info = raster_info(Path(data["DATA_ROOT"]) / f"{tile}.tif")
            truth, _ = read_eval_labels(cfg, tile, info)
            distance = distance_to(holes(info.height, info.width), RINGS[-1][1])
            scored = truth != cfg.IGNORE_LABEL
            for variant in VARIANTS:
                for ring, (near, far) in enumerate(RINGS):
                    inside = scored & (distance >= near) & (distance <= far)
                    labels = maps[variant][tile][inside]
                    counts[variant][ring] += [(labels == truth[inside]).sum(), (labels != maps["intact"][tile][inside]).sum(),
                                              inside.sum()]
    return {"counts": counts, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=list(PIXEL_SIZES), default=["vaihingen", "whu"])
    parser.add_argument("--steps", type=int, default=150, help="training steps of each fold (ITERATIONS)")
    parser.add_argument("--seed", type=int, default=0, help="SEED of every training run")
    add_shared_arguments(parser, "eoseg-nodata-fill")
    args = parser.parse_args()
    shared, work = start(args)
    results = {"machine": describe_hardware("cpu"), "steps": args.steps, "sets": {}}
    header = " | ".join(f"{near}-{far} px" if near != far else f"{near} px" for near, far in RINGS)
    lines = [f"| set | labelled | right at {header} | changed at {header} |", "|---|---|" + "---:|" * 2 * len(RINGS)]
    for name in args.sets:
        run = run_set(work, name, *write_tiles(shared, work, name), args)
        for variant in VARIANTS:
            right, changed, scored = run["counts"][variant].T
            lines.append(f"| {name} | {variant} | " + " | ".join(f"{100 * r / max(s, 1):.1f}%" for r, s in zip(right, scored))
                         + " | " + " | ".join(f"{100 * c / max(s, 1):.1f}%" for c, s in zip(changed, scored)) + " |")
        results["sets"][name] = {"steps": run["steps"], "rings_px": RINGS,
                                 "counts": {variant: value.tolist() for variant, value in run["counts"].items()}}
    print(f"\n{args.steps} training steps per fold; pixels around the holes, both folds pooled\n")
    print("\n".join(lines))
    write_results(work, results)


if __name__ == "__main__":
    run_main(main)
