"""Images on another value scale than the training imagery's: what the labels become, and what the check says.

    python bench/value_scale.py [--steps 250] [--factors 0.25 0.5 1 2 4 8] [--norms 255 scene]
                                [--seed 0] [--shared ../shared/data] [--workdir DIR]

The real SpaceNet scene from ``../shared/data`` (900 x 900, one panchromatic band, uint16 values of a
few hundred; its building footprints as GeoJSON), cut into west and east halves as
``bench/real_data.py`` cuts it. In each fold a U-Net (config.py's default network and recipe)
trains on one half for ``--steps`` and labels the other half with its values multiplied by each of
``--factors`` (rounded, clipped to uint16: one data type throughout, so the type check passes), as
another scale or encoding would give them: 12-bit values against 16-bit ones are 16 times, 11-bit
against 12-bit 2 times. The halves are labelled through inference.py's path with
``INFER_VALUE_CHECK = False``, so that every factor is scored; the table says beside each what
the check makes of it with the weights' record (ratio measured on the image, and refused, noted or
passed). Each of ``--norms`` trains its own weights: ``255`` divides by 255 (config.py's default),
``scene`` normalises by the training half's own mean and std (what ``check_data.py --write-norm``
writes). The two folds' confusion matrices are summed, so every pixel of the scene is scored once
per factor.

First, where real images of one data set lie without any factor (``--natural``, the sets of
``bench/real_data.py``: the ISPRS crops' halves, the WHU cities in two groups, the SpaceNet
halves): each test tile's ratio, as the check measures it, against its fold's training tiles
(their statistics as training records them). Prints the machine and both tables; writes
DIR/results.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eoseg.checkpoint import load_checkpoint  # noqa: E402
from eoseg.config import load_config, override_arguments  # noqa: E402
from eoseg.errors import EosegError  # noqa: E402
from eoseg.infer import run_inference  # noqa: E402
from eoseg.metrics import metrics_from_confusion, percent  # noqa: E402
from eoseg.normalization import BandStatistics, check_value_scale, value_scale  # noqa: E402
from eoseg.precision import describe_hardware  # noqa: E402
from eoseg.tiles import tile_stack  # noqa: E402
from eoseg.train import train  # noqa: E402
from real_data import PREPARE, add_shared_arguments, prepare_spacenet, run_main, start, write_results  # noqa: E402  (bench/)


def scaled_id(side: str, factor: float) -> str:
    return f"{side}_x{factor:g}"


def write_scaled(folder: Path, side: str, factor: float) -> None:
    """The half ``side`` with its values times ``factor``, on its grid, as ``scaled_id``.tif beside it."""
    with rasterio.open(folder / f"{side}.tif") as src:
        profile, pixels = src.profile, src.read().astype(np.float64)
    with rasterio.open(folder / f"{scaled_id(side, factor)}.tif", "w", **profile) as dst:
        dst.write(np.clip(np.round(pixels * factor), 0, np.iinfo(np.uint16).max).astype(np.uint16))


def verdict(cfg, record: dict, tile: str) -> tuple[float, str]:
    """The ratio the check measures on ``tile`` against the weights' record, and what it does."""
    measured = tile_stack(cfg, tile).sample_statistics()
    ratio = value_scale(record, measured, len(cfg.BANDS))
    try:
        note = check_value_scale(record, measured, len(cfg.BANDS), tile, refuse=True)
    except EosegError:
        return ratio, "refused"
    return ratio, "note" if note else "passed"


def natural_ratios(shared: Path, work: Path, sets: list[str]) -> dict[str, dict[str, float]]:
    """{set: {test tile: ratio}}: each fold's test tiles against its training tiles, nothing scaled."""
    ratios: dict[str, dict[str, float]] = {}
    for name in sets:
        for config_file in PREPARE[name](shared, work):
            cfg = load_config(config_file)
            training = BandStatistics(cfg.num_bands)
            for tile in cfg.tile_ids("train"):  # every valid pixel, as extraction and training count them
                stack = tile_stack(cfg, tile)
                pixels = stack.read()
                training.add(pixels, stack.valid_mask(pixels))
            for tile in cfg.tile_ids("test"):
                measured = tile_stack(cfg, tile).sample_statistics()
                ratios.setdefault(name, {})[tile] = value_scale(training.record(), measured, len(cfg.BANDS))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=250, help="training steps of each fold (ITERATIONS)")
    parser.add_argument("--factors", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
                        help="multiples of the test half's values to label")
    parser.add_argument("--norms", nargs="+", choices=["255", "scene"], default=["255", "scene"])
    parser.add_argument("--seed", type=int, default=0, help="SEED of every training run")
    parser.add_argument("--natural", nargs="*", choices=list(PREPARE), default=list(PREPARE),
                        help="the real sets whose own tiles' ratios are measured first (none: skip)")
    add_shared_arguments(parser, "eoseg-value-scale")
    args = parser.parse_args()
    shared, work = start(args)
    results: dict = {"machine": describe_hardware("cpu"), "steps": args.steps, "natural": {}, "norms": {}}
    if args.natural:
        results["natural"] = natural_ratios(shared, work, args.natural)
        print("\nratios of real test tiles to their fold's training tiles, as the check measures them:")
        for name, ratios in results["natural"].items():
            print(f"  {name}: " + ", ".join(f"{tile} {ratio:.2f}" for tile, ratio in ratios.items()), flush=True)
    folds = prepare_spacenet(shared, work)
    lines = ["| normalisation | values | ratio measured | the check | OA | mean F1 | building F1 | building IoU |",
             "|---|---:|---|---|---:|---:|---:|---:|"]
    for norm in args.norms:
        confusion: dict[float, np.ndarray] = {}
        checks: dict[float, list] = {}
        for fold, config_file in enumerate(folds):
            folder = work / "runs" / f"norm{norm}" / f"fold{fold}"
            cfg = load_config(config_file, override_arguments({
                "TRAIN_SOURCE": "tiles", "VAL_EVERY": 0, "SEED": args.seed, "DEVICE": "cpu", "ITERATIONS": args.steps,
                "TRAIN_MINUTES": 0.0, "SNAPSHOT_EVERY": 10**6, "TRAIN_DIR": str(folder / "train"),
                "MODEL_FILE": str(folder / "model.pt"), "WRITE_COLOR": False, "WRITE_PREVIEW": False,
                "INFER_VALUE_CHECK": False}))
            (train_side,), (test_side,) = cfg.tile_ids("train"), cfg.tile_ids("test")
            if norm == "scene":  # the training half's own mean and std, as check_data.py --write-norm measures them
                with rasterio.open(Path(cfg.DATA_ROOT) / f"{train_side}.tif") as src:
                    pixels = src.read(1, masked=True).compressed().astype(np.float64)
                cfg = cfg.replace(NORM_MEAN=[float(f"{pixels.mean():.6g}")], NORM_STD=[float(f"{pixels.std():.6g}")])
            print(f"normalisation {norm}, fold {fold + 1}: training on {train_side} for {args.steps} steps ...", flush=True)
            began = time.perf_counter()
            weights = train(cfg, progress=False)
            print(f"  {time.perf_counter() - began:.0f} s; labelling {test_side} at {len(args.factors)} scales", flush=True)
            record = load_checkpoint(weights)["signature"]["input_statistics"]
            for factor in args.factors:
                write_scaled(Path(cfg.DATA_ROOT), test_side, factor)
                checks.setdefault(factor, []).append(verdict(cfg, record, scaled_id(test_side, factor)))
            ids = [scaled_id(test_side, factor) for factor in args.factors]
            summary = run_inference(cfg, weights, folder / "inference", ids, progress=False, force=True)
            for image in summary.images:
                factor = float(image.name.rsplit("_x", 1)[1])
                counts = np.array(image.metrics["confusion_matrix"])
                confusion[factor] = confusion.get(factor, 0) + counts
        rows = []
        for factor in args.factors:
            metrics = metrics_from_confusion(confusion[factor], cfg.CLASS_NAMES)
            building = metrics["per_class"]["building"]
            ratios = " / ".join(f"{ratio:.3g}" for ratio, _ in checks[factor])
            outcomes = [outcome for _, outcome in checks[factor]]
            decided = outcomes[0] if len(set(outcomes)) == 1 else " / ".join(outcomes)
            lines.append(f"| {norm} | {factor:g}x | {ratios} | {decided} | {percent(metrics['overall_accuracy'])} | "
                         f"{percent(metrics['mean_f1'])} | {percent(building['f1'])} | {percent(building['iou'])} |")
            rows.append({"factor": factor, "checks": checks[factor], "overall_accuracy": metrics["overall_accuracy"],
                         "mean_f1": metrics["mean_f1"], "building_f1": building["f1"], "building_iou": building["iou"],
                         "confusion_matrix": confusion[factor].tolist()})
        results["norms"][norm] = rows
    print(f"\nSpaceNet, {args.steps} steps per fold, seed {args.seed}; both halves scored at each scale "
          "(ratio measured and the check: fold 1 / fold 2)\n")
    print("\n".join(lines))
    write_results(work, results)


if __name__ == "__main__":
    run_main(main)
