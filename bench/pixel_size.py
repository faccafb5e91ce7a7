"""Images of another pixel size than the training imagery's: labelled as they are, or at the training one.

    python bench/pixel_size.py [--minutes 3] [--factors 0.5 0.75 1 1.5 2 3] [--shared ../shared/data]
                               [--workdir DIR] [--seed 0]

Real imagery from ``../shared/data`` (see its README): the ten 512 x 512 RGB WHU building
samples, each from another city, about 0.3 m per pixel, with black/white building masks.
They carry no georeference; this writes each as a GeoTIFF at a nominal 0.3 m in UTM zone 33
(each city at its own place), so that eoseg can know their pixel size, as it would know a
user's orthophotos'.

Two folds, the cities split in two groups of five (alternating in name order): a U-Net
(config.py's default network and recipe) trains on one group for ``--minutes`` (the weights
record the 0.3 m of their tiles) and labels the other, whose images are resampled to each of
``--factors`` times 0.3 m first: averaged (as a coarser sensor integrates) for factors above
1, bilinear below, the masks by nearest neighbour. Each resampled image is labelled twice
through inference.py's path: with ``INFER_PIXEL_SIZE = "image"`` (as it is) and with
``INFER_PIXEL_SIZE = 0.3`` (at the training pixel size: averaged where the image is finer,
bilinear where it is coarser, the scores brought back onto the image's grid), and scored
against its own mask. The last column says which of the two the default
(``INFER_PIXEL_SIZE = None``) does. The two folds' confusion matrices are summed, so every city is
scored once. Prints the machine and a table of OA and building F1 and IoU per factor; writes
DIR/results.json.

A factor below 1 makes finer pixels from 0.3 m ones by interpolation: a sharper sensor's
image would hold detail that these lack, so that half of the table is only indicative.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
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
from eoseg.errors import EosegError  # noqa: E402
from eoseg.grid import labelling_grid  # noqa: E402
from eoseg.infer import run_inference  # noqa: E402
from eoseg.io import raster_info, read_raster  # noqa: E402
from eoseg.metrics import metrics_from_confusion, percent  # noqa: E402
from eoseg.precision import describe_hardware, resolve_precision  # noqa: E402
from eoseg.train import train  # noqa: E402

WHU = "buildings_real/whu_global_cities"
PIXEL_SIZE = 0.3  # metres: the WHU global cities' nominal ground sampling
CRS = "EPSG:32633"
MODES = {"as is": "image", "at the training 0.3 m": PIXEL_SIZE}  # name: INFER_PIXEL_SIZE


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


def tile_id(city: str, factor: float) -> str:
    return f"{city}_x{round(factor * 100):03d}"


def prepare(shared: Path, work: Path, factors: list[float]) -> list[str]:
    """Georeferenced copies of every city at 0.3 m, and of each at every factor; the city names."""
    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    cities = sorted(path.name[:-len("_gt.png")] for path in (shared / WHU).glob("*_gt.png"))
    for index, city in enumerate(cities):
        image = read_raster(shared / WHU / f"{city}.png")[:3]
        mask = (read_raster(shared / WHU / f"{city}_gt.png")[:1] > 127).astype(np.uint8)
        transform = from_origin(400000 + 1000 * index, 5000000, PIXEL_SIZE, PIXEL_SIZE)
        write_geotiff(folder / f"{city}.tif", image, transform)
        write_geotiff(folder / f"{city}_labels.tif", mask, transform)
        for factor in factors:
            pixels, at = resampled(image, transform, factor, Resampling.average if factor > 1 else Resampling.bilinear)
            labels, _ = resampled(mask, transform, factor, Resampling.nearest)
            write_geotiff(folder / f"{tile_id(city, factor)}.tif", pixels, at)
            write_geotiff(folder / f"{tile_id(city, factor)}_labels.tif", labels, at)
    return cities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="training time of each fold (TRAIN_MINUTES)")
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
                        help="pixel sizes to label, as multiples of the training tiles' 0.3 m")
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"), help="the shared real data")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "eoseg-pixel-size"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shared, work = Path(args.shared), Path(args.workdir)
    if not (shared / WHU).is_dir():
        raise SystemExit(f"error: the WHU samples are not under {shared / WHU}; pass --shared")
    precision, why = resolve_precision(load_config().PRECISION, "cpu")
    print(f"machine: {describe_hardware('cpu')}\nPRECISION here: {precision} ({why})", flush=True)
    cities = prepare(shared, work, args.factors)
    data = {"DATASET": "", "DATA_ROOT": str(work / "data"), "IMAGE_PATTERN": "{id}.tif", "LABEL_PATTERN": "{id}_labels.tif",
            "GT_COLOR_PATTERN": "", "GT_ERODED_PATTERN": "", "DSM_PATTERN": "", "NDSM_PATTERN": "",
            "BANDS": [1, 2, 3], "BAND_NAMES": ["R", "G", "B"], "CLASS_NAMES": ["background", "building"],
            "PALETTE": [[0, 0, 0], [255, 255, 255]], "IGNORE_COLOR": [], "TRAIN_SOURCE": "tiles", "VAL_EVERY": 0,
            "TRAIN_MINUTES": args.minutes, "SEED": args.seed, "DEVICE": "cpu", "SNAPSHOT_EVERY": 10**6,
            "WRITE_COLOR": False, "WRITE_PREVIEW": False}
    confusion: dict = {}
    steps = []
    for fold, (train_cities, test_cities) in enumerate(((cities[0::2], cities[1::2]), (cities[1::2], cities[0::2]))):
        folder = work / "runs" / f"fold{fold}"
        cfg = load_config(overrides=override_arguments({
            **data, "TRAIN_IDS": train_cities, "TEST_IDS": [], "TRAIN_DIR": str(folder / "train"),
            "MODEL_FILE": str(folder / "model.pt")}))
        print(f"fold {fold + 1}: training on {', '.join(train_cities)} for {args.minutes:g} min ...", flush=True)
        start = time.perf_counter()
        weights = train(cfg, progress=False)
        steps.append(int(load_checkpoint(weights)["iteration"]))
        print(f"  {steps[-1]} steps in {time.perf_counter() - start:.0f} s; labelling {', '.join(test_cities)}", flush=True)
        for mode, setting in MODES.items():
            run_cfg = cfg.replace(INFER_PIXEL_SIZE=setting)
            ids = [tile_id(city, factor) for city in test_cities for factor in args.factors]
            summary = run_inference(run_cfg, weights, folder / "inference" / str(setting), ids, progress=False, force=True)
            for image in summary.images:
                factor = float(image.name.rsplit("_x", 1)[1]) / 100
                counts = np.array(image.metrics["confusion_matrix"])
                confusion.setdefault(mode, {}).setdefault(factor, np.zeros_like(counts))
                confusion[mode][factor] += counts
    print(f"\n{args.minutes:g} min of training per fold ({' + '.join(map(str, steps))} steps); "
          f"both folds' test cities scored, {len(cities)} images per row")
    print("\n| pixel size | as is: OA | building F1 | building IoU | at the training 0.3 m: OA | building F1 | building IoU "
          "| the default |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    results = {"machine": describe_hardware("cpu"), "minutes": args.minutes, "steps": steps, "rows": []}
    for factor in args.factors:
        cells, row = [], {"factor": factor}
        for mode in MODES:
            metrics = metrics_from_confusion(confusion[mode][factor], ["background", "building"])
            building = metrics["per_class"]["building"]
            cells += [percent(metrics["overall_accuracy"]), percent(building["f1"]), percent(building["iou"])]
            row[mode] = {"overall_accuracy": metrics["overall_accuracy"], "building_f1": building["f1"],
                         "building_iou": building["iou"], "confusion_matrix": confusion[mode][factor].tolist()}
        grid = labelling_grid(raster_info(work / "data" / f"{tile_id(cities[0], factor)}.tif"), [PIXEL_SIZE, PIXEL_SIZE], None)
        row["default"] = "as is" if grid is None else "at the training 0.3 m"
        results["rows"].append(row)
        print(f"| {factor * PIXEL_SIZE:.3g} m ({factor:g}x) | " + " | ".join(cells) + f" | {row['default']} |")
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nresults: {work / 'results.json'}")


if __name__ == "__main__":
    try:
        main()
    except EosegError as error:
        raise SystemExit(f"error: {error}") from None
