"""Real data: eoseg's own-data recipe against the method's recipe, at equal CPU time.

    python bench/real_data.py [--minutes 1.25 | --steps N] [--sets vaihingen potsdam whu spacenet]
                              [--networks segnet unet unetformer] [--recipes method eoseg] [--also KEY=VALUE ...]
                              [--seeds 0 1 2] [--shared ../shared/data] [--workdir DIR]

Real imagery that no one here made, from ``../shared/data`` (see its README):

- ``vaihingen``: the 512 x 512 crop of ISPRS Vaihingen area 1 (IRRG, 9 cm), eroded labels
  coded 0 = boundary, 1..6 = the six classes;
- ``potsdam``: the 512 x 512 crop of ISPRS Potsdam tile 2_10 (RGB, 5 cm), the same coding;
- ``whu``: ten 512 x 512 RGB samples of the WHU building data set's global cities, each from
  another city, with black/white building masks;
- ``spacenet``: SpaceNet's 900 x 900 panchromatic GeoTIFF (one band, uint16, 0.5 m) with its
  building footprints as polygons (GeoJSON, EPSG:32616), rasterised on each half's grid: real
  16-bit imagery and real vector labels. (Not ``sample_fp_mask.tif``: that mask has no
  georeference and its footprints are not this scene's roofs.)

Split in space, never a test pixel in training, two folds each: an ISPRS crop or the SpaceNet
scene is cut into its left and right halves, one trains and the other is labelled, then the other
way round; the WHU cities are split in two groups of five (alternating in name order), likewise.
The confusion matrices of the two folds are summed, so every real pixel is scored once.

Each data set is described by a config file that names only the data (folders, tile ids,
bands, classes, label values) and the time budget, as a user writes one. Each of
``--networks`` (full width, from config.py's registry) trains with each of ``--recipes``:

- ``method``: the method's recipe, taken from the ``vaihingen`` preset (SGD 0.01 with
  momentum, the encoder at half the rate, step decay, cross-entropy, batch 10 of 256 px,
  uniform blending); with ``segnet``, the method as published;
- ``eoseg``: what that config file gets, config.py's defaults: eoseg's own-data recipe;
  with config.py's MODEL (``unet``), eoseg's default as a user gets it;
- each ``--also KEY=VALUE ...`` adds one more: eoseg's recipe with those names changed (e.g.
  ``--also COLOR_JITTER=0.0``), to measure a change against it in the same run.

Every run trains from random crops of the training tiles (TRAIN_SOURCE="tiles", the
method's sampling) for ``--minutes`` of training-step time (TRAIN_MINUTES: the learning-rate
schedule laid over the budget), or for ``--steps`` steps (ITERATIONS: every variant sees as
many patches, whatever else the machine does; a time budget gives each run a few steps more or
fewer, which moved one fold's mean F1 by up to 11 points), from scratch (no pretrained weights
are available offline), in the precision PRECISION gives (the same for every run), and is scored on the held-out
half through inference.py's own path. There is no validation during training (it would pick
the checkpoint on test pixels). Each of ``--seeds`` (SEED: initialisation, crops, augmentation)
repeats every run. Prints the machine, a table of OA, mean F1, mean IoU and per-class F1 for each
data set, network and recipe (with several seeds: their mean, and the lowest and highest mean F1),
and writes everything to DIR/results.json.

Training runs on however many threads torch gets: run it on a quiet machine, as other work
on the same cores slows training by far more than its share and shrinks every budget's steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eoseg.config import load_config, override_arguments  # noqa: E402
from eoseg.convert import color_file_to_labels  # noqa: E402
from eoseg.errors import EosegError  # noqa: E402
from eoseg.infer import run_inference  # noqa: E402
from eoseg.io import read_raster, write_raster  # noqa: E402
from eoseg.metrics import metrics_from_confusion, percent  # noqa: E402
from eoseg.precision import describe_hardware, resolve_precision  # noqa: E402
from eoseg.recipe import recipe_overrides  # noqa: E402
from eoseg.train import train  # noqa: E402

METHOD = load_config(overrides=["DATASET=vaihingen"])  # the method's recipe, classes and palette: the ISPRS presets'
ISPRS_CROPS = {  # set: (image, labels, band names)
    "vaihingen": ("isprs_real/vaihingen_area1_crop512_irrg.png", "isprs_real/vaihingen_area1_crop512_labels_noboundary.png",
                  ["IR", "R", "G"]),
    "potsdam": ("isprs_real/potsdam_2_10_crop512_rgb.png", "isprs_real/potsdam_2_10_crop512_labels_noboundary.png",
                ["R", "G", "B"]),
}
WHU = "buildings_real/whu_global_cities"
SPACENET = ("geotiff_real/sample_geotiff.tif", "geotiff_real/geotiff_labels.geojson")  # image, building polygons
SETS = (*ISPRS_CROPS, "whu", "spacenet")

RECIPES = {"method": recipe_overrides(METHOD, ("MODEL",)), "eoseg": []}
NETWORKS = ("segnet", "unet", "unetformer")
DEFAULT = ("eoseg", load_config(overrides=["DATASET="]).MODEL)  # what a config naming only its data trains


def config_text(values: dict) -> str:
    """A config file: one ``NAME = value`` line per entry."""
    return "".join(f"{name} = {value!r}\n" for name, value in values.items())


def isprs_halves(shared: Path, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The crop's left and right halves: {side: (image, labels as the file codes them)}."""
    image_file, label_file, _ = ISPRS_CROPS[name]
    image, labels = read_raster(shared / image_file), read_raster(shared / label_file)
    half = image.shape[2] // 2
    return {"left": (image[:, :, :half], labels[:, :, :half]), "right": (image[:, :, half:], labels[:, :, half:])}


def isprs_data(name: str) -> dict:
    """The config entries that describe a crop's bands, classes and label coding."""
    return {"BAND_NAMES": ISPRS_CROPS[name][2], "CLASS_NAMES": METHOD.CLASS_NAMES, "PALETTE": METHOD.PALETTE,
            # the crops' coding: 0 = boundary (ignored), 1..6 = the classes
            "LABEL_VALUES": {0: "ignore", **{value: value - 1 for value in range(1, 7)}}}


WHU_DATA = {"BAND_NAMES": ["R", "G", "B"], "CLASS_NAMES": ["background", "building"], "PALETTE": [[0, 0, 0], [255, 255, 255]]}


def add_shared_arguments(parser: argparse.ArgumentParser, workdir: str) -> None:
    """--shared and --workdir (default: ``workdir`` in the temporary folder)."""
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"), help="the shared real data")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / workdir))


def write_results(work: Path, results: dict) -> None:
    """``results`` as DIR/results.json, and where."""
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nresults: {work / 'results.json'}")


def run_main(main) -> None:
    """``main()``, with a refusal printed as one line."""
    try:
        main()
    except EosegError as error:
        raise SystemExit(f"error: {error}") from None


def start(args: argparse.Namespace) -> tuple[Path, Path]:
    """The shared data and work folders, once the data is found; prints the machine."""
    shared, work = Path(args.shared), Path(args.workdir)
    files = [shared / WHU, *(shared / files[0] for files in ISPRS_CROPS.values()), *(shared / file for file in SPACENET)]
    if not all(path.exists() for path in files):
        raise SystemExit(f"error: the real data is not under {shared}; pass --shared")
    precision, why = resolve_precision(load_config().PRECISION, "cpu")
    print(f"machine: {describe_hardware('cpu')}\nPRECISION here: {precision} ({why})", flush=True)
    return shared, work


def prepare_isprs(shared: Path, work: Path, name: str) -> list[Path]:
    """Cut the crop into left and right halves; one data-only config file per fold."""
    folder = work / "data" / name
    for side, (image, labels) in isprs_halves(shared, name).items():
        write_raster(folder / f"{side}.png", image)
        write_raster(folder / f"{side}_labels.png", labels)
    data = {
        "DATA_ROOT": str(folder), "IMAGE_PATTERN": "{id}.png", "LABEL_PATTERN": "{id}_labels.png",
        "GT_COLOR_PATTERN": "", "GT_ERODED_PATTERN": "", "DSM_PATTERN": "", "NDSM_PATTERN": "",
        "BANDS": [1, 2, 3], **isprs_data(name),
    }
    return [write_fold_config(work, f"{name}_{i}", {**data, "TRAIN_IDS": [train_side], "TEST_IDS": [test_side]})
            for i, (train_side, test_side) in enumerate((("left", "right"), ("right", "left")))]


def prepare_whu(shared: Path, work: Path) -> list[Path]:
    """Building masks (black/white RGB) to label maps as convert_gt.py does; cities in two groups."""
    source = shared / WHU
    cities = sorted(path.name[:-len("_gt.png")] for path in source.glob("*_gt.png"))
    data = {
        "DATA_ROOT": str(source), "IMAGE_PATTERN": "{id}.png", "GT_COLOR_PATTERN": "{id}_gt.png",
        "LABEL_PATTERN": str(work / "data" / "whu" / "{id}.png"), "GT_ERODED_PATTERN": "", "DSM_PATTERN": "",
        "NDSM_PATTERN": "", "BANDS": [1, 2, 3], **WHU_DATA, "IGNORE_COLOR": [],
    }
    first = write_fold_config(work, "whu_0", {**data, "TRAIN_IDS": cities[0::2], "TEST_IDS": cities[1::2]})
    cfg = load_config(first)
    for city in cities:
        color_file_to_labels(cfg.tile_path("GT_COLOR_PATTERN", city), cfg.tile_path("LABEL_PATTERN", city), cfg.palette)
    return [first, write_fold_config(work, "whu_1", {**data, "TRAIN_IDS": cities[1::2], "TEST_IDS": cities[0::2]})]


def prepare_spacenet(shared: Path, work: Path) -> list[Path]:
    """Cut the scene into west and east halves, each a GeoTIFF with its own transform; the footprint
    polygons, one file for both, are rasterised on each half's grid as every step reads them.

    Normalised as config.py normalises 8-bit bands (0 and 255) for its one band, as a user's first
    config would: its values of a few hundred then lie within what eoseg's scale check allows; pass
    ``--also NORM_MEAN=[...] NORM_STD=[...]`` to compare another normalisation."""
    folder = work / "data" / "spacenet"
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(shared / SPACENET[0]) as image:
        half = image.width // 2
        for side, window in (("west", Window(0, 0, half, image.height)),
                             ("east", Window(half, 0, image.width - half, image.height))):
            grid = {"width": window.width, "height": window.height, "transform": image.window_transform(window)}
            with rasterio.open(folder / f"{side}.tif", "w", **{**image.profile, **grid}) as dst:
                dst.write(image.read(window=window))
    data = {
        "DATA_ROOT": str(folder), "IMAGE_PATTERN": "{id}.tif", "LABEL_PATTERN": str((shared / SPACENET[1]).resolve()),
        "GT_COLOR_PATTERN": "", "GT_ERODED_PATTERN": "", "DSM_PATTERN": "", "NDSM_PATTERN": "",
        "BANDS": [1], "BAND_NAMES": ["PAN"], "NORM_MEAN": [0.0], "NORM_STD": [255.0], "CLASS_NAMES": WHU_DATA["CLASS_NAMES"],
        "PALETTE": WHU_DATA["PALETTE"], "IGNORE_COLOR": [],
    }
    return [write_fold_config(work, f"spacenet_{i}", {**data, "TRAIN_IDS": [train_side], "TEST_IDS": [test_side]})
            for i, (train_side, test_side) in enumerate((("west", "east"), ("east", "west")))]


PREPARE = {"vaihingen": lambda shared, work: prepare_isprs(shared, work, "vaihingen"),
           "potsdam": lambda shared, work: prepare_isprs(shared, work, "potsdam"),
           "whu": prepare_whu, "spacenet": prepare_spacenet}


def write_fold_config(work: Path, name: str, values: dict) -> Path:
    path = work / "configs" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_text(values))
    return path


def run(config_file: Path, network: str, recipe: str, budget: dict, seed: int, work: Path) -> dict:
    """Train ``network`` with ``recipe`` on the fold's training tiles for the ``budget`` ({"minutes": m} or
    {"steps": n}) from ``seed``, label and score its test tiles."""
    folder = work / "runs" / config_file.stem / re.sub(r"[^\w.-]+", "_", f"{network}-{recipe}-seed{seed}")
    values = {"TRAIN_SOURCE": "tiles", "VAL_EVERY": 0, "SEED": seed,
              "DEVICE": "cpu", "LOG_EVERY": 5, "SNAPSHOT_EVERY": 10**6, "TRAIN_DIR": str(folder / "train"),
              "MODEL_FILE": str(folder / "model.pt"), "INFER_DIR": str(folder / "inference"),
              "WRITE_COLOR": False, "WRITE_PREVIEW": False}
    cfg = load_config(config_file, [*RECIPES[recipe], f"MODEL={network}", *override_arguments(values)])
    if "steps" in budget:  # the recipe's LR_STEPS at the same fractions of the run, as TRAIN_MINUTES lays them
        steps = budget["steps"]
        cfg = cfg.replace(ITERATIONS=steps, TRAIN_MINUTES=0.0,
                          LR_STEPS=[max(1, round(steps * step / cfg.ITERATIONS)) for step in cfg.LR_STEPS])
    else:
        cfg = cfg.replace(TRAIN_MINUTES=budget["minutes"])
    start = time.perf_counter()
    weights = train(cfg, progress=False)
    wall_s = time.perf_counter() - start
    with open(Path(cfg.TRAIN_DIR) / "log.csv", newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    summary = run_inference(cfg, weights, cfg.INFER_DIR, cfg.tile_ids("test"), progress=False, force=True)
    return {"seed": seed, "iterations": int(last["iteration"]), "patches": int(last["iteration"]) * cfg.BATCH_SIZE,
            "training_wall_s": wall_s, "confusion_matrix": summary.metrics["confusion_matrix"],
            "class_names": cfg.CLASS_NAMES}


def row(name: str, run_name: str, folds: list[dict]) -> tuple[str, dict]:
    """A table row: the metrics of each seed's folds' summed confusion matrices, their mean over the seeds
    (with the lowest and highest mean F1 where there are several); the pooled metrics of each seed."""
    seeds = sorted({fold["seed"] for fold in folds})
    by_seed = {seed: metrics_from_confusion(np.sum([f["confusion_matrix"] for f in folds if f["seed"] == seed], axis=0),
                                            folds[0]["class_names"]) for seed in seeds}
    runs = list(by_seed.values())

    def mean(pick) -> float | None:
        values = [pick(metrics) for metrics in runs]
        return None if any(v is None for v in values) else float(np.mean(values))

    class_names = runs[0]["class_names"]
    per_class = " | ".join(percent(mean(lambda m, c=c: m["per_class"][c]["f1"])) if runs[0]["per_class"][c]["support"]
                           else "-" for c in class_names)
    building = mean(lambda m: m["per_class"]["building"]["iou"]) if "building" in class_names else None
    mean_f1 = percent(mean(lambda m: m["mean_f1"]))
    if len(runs) > 1:
        mean_f1 += f" ({percent(min(m['mean_f1'] for m in runs))}-{percent(max(m['mean_f1'] for m in runs))})"
    steps = ", ".join("+".join(str(f["iterations"]) for f in folds if f["seed"] == seed) for seed in seeds)
    line = (f"| {name} | {run_name} | {steps} | {percent(mean(lambda m: m['overall_accuracy']))} | "
            f"{mean_f1} | {percent(mean(lambda m: m['mean_iou']))} | {percent(building)} | {per_class} |")
    return line, {str(seed): metrics for seed, metrics in by_seed.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=1.25, help="training time of every run (TRAIN_MINUTES)")
    budget.add_argument("--steps", type=int, help="training steps of every run instead (ITERATIONS)")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--also", nargs="+", action="append", metavar="KEY=VALUE", default=[],
                        help="also run eoseg's recipe with these names changed (repeat --also for more variants)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="repeat every run from each of these SEEDs")
    add_shared_arguments(parser, "eoseg-real-data")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    for changes in args.also:
        RECIPES[f"eoseg + {' '.join(changes)}"] = changes
        args.recipes.append(f"eoseg + {' '.join(changes)}")
    budget = {"steps": args.steps} if args.steps else {"minutes": args.minutes}
    budget_text = f"{args.steps} steps" if args.steps else f"{args.minutes:g} min"
    shared, work = start(args)
    results: dict = {}
    for name in args.sets:
        folds = PREPARE[name](shared, work)
        for network in args.networks:
            for recipe in args.recipes:
                run_name = f"{network}, {recipe} recipe" + (" (eoseg's default)" if (recipe, network) == DEFAULT else "")
                for seed in args.seeds:
                    for config_file in folds:
                        print(f"{config_file.stem}: {run_name}, seed {seed}, {budget_text} ...", flush=True)
                        results.setdefault(name, {}).setdefault(run_name, []).append(
                            run(config_file, network, recipe, budget, seed, work))
    seeds = f", seeds {' '.join(map(str, args.seeds))} (mean; mean F1: lowest-highest)" if len(args.seeds) > 1 else ""
    print(f"\n{budget_text} of training per run, two folds per set (steps: fold 1 + fold 2{', per seed' if seeds else ''}){seeds}")
    pooled: dict = {}
    for name, by_recipe in results.items():
        class_names = next(iter(by_recipe.values()))[0]["class_names"]
        print(f"\n| set | network, recipe | steps | OA | mean F1 | mean IoU | building IoU | {' | '.join(class_names)} (F1) |")
        print("|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(class_names))
        for run_name, folds in by_recipe.items():
            line, pooled.setdefault(name, {})[run_name] = row(name, run_name, folds)
            print(line)
    write_results(work, {"machine": describe_hardware("cpu"), **budget, "seeds": args.seeds, "folds": results,
                         "pooled": pooled})


if __name__ == "__main__":
    run_main(main)
