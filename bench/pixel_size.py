"""Images of another pixel size than the training imagery's: labelled as they are, or at the training one.

    python bench/pixel_size.py [--sets whu potsdam vaihingen] [--minutes 3] [--factors 0.5 0.75 1 1.5 2 3]
                               [--shared ../shared/data] [--workdir DIR] [--seed 0]

Real imagery from ``../shared/data`` (see its README), none of it georeferenced: this writes
each image as a GeoTIFF at its nominal pixel size in UTM zone 33 (each at its own place), so
that eoseg can know its pixel size, as it would know a user's orthophotos':

- ``whu``: the ten 512 x 512 RGB WHU building samples, each from another city, about 0.3 m,
  black/white building masks; two folds, the cities split in two groups of five
  (alternating in name order);
- ``potsdam`` (5 cm, RGB) and ``vaihingen`` (9 cm, IRRG): the 512 x 512 ISPRS crops, their
  eroded labels (0 = boundary, ignored; 1..6 the classes); two folds, the left and right
  halves.

In each fold a U-Net (config.py's default network and recipe) trains on one part for
``--minutes`` (the weights record the tiles' pixel size) and labels the other, whose images
are resampled to each of ``--factors`` times that size first: averaged (as a coarser sensor
integrates) for factors above 1, bilinear below, the labels by nearest neighbour. Each
resampled image is labelled twice through inference.py's path: with
``INFER_PIXEL_SIZE = "image"`` (as it is) and with ``INFER_PIXEL_SIZE`` = the training pixel
size (averaged where the image is finer, bilinear where it is coarser, the scores brought
back onto the image's grid), and scored against its own labels. The two folds' confusion
matrices are summed, so every test pixel is scored once. The last column says which of the
two the default (``INFER_PIXEL_SIZE = None``) does. Prints the machine and a table of OA,
mean F1 and building F1 per set and factor; writes DIR/results.json.

A factor below 1 makes finer pixels by interpolation: a sharper sensor's image would hold
detail that these lack, so that half of the table is only indicative.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.warp import reproject

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eoseg.checkpoint import load_checkpoint  # noqa: E402
from eoseg.config import load_config, override_arguments  # noqa: E402
from eoseg.grid import labelling_grid  # noqa: E402
from eoseg.infer import run_inference  # noqa: E402
from eoseg.io import raster_info, read_raster  # noqa: E402
from eoseg.metrics import metrics_from_confusion, percent  # noqa: E402
from eoseg.precision import describe_hardware  # noqa: E402
from eoseg.train import train  # noqa: E402
from real_data import (WHU, WHU_DATA, add_shared_arguments, isprs_data, isprs_halves, run_main, start,  # noqa: E402
                       write_results)  # (bench/, beside this file)

PIXEL_SIZES = {"whu": 0.3, "potsdam": 0.05, "vaihingen": 0.09}  # metres: each set's nominal ground sampling
CRS = "EPSG:32633"
MODES = ("as is", "at the training size")


def write_geotiff(path: Path, array: np.ndarray, transform) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
                       dtype=array.dtype.name, crs=CRS, transform=transform) as dst:
        dst.write(array)


def resampled(array: np.ndarray, transform, factor: float, resampling: Resampling) -> tuple[np.ndarray, object]:
    """``array`` on the same extent at ``factor`` times its pixel size."""
    height, width = round(array.shape[1] / factor), round(array.shape[2] / factor)
    target = transform * transform.scale(array.shape[2] / width, array.shape[1] / height)
    out = np.zeros((array.shape[0], height, width), dtype=array.dtype)
    reproject(array, out, src_transform=transform, src_crs=CRS, dst_transform=target, dst_crs=CRS, resampling=resampling)
    return out, target


def tile_id(name: str, factor: float) -> str:
    return f"{name}_x{round(factor * 100):03d}"


def source_tiles(shared: Path, name: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[tuple[list, list]], dict]:
    """A set's tiles {id: (image, labels)} as the files hold them, its two folds (train ids, test
    ids) and the config entries that describe its data."""
    if name == "whu":
        cities = sorted(path.name[:-len("_gt.png")] for path in (shared / WHU).glob("*_gt.png"))
        tiles = {city: (read_raster(shared / WHU / f"{city}.png")[:3],
                        (read_raster(shared / WHU / f"{city}_gt.png")[:1] > 127).astype(np.uint8)) for city in cities}
        return tiles, [(cities[0::2], cities[1::2]), (cities[1::2], cities[0::2])], WHU_DATA
    return isprs_halves(shared, name), [(["left"], ["right"]), (["right"], ["left"])], isprs_data(name)


def prepare(shared: Path, work: Path, name: str, factors: list[float]) -> tuple[list[tuple[list, list]], dict]:
    """Georeferenced copies of a set's tiles at its pixel size, and of each at every factor; its
    folds and data config entries."""
    folder = work / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    size = PIXEL_SIZES[name]
    tiles, folds, data = source_tiles(shared, name)
    for index, (tile, (image, labels)) in enumerate(tiles.items()):
        transform = from_origin(400000 + 1000 * index, 5000000, size, size)
        write_geotiff(folder / f"{tile}.tif", image, transform)
        write_geotiff(folder / f"{tile}_labels.tif", labels, transform)
        for factor in factors:
            pixels, at = resampled(image, transform, factor, Resampling.average if factor > 1 else Resampling.bilinear)
            write_geotiff(folder / f"{tile_id(tile, factor)}.tif", pixels, at)
            write_geotiff(folder / f"{tile_id(tile, factor)}_labels.tif", resampled(labels, transform, factor,
                                                                                     Resampling.nearest)[0], at)
    return folds, {**data, "DATA_ROOT": str(folder)}


def fold_config(folder: Path, data: dict, train_ids: list[str], seed: int, **settings):
    """The config of one fold of a set that :func:`prepare` wrote (``data``: its config entries): config.py's
    recipe, trained from the tiles of ``train_ids`` into ``folder``, with ``settings`` (its training budget...)."""
    return load_config(overrides=override_arguments({
        "DATASET": "", "IMAGE_PATTERN": "{id}.tif", "LABEL_PATTERN": "{id}_labels.tif", "GT_COLOR_PATTERN": "",
        "GT_ERODED_PATTERN": "", "DSM_PATTERN": "", "NDSM_PATTERN": "", "BANDS": [1, 2, 3], "IGNORE_COLOR": [],
        "TRAIN_SOURCE": "tiles", "VAL_EVERY": 0, "SEED": seed, "DEVICE": "cpu", "SNAPSHOT_EVERY": 10**6,
        "WRITE_COLOR": False, "WRITE_PREVIEW": False, **settings, **data, "TRAIN_IDS": train_ids, "TEST_IDS": [],
        "TRAIN_DIR": str(folder / "train"), "MODEL_FILE": str(folder / "model.pt")}))


def run_set(work: Path, name: str, folds: list[tuple[list, list]], data: dict, args) -> dict:
    """Train each fold, label its test tiles at every factor both ways; the summed confusion matrices
    {mode: {factor: counts}} and the steps of each fold."""
    confusion: dict = {}
    steps = []
    settings = {mode: setting for mode, setting in zip(MODES, ("image", PIXEL_SIZES[name]))}
    for fold, (train_ids, test_ids) in enumerate(folds):
        folder = work / "runs" / name / f"fold{fold}"
        cfg = fold_config(folder, data, train_ids, args.seed, TRAIN_MINUTES=args.minutes)
        print(f"{name} fold {fold + 1}: training on {', '.join(train_ids)} for {args.minutes:g} min ...", flush=True)
        start = time.perf_counter()
        weights = train(cfg, progress=False)
        steps.append(int(load_checkpoint(weights)["iteration"]))
        print(f"  {steps[-1]} steps in {time.perf_counter() - start:.0f} s; labelling {', '.join(test_ids)}", flush=True)
        for mode, setting in settings.items():
            ids = [tile_id(tile, factor) for tile in test_ids for factor in args.factors]
            summary = run_inference(cfg.replace(INFER_PIXEL_SIZE=setting), weights, folder / "inference" / str(setting),
                                    ids, progress=False, force=True)
            for image in summary.images:
                factor = float(image.name.rsplit("_x", 1)[1]) / 100
                counts = np.array(image.metrics["confusion_matrix"])
                confusion.setdefault(mode, {}).setdefault(factor, np.zeros_like(counts))
                confusion[mode][factor] += counts
    return {"confusion": confusion, "steps": steps, "class_names": cfg.CLASS_NAMES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=list(PIXEL_SIZES), default=list(PIXEL_SIZES))
    parser.add_argument("--minutes", type=float, default=3.0, help="training time of each fold (TRAIN_MINUTES)")
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
                        help="pixel sizes to label, as multiples of the training tiles'")
    parser.add_argument("--seed", type=int, default=0, help="SEED of every training run")
    add_shared_arguments(parser, "eoseg-pixel-size")
    args = parser.parse_args()
    shared, work = start(args)
    results = {"machine": describe_hardware("cpu"), "minutes": args.minutes, "sets": {}}
    lines = ["| set | pixel size | as is: OA | mean F1 | building F1 | at the training size: OA | mean F1 | building F1 "
             "| the default |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in args.sets:
        folds, data = prepare(shared, work, name, args.factors)
        run = run_set(work, name, folds, data, args)
        rows = []
        for factor in args.factors:
            cells, row = [], {"factor": factor}
            for mode in MODES:
                metrics = metrics_from_confusion(run["confusion"][mode][factor], run["class_names"])
                building = metrics["per_class"]["building"]["f1"]
                cells += [percent(metrics["overall_accuracy"]), percent(metrics["mean_f1"]), percent(building)]
                row[mode] = {"overall_accuracy": metrics["overall_accuracy"], "mean_f1": metrics["mean_f1"],
                             "building_f1": building, "confusion_matrix": run["confusion"][mode][factor].tolist()}
            # which of the two the default does: the grid it chooses for such an image
            size = PIXEL_SIZES[name]
            example = raster_info(Path(data["DATA_ROOT"]) / f"{tile_id(folds[0][1][0], factor)}.tif")
            row["default"] = "as is" if labelling_grid(example, [size, size], None) is None else "at the training size"
            rows.append(row)
            lines.append(f"| {name} ({' + '.join(map(str, run['steps']))} steps) | {factor * size:.3g} m ({factor:g}x) | "
                         + " | ".join(cells) + f" | {row['default']} |")
        results["sets"][name] = {"pixel_size_m": PIXEL_SIZES[name], "steps": run["steps"], "rows": rows}
    print(f"\n{args.minutes:g} min of training per fold; both folds' test tiles scored\n")
    print("\n".join(lines))
    write_results(work, results)


if __name__ == "__main__":
    run_main(main)
