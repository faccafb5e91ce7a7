"""Training benchmark: eoseg's training loop and data pipeline against a naive reference.

    python bench/training.py [--patches 160] [--steps 1] [--batch 10] [--workers 2] [--data-batches 150]
                             [--networks segnet:1.0 demo] [--device cpu] [--skip-data]

Makes ``--patches`` 256 x 256 patches from synthetic sample scenes, written both as PNG
files and as an LMDB, then measures, on the CPU, in patches per second:

- data pipeline alone: (a) the naive reader, one process decoding PNG pairs to float32
  with a random flip, as the method's first version fed its network; (b) eoseg's LMDB
  reader (eoseg.data: records of uint8, flips and rotations) with 0 and ``--workers``
  DataLoader workers;
- training step at batch ``--batch`` of each of ``--networks``: ``MODEL:WIDTH`` with the
  method's recipe (``segnet:1.0``: the full SegNet), or ``demo``: the demo's network and
  recipe (the sample preset's). (a) For the full SegNet, the naive reference loop,
  single-process PNG loading, float32, the network as built; (b) eoseg's Trainer (LMDB,
  ``--workers`` workers) in float32, and with PRECISION=auto (bfloat16 autocast with
  channels_last where the device computes bfloat16 natively; left out where auto is
  float32). The naive loop is timed over ``--steps`` steps after one warm-up step; eoseg's
  two precisions alternate step by step (Trainer.step, ``--steps`` each after a warm-up)
  and the median step is reported, as timings on shared cores vary by a third from one
  minute to the next. The machine line names the CPU and its flags, or the GPU
  (``--device cuda``);
- the optimizer step alone of each of ``--networks`` (its recipe's SGD or AdamW, gradients
  given), torch's loop over the tensors against the fused step eoseg uses: median of 10.

Nothing here is a test; keep the machine otherwise idle while it runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from eoseg.config import load_config  # noqa: E402
from eoseg.data import StreamBatchSampler, training_data  # noqa: E402
from eoseg.lmdb_store import write_lmdb  # noqa: E402
from eoseg.metadata import data_signature  # noqa: E402
from eoseg.models import build_model, model_from_config, uses_encoder  # noqa: E402
from eoseg.precision import describe_hardware, resolve_precision  # noqa: E402
from eoseg.recipe import make_optimizer, recipe_overrides  # noqa: E402
from eoseg.sample import generate_scene  # noqa: E402
from eoseg.device import Processes  # noqa: E402
from eoseg.train import Trainer, training_memory_format  # noqa: E402

PATCH = 256
SCENE = 1024
FULL_SEGNET = "segnet:1.0"
BENCH_GEOMETRY = ("PATCH_SIZE", "BATCH_SIZE", "ITERATIONS", "LR_STEPS")  # the benchmark's, whatever the recipe


def network_overrides(spec: str) -> list[str]:
    """A ``--networks`` entry as overrides: "demo" (the sample preset's network and recipe) or
    MODEL:WIDTH with the method's recipe (the ISPRS presets')."""
    if spec == "demo":
        return recipe_overrides(load_config(), BENCH_GEOMETRY)
    name, _, width = spec.partition(":")
    method = recipe_overrides(load_config(overrides=["DATASET=vaihingen"]), BENCH_GEOMETRY)
    return [*method, f"MODEL={name}", f"MODEL_WIDTH={width or 1.0}"]


def network_name(cfg) -> str:
    encoder = f" on {cfg.ENCODER}" if uses_encoder(cfg.MODEL) else ""
    return f"{cfg.MODEL}{encoder}, width {cfg.MODEL_WIDTH:g}"


def make_patches(folder: Path, count: int, cfg) -> None:
    """``count`` patches of synthetic scenes as PNG pairs in folder/png and as folder/lmdb/train.lmdb."""
    png = folder / "png"
    png.mkdir(parents=True)
    records = []
    per_scene = (SCENE // PATCH) ** 2
    for scene in range((count + per_scene - 1) // per_scene):
        image, labels, _ = generate_scene((SCENE, SCENE), np.random.default_rng(scene))
        for row in range(0, SCENE, PATCH):
            for col in range(0, SCENE, PATCH):
                if len(records) == count:
                    break
                patch = np.ascontiguousarray(image[:, row:row + PATCH, col:col + PATCH])
                patch_labels = np.ascontiguousarray(labels[row:row + PATCH, col:col + PATCH])
                Image.fromarray(np.moveaxis(patch, 0, -1)).save(png / f"{len(records):05d}_image.png")
                Image.fromarray(patch_labels).save(png / f"{len(records):05d}_label.png")
                records.append((patch, patch_labels))
    meta = {"signature": data_signature(cfg), "split": "train", "patch_shape": [3, PATCH, PATCH], "dtype": "uint8"}
    (folder / "lmdb").mkdir()
    write_lmdb(folder / "lmdb" / "train.lmdb", iter(records), len(records), meta, progress=False)


# ---------------------------------------------------------------- the naive reference
def naive_batches(png: Path, count: int, batch: int, rng: np.random.Generator):
    """The method's first feeding: decode PNG pairs in the training process, float32, random flips."""
    while True:
        images, labels = [], []
        for index in rng.integers(0, count, size=batch):
            image = np.asarray(Image.open(png / f"{index:05d}_image.png"), dtype=np.float32).transpose(2, 0, 1) / 255
            label = np.asarray(Image.open(png / f"{index:05d}_label.png"), dtype=np.int64)
            if rng.random() < 0.5:
                image, label = image[:, :, ::-1], label[:, ::-1]
            if rng.random() < 0.5:
                image, label = image[:, ::-1, :], label[::-1, :]
            images.append(np.ascontiguousarray(image))
            labels.append(np.ascontiguousarray(label))
        yield torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


def naive_training(png: Path, count: int, batch: int, steps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model("segnet", 3, 6, 1.0).train().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    batches = naive_batches(png, count, batch, np.random.default_rng(0))
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # after the warm-up step
        images, labels = next(batches)
        loss = criterion(model(images.to(device)), labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss.item()  # waits for a GPU to finish
    return steps * batch / (time.perf_counter() - start)


# ---------------------------------------------------------------- eoseg
def eoseg_training_rates(cfgs: dict[str, object], steps: int, device: torch.device) -> dict[str, float]:
    """Patches/s of eoseg's training step (the next batch from its LMDB loader, then Trainer.step:
    forward, loss, backward, optimizer step) under each config: the median over ``steps`` steps
    after one warm-up.

    The configs' steps alternate, so that a slow spell of the machine (timings on shared cores vary
    by a third from one minute to the next) hits them alike."""
    trainers = {name: Trainer(cfg, Processes(), device, progress=False) for name, cfg in cfgs.items()}
    batches = {name: iter(DataLoader(trainer.data, batch_sampler=trainer.sampler, num_workers=trainer.cfg.NUM_WORKERS))
               for name, trainer in trainers.items()}
    seconds = {name: [] for name in cfgs}
    for _ in range(steps + 1):
        for name, trainer in trainers.items():
            started = time.perf_counter()  # waiting for the batch counts, as in training
            images, labels = next(batches[name])
            trainer.step(images, labels).item()  # .item(): waits for a GPU to finish
            seconds[name].append(time.perf_counter() - started)
    return {name: cfgs[name].BATCH_SIZE / statistics.median(times[1:]) for name, times in seconds.items()}


def optimizer_step_seconds(cfg, device: torch.device, fused: bool, memory_format: torch.memory_format,
                           repeats: int = 10) -> float:
    """Median seconds of one step of ``cfg``'s optimizer over its network held in ``memory_format``, the gradients given."""
    torch.manual_seed(0)
    model = model_from_config(cfg).to(device, memory_format=memory_format)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer = make_optimizer(cfg, model, fused=fused)
    seconds = []
    for _ in range(repeats + 2):  # two warm-up steps: the optimizer's state is made in the first
        start = time.perf_counter()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[2:])


def data_rate(batches, count: int) -> float:
    next(batches)  # warm-up: worker start, first reads
    start = time.perf_counter()
    patches = sum(len(next(batches)[0]) for _ in range(count))
    return patches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=160)
    parser.add_argument("--steps", type=int, default=1, help="timed training steps per variant (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-batches", type=int, default=150, help="batches timed per data pipeline")
    parser.add_argument("--networks", nargs="+", default=[FULL_SEGNET, "demo"],
                        help="networks of eoseg's training steps: MODEL:WIDTH (the method's recipe) or demo")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where the training steps run")
    parser.add_argument("--skip-data", action="store_true", help="time the training steps only")
    args = parser.parse_args()
    device = torch.device(args.device)
    auto, reason = resolve_precision("auto", device)
    print(f"machine: {describe_hardware(device)}")
    print(f"precision auto here: {auto} ({reason})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="eoseg-bench-") as tmp:
        folder = Path(tmp)
        bench = [f"PATCH_SIZE={PATCH}", f"BATCH_SIZE={args.batch}", f"NUM_WORKERS={args.workers}",
                 f"LMDB_DIR={folder / 'lmdb'}", f"MODEL_FILE={folder / 'model.pt'}", "TRAIN_MINUTES=0",
                 "LOG_EVERY=1", "VAL_EVERY=0", "SNAPSHOT_EVERY=100000", f"DEVICE={args.device}", "LR_STEPS=[]"]
        cfg = load_config(overrides=bench)
        started = time.perf_counter()
        make_patches(folder, args.patches, cfg)
        print(f"{args.patches} patches of {PATCH} x {PATCH} written as PNG and LMDB in {time.perf_counter() - started:.0f} s")

        png = folder / "png"
        if not args.skip_data:
            naive = naive_batches(png, args.patches, args.batch, np.random.default_rng(1))
            rows.append(("data", "naive: PNG decode, float32, flips, 1 process", data_rate(naive, args.data_batches)))
            data = training_data(cfg)
            for workers in (0, args.workers):
                loader = DataLoader(data, batch_sampler=StreamBatchSampler(len(data), args.batch, seed=0), num_workers=workers)
                rows.append(("data", f"eoseg: LMDB uint8, flips + rotations, {workers} workers", data_rate(iter(loader), args.data_batches)))
                del loader
            for row in rows:
                print(f"  {row[1]:<58} {row[2]:8.1f} patches/s", flush=True)

        networks = {spec: load_config(overrides=[*network_overrides(spec), *bench]) for spec in args.networks}
        if FULL_SEGNET in networks:
            rows.append((network_name(networks[FULL_SEGNET]), "naive: PNG loading in-process, float32",
                         naive_training(png, args.patches, args.batch, args.steps, device)))
            print(f"  {rows[-1][1]:<58} {rows[-1][2]:8.2f} patches/s", flush=True)
        precisions = ["float32"] + (["auto"] if auto != "float32" else [])
        for number, (spec, network) in enumerate(networks.items()):
            runs = {setting: network.replace(TRAIN_DIR=str(folder / f"train-{number}-{setting}"), PRECISION=setting)
                    for setting in precisions}
            for setting, rate in eoseg_training_rates(runs, args.steps, device).items():
                label = "float32" if setting == "float32" else f"auto: {auto} autocast, channels_last"
                rows.append((network_name(network), f"eoseg: LMDB, {args.workers} workers, {label}", rate))
                print(f"  {spec}: {rows[-1][1]:<50} {rate:8.2f} patches/s", flush=True)

        steps = []
        for network in networks.values():
            # the weights' layout as "auto" trains them: the fused CPU step copies channels_last tensors unless told
            memory_format = training_memory_format(network, auto)
            layout = "channels_last" if memory_format == torch.channels_last else "contiguous"
            loop, fused = (optimizer_step_seconds(network, device, fused, memory_format) for fused in (False, True))
            steps.append((network_name(network), network.OPTIMIZER, layout, loop, fused))

    print()
    print("| optimizer step alone | optimizer | weights (as auto trains them) | loop over tensors | fused (eoseg) | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for name, optimizer, layout, loop, fused in steps:
        print(f"| {name} | {optimizer} | {layout} | {loop * 1000:.1f} ms | {fused * 1000:.1f} ms | {loop / fused:.2f}x |")

    print()
    print("| part | variant | patches/s | vs first row | vs eoseg float32 |")
    print("|---|---|---:|---:|---:|")
    parts = dict.fromkeys(part for part, _, _ in rows)
    for part in parts:
        part_rows = [(label, rate) for p, label, rate in rows if p == part]
        float32 = next((rate for label, rate in part_rows if label.startswith("eoseg") and label.endswith("float32")), None)
        what = ("data pipeline alone (256 x 256 x 3)" if part == "data"
                else f"training step, {part}, batch {args.batch}, {PATCH} x {PATCH}, {args.device}")
        for label, rate in part_rows:
            versus = f"{rate / float32:.2f}x" if float32 and label.startswith("eoseg") else ""
            print(f"| {what} | {label} | {rate:.2f} | {rate / part_rows[0][1]:.2f}x | {versus} |")


if __name__ == "__main__":
    main()
