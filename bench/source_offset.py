"""A DSM on another height datum than the training tiles': what the labels become, and what the check says.

    python bench/source_offset.py [--steps 400] [--offsets -47 -10 -5 0 5 10 20 47 200] [--seeds 0 1]
                                  [--size 512] [--workdir DIR]

A raw DSM (heights above sea level) stacked after the image as an extra source learns the training
tiles' heights: a test tile whose DSM lies on another datum (ellipsoidal against orthometric heights:
+47 m in Germany) or from a town at another altitude shifts every pixel by the same metres, which the
normalisation turns into a shift of many standard deviations. Its magnitude hardly changes (258 m
against 305 m), so a check of the values' scale alone passes it.

The bundled sample (8 tiles of ``--size`` px, make_sample.py's scenes, seed 0): a U-Net (the sample preset's
network and recipe) trains from the tiles (TRAIN_SOURCE "tiles") on tiles 1-6 with the image's IRRG
and the DSM (its mean and std over the training tiles as normalisation) for ``--steps`` per seed, and
labels test tiles 7-8 with their DSM raised by each of ``--offsets`` metres, the value check off so
that every offset is scored. Beside each: how many training standard deviations the DSM's mean moved,
as the check measures it on the test tiles, and what the check makes of it with the weights' record
(refused, noted or passed). The synthetic scenes are not a benchmark: the table shows the size of the
effect, not a score to expect on real data. Prints the machine and the table; writes DIR/results.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eoseg.checkpoint import load_checkpoint  # noqa: E402
from eoseg.config import load_config, override_arguments  # noqa: E402
from eoseg.convert import color_file_to_labels  # noqa: E402
from eoseg.errors import EosegError  # noqa: E402
from eoseg.infer import run_inference  # noqa: E402
from eoseg.metrics import metrics_from_confusion, percent  # noqa: E402
from eoseg.normalization import BandStatistics, check_value_scale, source_shift  # noqa: E402
from eoseg.precision import describe_hardware  # noqa: E402
from eoseg.sample import write_sample_dataset  # noqa: E402
from eoseg.tiles import tile_stack  # noqa: E402
from eoseg.train import train  # noqa: E402
from real_data import run_main, write_results  # noqa: E402  (bench/)

COPIED = ("IMAGE_PATTERN", "GT_COLOR_PATTERN", "GT_ERODED_PATTERN", "LABEL_PATTERN")


def offset_id(tile_id: str, offset: float) -> str:
    return f"{tile_id}dsm{offset:+g}"


def write_offset_tile(cfg, tile_id: str, offset: float) -> str:
    """Tile ``tile_id`` again under a new id, its DSM raised by ``offset`` metres; the new id."""
    new_id = offset_id(tile_id, offset)
    for pattern in COPIED:
        shutil.copyfile(cfg.tile_path(pattern, tile_id), cfg.tile_path(pattern, new_id))
    with rasterio.open(cfg.tile_path("DSM_PATTERN", tile_id)) as src:
        profile, heights = src.profile, src.read()
    with rasterio.open(cfg.tile_path("DSM_PATTERN", new_id), "w", **profile) as dst:
        dst.write(heights + np.float32(offset))
    return new_id


def sample_config(work: Path, seed: int, steps: int, folder: Path):
    """The sample preset, trained from the tiles in ``folder``, labelling with the value check off."""
    return load_config(overrides=override_arguments({
        "DATASET": "sample", "DATA_ROOT": str(work / "data"), "TRAIN_SOURCE": "tiles", "VAL_EVERY": 0, "SEED": seed,
        "DEVICE": "cpu", "ITERATIONS": steps, "TRAIN_MINUTES": 0.0, "SNAPSHOT_EVERY": 10**6,
        "TRAIN_DIR": str(folder / "train"), "MODEL_FILE": str(folder / "model.pt"), "WRITE_COLOR": False,
        "WRITE_PREVIEW": False, "INFER_VALUE_CHECK": False}))


def with_dsm(cfg):
    """``cfg`` with its DSM stacked after the image, normalised by the training tiles' DSM."""
    heights = BandStatistics(1)
    for tile_id in cfg.tile_ids("train"):
        with rasterio.open(cfg.tile_path("DSM_PATTERN", tile_id)) as src:
            pixels = src.read(1, masked=True)
            heights.add(pixels.data[None], ~np.ma.getmaskarray(pixels))
    mean, std = heights.normalization(0, 1)
    return cfg.replace(EXTRA_SOURCES=[{"pattern": cfg.DSM_PATTERN, "bands": [1], "band_names": ["DSM"],
                                       "mean": mean, "std": std}])


def verdict(cfg, record: dict, tile: str) -> tuple[float, str]:
    """How many training standard deviations the DSM's mean of ``tile`` moved, and what the check does."""
    measured = tile_stack(cfg, tile).sample_statistics()
    (_, positions), = cfg.source_bands
    shift = source_shift(record, measured, positions)
    try:
        note = check_value_scale(record, measured, len(cfg.BANDS), tile, refuse=True, sources=cfg.source_bands)
    except EosegError:
        return shift, "refused"
    return shift, "note" if note else "passed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="training steps of each seed (ITERATIONS)")
    parser.add_argument("--offsets", type=float, nargs="+", default=[-47, -10, -5, 0, 5, 10, 20, 47, 200],
                        help="metres added to the test tiles' DSM")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="SEED of each training run")
    parser.add_argument("--size", type=int, default=512, help="side of the sample's tiles, in pixels")
    parser.add_argument("--workdir", default=str(Path("/tmp") / "eoseg-source-offset"))
    args = parser.parse_args()
    work = Path(args.workdir)
    print(f"machine: {describe_hardware('cpu')}", flush=True)
    cfg = sample_config(work, args.seeds[0], args.steps, work)
    test_ids = cfg.tile_ids("test")
    write_sample_dataset(cfg, cfg.tile_ids("train") + test_ids, size=args.size, seed=0)
    for tile_id in cfg.tile_ids("train") + test_ids:
        color_file_to_labels(cfg.tile_path("GT_COLOR_PATTERN", tile_id), cfg.tile_path("LABEL_PATTERN", tile_id),
                             cfg.palette)
    cfg = with_dsm(cfg)
    print(f"DSM normalisation (training tiles): mean {cfg.EXTRA_SOURCES[0]['mean'][0]:g} m, "
          f"std {cfg.EXTRA_SOURCES[0]['std'][0]:g} m", flush=True)
    ids = {offset: [write_offset_tile(cfg, tile_id, offset) for tile_id in test_ids] for offset in args.offsets}
    confusion: dict[float, np.ndarray] = {}
    checks: dict[float, list] = {}
    for seed in args.seeds:
        folder = work / f"seed{seed}"
        seeded = with_dsm(sample_config(work, seed, args.steps, folder))
        print(f"seed {seed}: training for {args.steps} steps ...", flush=True)
        began = time.perf_counter()
        weights = train(seeded, progress=False)
        print(f"  {time.perf_counter() - began:.0f} s; labelling {len(test_ids)} tiles at {len(args.offsets)} offsets",
              flush=True)
        record = load_checkpoint(weights)["signature"]["input_statistics"]
        if seed == args.seeds[0]:  # the check depends on the training tiles only, not on the seed
            checks = {offset: [verdict(seeded, record, tile) for tile in ids[offset]] for offset in args.offsets}
        summary = run_inference(seeded, weights, folder / "inference", [i for tiles in ids.values() for i in tiles],
                                progress=False, force=True)
        by_name = {image.name: image for image in summary.images}
        for offset, tiles in ids.items():
            for tile in tiles:  # an image is named by its file
                counts = np.array(by_name[seeded.tile_path("IMAGE_PATTERN", tile).stem].metrics["confusion_matrix"])
                confusion[offset] = confusion.get(offset, 0) + counts
    lines = ["| DSM offset | shift measured (tiles " + " / ".join(test_ids) + ") | the check | OA | mean F1 | building F1 |"
             " impervious F1 |", "|---:|---|---|---:|---:|---:|---:|"]
    rows = []
    for offset in args.offsets:
        metrics = metrics_from_confusion(confusion[offset], cfg.CLASS_NAMES)
        shifts = " / ".join(f"{shift:.2f}" for shift, _ in checks[offset])
        outcomes = [outcome for _, outcome in checks[offset]]
        decided = outcomes[0] if len(set(outcomes)) == 1 else " / ".join(outcomes)
        per_class = metrics["per_class"]
        lines.append(f"| {offset:+g} m | {shifts} | {decided} | {percent(metrics['overall_accuracy'])} | "
                     f"{percent(metrics['mean_f1'])} | {percent(per_class['building']['f1'])} | "
                     f"{percent(per_class['impervious surfaces']['f1'])} |")
        rows.append({"offset_m": offset, "checks": checks[offset], "overall_accuracy": metrics["overall_accuracy"],
                     "mean_f1": metrics["mean_f1"], "confusion_matrix": confusion[offset].tolist()})
    print(f"\nsample, DSM stacked after IRRG, {args.steps} steps per seed, seeds {args.seeds} summed; "
          "shift: the DSM mean's move in training standard deviations\n")
    print("\n".join(lines))
    write_results(work, {"machine": describe_hardware("cpu"), "steps": args.steps, "seeds": args.seeds, "rows": rows})


if __name__ == "__main__":
    run_main(main)
