"""Correctness of the automatic precision (bfloat16 where the hardware has it) against float32.

    python bench/precision.py [--work /tmp/eoseg-precision] [--steps 700] [--full-steps 200] [--full-batch 4]

Runs the pipeline's own scripts, with every folder under ``--work`` (the repository's
data/ and runs/ are left alone), on the CPU:

1. the demo's data: the synthetic sample, its label maps, patches and LMDB (demo.sh's steps);
2. the demo's network and recipe (the sample preset's) trained twice for ``--steps``
   iterations (instead of the demo's time budget: equal steps), with PRECISION=float32 and
   PRECISION=auto: the loss curves side by side (mean loss per 100 iterations) and the final
   validation mean F1 of each;
3. the float32-trained demo weights labelling the test tiles with INFER_PRECISION=float32
   and with INFER_PRECISION=auto: label agreement and the metrics of each;
4. a full-width SegNet (MODEL_WIDTH=1.0, the method's SGD) trained ``--full-steps`` iterations of batch
   ``--full-batch`` with PRECISION=auto (bfloat16 where the CPU has it: affordable on a
   CPU), then labelling the test tiles in float32 and in auto: label agreement;
5. the labels' own noise floor: both networks labelling, in float32, the test tiles with one
   grey level added to every pixel (clipped at the data type's top) against the tiles as
   they are: how many labels a change far below any sensor's noise moves without a change
   of precision, beside the share that bfloat16 moves.

It measures agreement, not speed: it may run on a busy machine. A stage whose outputs are
in ``--work`` already is kept, so an interrupted run resumes; remove ``--work`` to redo it.
Prints a Markdown summary and writes it to WORK/summary.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eoseg.config import load_config  # noqa: E402
from eoseg.precision import describe_hardware, resolve_precision  # noqa: E402
from eoseg.recipe import recipe_overrides  # noqa: E402

DEMO = load_config()  # the sample preset: the demo's network and recipe
# the method's recipe (the ISPRS presets'), on the demo's patches and windows
METHOD_RECIPE = recipe_overrides(load_config(overrides=["DATASET=vaihingen"]), ("PATCH_SIZE", "WINDOW", "STRIDE"))
METRICS = ("overall_accuracy", "mean_f1", "mean_iou")


def script(name: str, *arguments: str) -> None:
    command = [sys.executable, str(ROOT / name), *arguments]
    print("$ " + " ".join(command[1:]), flush=True)
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    precision_lines = [line for line in result.stdout.splitlines() if line.startswith("precision:")]
    for line in precision_lines:
        print("  " + line, flush=True)
    if result.returncode:
        raise SystemExit(f"{name} failed with status {result.returncode}:\n{result.stdout[-3000:]}")


def train(work: Path, data: list[str], name: str, settings: list[str]) -> Path:
    folder = work / name
    model = folder / "model.pt"
    if not model.is_file():
        started = time.perf_counter()
        script("training.py", *data, *settings, f"TRAIN_DIR={folder / 'train'}", f"MODEL_FILE={model}")
        print(f"  {name}: trained in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def label(work: Path, data: list[str], weights: Path, name: str, settings: list[str]) -> Path:
    out = work / name
    if not (out / "metrics.json").is_file():
        script("inference.py", *data, *settings, "--weights", str(weights), "--out", str(out),
               "WRITE_PREVIEW=False", "WRITE_COLOR=False")
    return out


def read_log(folder: Path) -> list[dict]:
    with open(folder / "train" / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def loss_per_window(rows: list[dict], window: int = 100) -> dict[int, float]:
    """Mean of the logged losses in each ``window`` iterations, by the window's last iteration."""
    sums: dict[int, list[float]] = {}
    for row in rows:
        if row["loss"]:
            end = -(-int(row["iteration"]) // window) * window
            sums.setdefault(end, []).append(float(row["loss"]))
    return {end: float(np.mean(values)) for end, values in sorted(sums.items())}


def agreement(first: Path, second: Path) -> tuple[float, int]:
    """Fraction of labelled pixels (not nodata) with the same class in both runs, and their count."""
    same = total = 0
    for path in sorted(first.glob("*_labels.tif")):
        with rasterio.open(path) as a, rasterio.open(second / path.name) as b:
            x, y = a.read(1), b.read(1)
            valid = (x != a.nodata) & (y != b.nodata)
            same += int((x[valid] == y[valid]).sum())
            total += int(valid.sum())
    if not total:
        raise SystemExit(f"no label maps to compare in {first}")
    return same / total, total


def brightened_data(work: Path) -> Path:
    """A copy of the demo's data whose (8-bit) test tiles have one grey level added to every pixel and band."""
    target = work / "data-plus-one"
    if not (target / "done").is_file():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(work / "data", target)
        for tile_id in DEMO.TEST_IDS:
            path = target / DEMO.IMAGE_PATTERN.format(id=tile_id)
            with rasterio.open(path, "r+") as raster:
                pixels = raster.read()
                raster.write(np.minimum(pixels.astype(np.int64) + 1, np.iinfo(pixels.dtype).max).astype(pixels.dtype))
        (target / "done").write_text("")
    return target


def folders(work: Path, data_root: Path) -> list[str]:
    """The pipeline's folders as overrides: the tiles in ``data_root``, everything else under ``work``."""
    return [f"DATA_ROOT={data_root}", f"PATCHES_DIR={work / 'patches'}", f"LMDB_DIR={work / 'lmdb'}",
            f"INFER_DIR={work / 'inference'}", "DEVICE=cpu"]


def overall(out: Path) -> dict:
    report = json.loads((out / "metrics.json").read_text())
    return {"precision": report["precision"], **{m: report["overall"][m] for m in METRICS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/eoseg-precision", help="every output goes here")
    parser.add_argument("--steps", type=int, default=700,
                        help="demo training iterations (about what the demo's TRAIN_MINUTES hold on an AMX CPU)")
    parser.add_argument("--full-steps", type=int, default=200, help="full-width SegNet training iterations")
    parser.add_argument("--full-batch", type=int, default=4, help="full-width SegNet batch")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    auto = resolve_precision("auto", "cpu")
    lines = [f"machine: {describe_hardware('cpu')}", f"auto precision here: {auto[0]} ({auto[1]})", ""]
    print("\n".join(lines), flush=True)

    data = folders(work, work / "data")
    if not (work / "lmdb" / "test.lmdb").exists():
        script("make_sample.py", "--force", *data)
        script("convert_gt.py", "--from-color", *data)
        script("extract_images.py", "--force", *data)
        script("create_lmdb.py", "--force", *data)

    # 2. the demo's network, trained in float32 and in auto at equal steps
    demo = ["TRAIN_MINUTES=0", f"ITERATIONS={args.steps}", f"VAL_EVERY={args.steps}"]
    trained = {p: train(work, data, f"demo-{p}", [*demo, f"PRECISION={p}"]) for p in ("float32", "auto")}
    logs = {p: read_log(folder) for p, folder in trained.items()}
    curves = {p: loss_per_window(rows) for p, rows in logs.items()}
    lines += [f"## The demo's network ({DEMO.MODEL}, {DEMO.ENCODER}, width {DEMO.MODEL_WIDTH:g}, batch {DEMO.BATCH_SIZE}), "
              f"{args.steps} iterations, PRECISION float32 vs auto ({auto[0]})",
              "", "| iterations | mean loss, float32 | mean loss, auto | difference |", "|---|---:|---:|---:|"]
    for end, value in curves["float32"].items():
        other = curves["auto"][end]
        lines.append(f"| {end - 99}-{end} | {value:.4f} | {other:.4f} | {100 * (other - value) / value:+.1f}% |")
    finals = {p: next(r for r in reversed(rows) if r["val_mean_f1"]) for p, rows in logs.items()}
    lines += ["", "final validation (iteration " + finals["float32"]["iteration"] + "): " + "; ".join(
        f"{p}: OA {100 * float(r['val_overall_accuracy']):.2f}%, mean F1 {100 * float(r['val_mean_f1']):.2f}%"
        for p, r in finals.items())
        + f"; mean F1 difference {100 * (float(finals['auto']['val_mean_f1']) - float(finals['float32']['val_mean_f1'])):+.2f} points", ""]

    # 3. the float32 demo weights labelled in float32 and in auto
    weights = trained["float32"] / "model.pt"
    runs = {p: label(work, data, weights, f"label-demo-{p}", [f"INFER_PRECISION={p}"]) for p in ("float32", "auto")}
    same, pixels = agreement(runs["float32"], runs["auto"])
    bfloat16_agreement = {"demo": same}
    scores = {p: overall(out) for p, out in runs.items()}
    lines += ["## The demo's float32 weights labelling the test tiles, INFER_PRECISION float32 vs auto", "",
              f"label agreement: {100 * same:.3f}% of {pixels} pixels", "",
              "| INFER_PRECISION | ran in | OA | mean F1 | mean IoU |", "|---|---|---:|---:|---:|"]
    for p, s in scores.items():
        lines.append(f"| {p} | {s['precision']} | " + " | ".join(f"{100 * s[m]:.2f}" for m in METRICS) + " |")
    lines.append("| difference (points) | | " + " | ".join(
        f"{100 * (scores['auto'][m] - scores['float32'][m]):+.2f}" for m in METRICS) + " |")
    auto_run = label(work, data, trained["auto"] / "model.pt", "label-demo-auto-trained", ["INFER_PRECISION=auto"])
    s = overall(auto_run)
    lines += ["", f"the auto-trained demo weights labelled in auto ({s['precision']}), as the demo runs on this machine: "
              + ", ".join(f"{m} {100 * s[m]:.2f}%" for m in METRICS), ""]

    # 4. a full-width SegNet
    full = [*METHOD_RECIPE, "TRAIN_MINUTES=0", "MODEL_WIDTH=1.0", f"ITERATIONS={args.full_steps}",
            f"BATCH_SIZE={args.full_batch}", "BASE_LR=0.01", "LR_STEPS=[]", "VAL_EVERY=0", "SNAPSHOT_EVERY=50"]
    folder = train(work, data, "full-auto", [*full, "PRECISION=auto"])
    full_runs = {p: label(work, data, folder / "model.pt", f"label-full-{p}", [*METHOD_RECIPE, f"INFER_PRECISION={p}"])
                 for p in ("float32", "auto")}
    same, pixels = agreement(full_runs["float32"], full_runs["auto"])
    bfloat16_agreement["full"] = same
    scores = {p: overall(out) for p, out in full_runs.items()}
    lines += [f"## Full SegNet (MODEL_WIDTH=1.0) trained {args.full_steps} iterations of batch {args.full_batch} "
              f"with PRECISION=auto ({auto[0]}), labelling the test tiles", "",
              f"label agreement, INFER_PRECISION auto vs float32: {100 * same:.3f}% of {pixels} pixels; "
              + "; ".join(f"{p} ({s['precision']}): OA {100 * s['overall_accuracy']:.2f}%, mean F1 {100 * s['mean_f1']:.2f}%"
                          for p, s in scores.items()), ""]

    # 5. the noise floor: float32 labels of the test tiles one grey level brighter
    brighter = folders(work, brightened_data(work))
    lines += ["## The labels' noise floor: float32 labels of the test tiles one grey level brighter", "",
              "| weights | float32 vs auto | float32 vs float32, tiles +1 grey level |", "|---|---:|---:|"]
    for name, tag, weights_file, recipe, float32_run in (
            ("the demo's float32 weights", "demo", weights, [], runs["float32"]),
            ("full SegNet", "full", folder / "model.pt", METHOD_RECIPE, full_runs["float32"])):
        shifted = label(work, brighter, weights_file, f"label-{tag}-float32-plus-one", [*recipe, "INFER_PRECISION=float32"])
        lines.append(f"| {name} | {100 * bfloat16_agreement[tag]:.3f}% | {100 * agreement(float32_run, shifted)[0]:.3f}% |")
    text = "\n".join(lines) + "\n"
    (work / "summary.md").write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
