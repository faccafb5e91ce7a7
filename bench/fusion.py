"""Does the nDSM help? IRRG-only SegNet against fusion with the nDSM, at equal CPU budget.

    python bench/fusion.py [--iterations 600] [--workdir DIR]

Generates the bundled sample (8 tiles of 512 px: IRRG image, ground truth, DSM, nDSM),
then trains from the same seed and scores on the held-out tiles 7-8 (eroded ground truth):

- ``irrg``: SegNet on IRRG, the sample_fusion preset's recipe (MODEL_WIDTH 0.25, --iterations
  steps of 16 patches of 128 px);
- ``early``: SegNet on IRRG + nDSM stacked (early fusion): the same cost per step, so the
  same number of steps;
- ``fusenet``: FuseNet, an IRRG encoder and an nDSM encoder summed at every block. A step
  costs more, so it gets fewer steps: as many as fit in the time ``irrg`` needs for its
  own, from the cost per step of each model measured here first (learning-rate steps
  scaled alike).

Prints each model's metric table and the confusion between buildings and the two classes
the IRRG image confuses them with (low vegetation, impervious surfaces), and writes them
all to DIR/results.json. Training runs on however many threads torch gets: run it on a
quiet machine, as other work on the same cores slows training by far more than its share.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from eoseg.config import load_config, override_arguments  # noqa: E402
from eoseg.convert import color_file_to_labels  # noqa: E402
from eoseg.extract import extract_patches  # noqa: E402
from eoseg.infer import run_inference  # noqa: E402
from eoseg.lmdb_store import create_lmdb  # noqa: E402
from eoseg.metrics import format_table  # noqa: E402
from eoseg.models import model_from_config  # noqa: E402
from eoseg.normalization import Normalization  # noqa: E402
from eoseg.sample import write_sample_dataset  # noqa: E402
from eoseg.recipe import make_loss, make_optimizer  # noqa: E402
from eoseg.train import supervised_loss, train  # noqa: E402

FUSION = load_config(overrides=["DATASET=sample_fusion"])  # the preset: IRRG + the sample's nDSM, FuseNet
VARIANTS = {
    "irrg": {"MODEL": "segnet", "EXTRA_SOURCES": []},
    "early": {"MODEL": "segnet", "EXTRA_SOURCES": FUSION.EXTRA_SOURCES},
    "fusenet": {"MODEL": FUSION.MODEL, "EXTRA_SOURCES": FUSION.EXTRA_SOURCES},
}
BUILDING, CONFUSED_WITH = "building", ("low vegetation", "impervious surfaces")


def variant_config(work: Path, name: str, iterations: int, lr_steps: list[int]):
    folder = work / name
    values = {"DATASET": "sample_fusion", **VARIANTS[name], "DATA_ROOT": str(work / "data"),
              "ITERATIONS": iterations, "LR_STEPS": lr_steps,
              "VAL_EVERY": 0, "SNAPSHOT_EVERY": iterations, "DEVICE": "cpu",
              "PATCHES_DIR": str(folder / "patches"), "LMDB_DIR": str(folder / "lmdb"),
              "TRAIN_DIR": str(folder / "train"), "MODEL_FILE": str(folder / "model.pt"),
              "INFER_DIR": str(folder / "inference"), "WRITE_PREVIEW": False, "WRITE_COLOR": False}
    return load_config(overrides=override_arguments(values))


def seconds_per_step(cfg, steps: int = 6) -> float:
    """Time of one training step of ``cfg``'s model on a random batch (after two warm-up steps)."""
    torch.manual_seed(0)
    model = model_from_config(cfg).train()
    optimizer = make_optimizer(cfg, model)
    criterion = make_loss(cfg, torch.device("cpu"))
    normalization = Normalization.from_config(cfg)
    images = torch.randint(0, 256, (cfg.BATCH_SIZE, cfg.num_bands, cfg.PATCH_SIZE, cfg.PATCH_SIZE), dtype=torch.uint8)
    labels = torch.randint(0, cfg.num_classes, (cfg.BATCH_SIZE, cfg.PATCH_SIZE, cfg.PATCH_SIZE))
    timings = []
    for step in range(steps + 2):
        start = time.perf_counter()
        loss = supervised_loss(criterion, model(normalization.apply(images)), labels, cfg.AUX_LOSS_WEIGHT)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:
            timings.append(time.perf_counter() - start)
    return float(np.median(timings))


def building_confusion(metrics: dict) -> dict:
    """Building pixels labelled as the confused classes and back, as counts and shares."""
    names = metrics["class_names"]
    cm = np.asarray(metrics["confusion_matrix"])
    b = names.index(BUILDING)
    result = {"building_pixels": int(cm[b].sum())}
    for name in CONFUSED_WITH:
        other = names.index(name)
        result[f"building_as_{name}"] = int(cm[b, other])
        result[f"{name}_as_building"] = int(cm[other, b])
    confused = sum(result[f"building_as_{n}"] + result[f"{n}_as_building"] for n in CONFUSED_WITH)
    result["confused_pixels"] = confused
    result["confused_share_of_building"] = confused / max(1, result["building_pixels"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=600, help="training steps of the IRRG-only model (the sample_fusion preset's ITERATIONS)")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "eoseg-fusion"))
    args = parser.parse_args()
    work = Path(args.workdir)
    steps_fraction = [step / FUSION.ITERATIONS for step in FUSION.LR_STEPS]

    sample = variant_config(work, "irrg", args.iterations, [])
    ids = sample.tile_ids("train") + sample.tile_ids("test")
    write_sample_dataset(sample, ids, size=512, seed=0)
    for tile_id in ids:
        color_file_to_labels(sample.tile_path("GT_COLOR_PATTERN", tile_id), sample.tile_path("LABEL_PATTERN", tile_id),
                             sample.palette)

    costs = {name: seconds_per_step(variant_config(work, name, args.iterations, [])) for name in VARIANTS}
    results = {}
    for name in VARIANTS:
        # equal budget: the IRRG model's steps at its cost per step
        iterations = args.iterations if name != "fusenet" else max(1, round(args.iterations * costs["irrg"] / costs[name]))
        cfg = variant_config(work, name, iterations, [round(f * iterations) for f in steps_fraction])
        extract_patches(cfg, cfg.PATCHES_DIR, force=True, progress=False)
        create_lmdb(cfg, cfg.PATCHES_DIR, cfg.LMDB_DIR, force=True, progress=False)
        start = time.perf_counter()
        weights = train(cfg, progress=True)
        training_s = time.perf_counter() - start
        summary = run_inference(cfg, weights, cfg.INFER_DIR, cfg.tile_ids("test"), progress=False, force=True)
        results[name] = {"iterations": iterations, "seconds_per_step": costs[name], "training_s": training_s,
                         "metrics": summary.metrics, "building_confusion": building_confusion(summary.metrics)}

    print(f"\nmachine: {torch.get_num_threads()} threads, torch {torch.__version__}; sample tiles 1-6 train, 7-8 test")
    for name, result in results.items():
        print(f"\n== {name}: {VARIANTS[name]['MODEL']}, {result['iterations']} steps, "
              f"{result['seconds_per_step']:.3f} s/step measured, training took {result['training_s']:.0f} s")
        print(format_table(result["metrics"]))
        confusion = result["building_confusion"]
        print(f"building <-> low vegetation / impervious: {confusion['confused_pixels']} px confused, "
              f"{100 * confusion['confused_share_of_building']:.2f}% of {confusion['building_pixels']} building px "
              + ", ".join(f"{k} {v}" for k, v in confusion.items() if "_as_" in k))
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {work / 'results.json'}")


if __name__ == "__main__":
    main()
