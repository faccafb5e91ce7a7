"""Inference benchmark: eoseg's streaming predictor against the method's published loop.

    python bench/inference.py compare [--size 1024] [--width 1.0] [--repeat 3] [--device cpu] [--model segnet]   # throughput, peak RSS, label agreement
    python bench/inference.py memory [--size 20000] [--taller 4]    # peak RSS on a huge GeoTIFF, and on one 4x taller

``compare`` labels one synthetic tile with the same weights (the method's SegNet unless
``--model`` names another network of the registry; never the config's default), window 256, stride
128, batch 8, on the CPU: (a) the naive reference, a faithful re-implementation of the
method's PyTorch test loop (whole tile as float32, a float64 H x W x classes score array,
one copy per patch, the method's window generator), (b) eoseg's Predictor streaming the
GeoTIFF (uniform blending, batch norm folded, convolution + ReLU fused, channels_last) in
float32, and (c) the same with INFER_PRECISION=auto (bfloat16 where the device computes
it natively, eoseg.precision; the variant is left out where auto is float32). The machine
line names the CPU and its flags (or the GPU); ``--device cuda`` runs every variant on the
GPU. Each runs in its own process so that its peak RSS is its own; the variants
alternate ``--repeat`` times and the medians are reported, as timings on shared cores
vary. ``memory`` writes a synthetic GeoTIFF
(tiles of the sample generator) and labels it with inference's label_raster and a small
SegNet, then does the same for a raster ``--taller`` times taller.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from eoseg.config import load_config  # noqa: E402
from eoseg.precision import describe_hardware, resolve_precision  # noqa: E402

WINDOW, STRIDE, BATCH = 256, 128, 8


def bench_config(model: str, width: float, *overrides: str):
    """The benchmark's config: the network named explicitly, as the config's default network is the demo's."""
    return load_config(overrides=[f"MODEL={model}", f"MODEL_WIDTH={width}", *overrides])


# ---------------------------------------------------------------- the naive reference
def method_sliding_window(top, step, window_size):
    """The method's window generator (it repeats the last window when the stride overshoots)."""
    for x in range(0, top.shape[0], step):
        if x + window_size[0] > top.shape[0]:
            x = top.shape[0] - window_size[0]
        for y in range(0, top.shape[1], step):
            if y + window_size[1] > top.shape[1]:
                y = top.shape[1] - window_size[1]
            yield x, y, window_size[0], window_size[1]


def method_grouper(n, iterable):
    it = iter(iterable)
    while True:
        chunk = tuple(itertools.islice(it, n))
        if not chunk:
            return
        yield chunk


def naive_labels(model, tif: Path, num_classes: int, device: str) -> tuple[np.ndarray, int]:
    import rasterio

    with rasterio.open(tif) as src:
        img = 1 / 255 * np.asarray(np.moveaxis(src.read(), 0, -1), dtype="float32")
    pred = np.zeros(img.shape[:2] + (num_classes,))
    windows = 0
    with torch.no_grad():
        for coords in method_grouper(BATCH, method_sliding_window(img, step=STRIDE, window_size=(WINDOW, WINDOW))):
            image_patches = [np.copy(img[x:x + w, y:y + h]).transpose((2, 0, 1)) for x, y, w, h in coords]
            image_patches = torch.from_numpy(np.asarray(image_patches)).to(device)
            outs = model(image_patches).data.cpu().numpy()
            for out, (x, y, w, h) in zip(outs, coords):
                pred[x:x + w, y:y + h] += out.transpose((1, 2, 0))
            windows += len(coords)
    return np.argmax(pred, axis=-1).astype(np.uint8), windows


def eoseg_labels(model, tif: Path, cfg, device: str, precision: str = "float32", compile: bool = False,
                 onnx: bool = False) -> tuple[np.ndarray, int, float]:
    from eoseg.geometry import count_windows
    from eoseg.io import raster_info
    from eoseg.labelling import label_rows
    from eoseg.normalization import Normalization
    from eoseg.predict import Predictor
    from eoseg.tiles import image_stack

    warm_up = 0.0
    if onnx:  # exporting is paid once per weights file (export_onnx.py): time it apart
        from eoseg.onnx_engine import OnnxModel

        start = time.perf_counter()
        model = OnnxModel.from_module(model)
        warm_up = time.perf_counter() - start
    predictor = Predictor(model, Normalization.from_config(cfg), WINDOW, STRIDE, BATCH, device, precision=precision,
                          compile=compile, reuse_memory=cfg.REUSE_FREED_MEMORY)
    if compile:  # compiling happens on the first batch: time it apart, it is paid once per process
        start = time.perf_counter()
        predictor.predict(np.zeros((3, WINDOW, WINDOW * BATCH), dtype=np.uint8))  # one full batch
        warm_up += time.perf_counter() - start
    stack = image_stack(cfg, raster_info(tif, "image"))
    info = stack.info
    labels = np.empty((info.height, info.width), dtype=np.uint8)
    for rows in label_rows(cfg, predictor, stack):  # the labelling core of inference.py and validation
        labels[rows.row:rows.row + rows.labels.shape[0]] = rows.labels
    return labels, count_windows(info.height, info.width, WINDOW, STRIDE), warm_up


# ---------------------------------------------------------------- child processes
def child(args) -> None:
    """Run one variant and print its timings as JSON (the parent reads the peak RSS)."""
    from eoseg.checkpoint import load_model

    cfg = bench_config(args.model, args.width)
    model, _ = load_model(args.weights, cfg)
    model.eval().to(args.device)
    torch.set_num_threads(args.threads)
    warm_up = 0.0
    start = time.perf_counter()
    if args.variant == "naive":
        labels, windows = naive_labels(model, Path(args.tif), cfg.num_classes, args.device)
    else:
        labels, windows, warm_up = eoseg_labels(model, Path(args.tif), cfg, args.device,
                                                precision="auto" if args.variant == "eoseg-auto" else "float32",
                                                compile=args.variant == "eoseg-compiled",
                                                onnx=args.variant == "eoseg-onnxruntime")
    seconds = time.perf_counter() - start - warm_up
    np.save(args.labels, labels)
    print(json.dumps({"seconds": seconds, "windows": windows, "pixels": int(labels.size), "warm_up": warm_up}))


def run_child(arguments: list[str]) -> tuple[dict, float]:
    """Run this script as a child; return its JSON output and its peak RSS in MiB."""
    process = subprocess.Popen([sys.executable, __file__, *arguments], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read()
    process.stdout.close()
    if status != 0:
        raise SystemExit(f"child {arguments} failed with status {status}")
    return json.loads(output.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def run_measured(command: list[str], cwd: Path | None = None) -> tuple[float, float, str]:
    """Run ``command`` (a script of this project, as a user would); return its seconds, its peak RSS in MiB and its
    standard output. A failure stops the benchmark."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=cwd)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.stdout.close()
    if status != 0:
        raise SystemExit(f"{' '.join(map(str, command[:2]))} failed with status {status}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, output


def machine(device: str = "cpu") -> str:
    return f"{describe_hardware(device)}, Python {platform.python_version()}"


def add_workdir_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """--workdir, by default ``name`` in the temporary folder."""
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / name))


def work_folder(args: argparse.Namespace) -> Path:
    """The --workdir of ``args``, made if missing, once the machine is printed."""
    print(f"machine: {machine()}")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    return work


# ---------------------------------------------------------------- commands
def write_sample_tif(path: Path, height: int, width: int, seed: int = 0, labels_path: Path | None = None) -> None:
    """A synthetic IRRG GeoTIFF tiled from sample-generator scenes, written block by block; with ``labels_path``,
    their class ids too, on the same grid."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from eoseg.io import RasterInfo, RasterWriter
    from eoseg.sample import generate_scene

    tile = 512
    rng = np.random.default_rng(seed)
    scenes = [generate_scene((tile, tile), np.random.default_rng([seed, i]))[:2] for i in range(8)]
    info = RasterInfo(path, width, height, 3, "uint8", CRS.from_epsg(32632), from_origin(496000, 5420000, 0.09, 0.09), None)
    with contextlib.ExitStack() as files:
        image = files.enter_context(RasterWriter(path, info, 3, "uint8"))
        labels = files.enter_context(RasterWriter(labels_path, info, 1, "uint8")) if labels_path else None
        for top in range(0, height, tile):
            rows = min(tile, height - top)
            chosen = rng.integers(0, 8, -(-width // tile))
            strip = np.concatenate([scenes[i][0] for i in chosen], axis=2)
            image.write(np.ascontiguousarray(strip[:, :rows, :width]), top)
            if labels is not None:
                strip = np.concatenate([scenes[i][1] for i in chosen], axis=1)
                labels.write(np.ascontiguousarray(strip[None, :rows, :width]), top)


def compare(args) -> None:
    from eoseg.checkpoint import save_checkpoint
    from eoseg.models import model_from_config

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tif = work / f"compare_{args.size}.tif"
    if not tif.exists():
        write_sample_tif(tif, args.size, args.size)
    cfg = bench_config(args.model, args.width)
    torch.manual_seed(0)
    model = model_from_config(cfg)
    weights = save_checkpoint(work / f"{args.model}_w{args.width}.pt", cfg, model, iteration=0)
    auto, reason = resolve_precision("auto", args.device, "INFER_PRECISION")
    variants = (("naive", "eoseg") + (("eoseg-auto",) if auto != "float32" else ())
                + (("eoseg-compiled",) if args.compile else ()) + (("eoseg-onnxruntime",) if args.onnx else ()))
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    for _ in range(args.repeat):  # variants alternate, so that a slow spell of the machine hits them alike
        for variant in variants:
            labels = work / f"labels_{variant}.npy"
            timing, rss = run_child(["child", "--variant", variant, "--tif", str(tif), "--weights", str(weights),
                                     "--model", args.model, "--width", str(args.width), "--labels", str(labels),
                                     "--device", args.device,
                                     "--threads", str(args.threads)])
            runs[variant].append({**timing, "rss": rss, "labels": np.load(labels)})
    print(f"machine: {machine(args.device)}; 1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"precision auto here: {auto} ({reason})" + ("" if auto != "float32" else ": no eoseg-auto variant, it is eoseg"))
    print(f"tile {args.size} x {args.size}, network {args.model} ({type(model).__name__}) width {args.width}, "
          f"window {WINDOW}, stride {STRIDE}, batch {BATCH}, "
          f"{args.device}, {args.threads} threads; "
          f"{args.repeat} run(s) of each variant, alternating; figures are medians")
    print(f"{'':18}{'seconds':>9}{'Mpx/s':>9}{'windows':>9}{'windows/s':>11}{'peak RSS':>11}{'ratio':>8}{'same labels':>13}")
    naive_runs = runs["naive"]
    naive_seconds = float(np.median([r["seconds"] for r in naive_runs]))
    for variant, variant_runs in runs.items():
        r = variant_runs[-1]
        seconds = float(np.median([run["seconds"] for run in variant_runs]))
        rss = float(np.median([run["rss"] for run in variant_runs]))
        same = 100 * float((r["labels"] == naive_runs[-1]["labels"]).mean())
        print(f"{variant:18}{seconds:9.1f}{r['pixels'] / seconds / 1e6:9.3f}{r['windows']:9d}"
              f"{r['windows'] / seconds:11.2f}{rss:8.0f} MiB{naive_seconds / seconds:7.2f}x{same:12.3f}%")
        if len(variant_runs) > 1:
            print(f"{'':18}runs: " + ", ".join(f"{run['seconds']:.1f} s" for run in variant_runs))
        if r["warm_up"]:
            print(f"{'':18}(plus {r['warm_up']:.0f} s of compiling or exporting, paid once, not in the figures above)")
    if "eoseg-auto" in runs:
        float32_seconds, auto_seconds = (float(np.median([r["seconds"] for r in runs[v]])) for v in ("eoseg", "eoseg-auto"))
        same = 100 * float((runs["eoseg-auto"][-1]["labels"] == runs["eoseg"][-1]["labels"]).mean())
        print(f"eoseg-auto ({auto}) vs eoseg float32: {float32_seconds / auto_seconds:.2f}x faster, {same:.3f}% same labels")


def memory(args) -> None:
    work = work_folder(args)
    for factor in (1, args.taller):
        height = args.size * factor
        tif = work / f"huge_{args.size}x{height}.tif"
        if not tif.exists():
            start = time.perf_counter()
            write_sample_tif(tif, height, args.size)
            print(f"wrote {tif} ({tif.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
        timing, rss = run_child(["label", "--tif", str(tif), "--model", args.model, "--width", str(args.width),
                                 "--out", str(work / "out")])
        print(f"{args.size} x {height}: peak RSS {rss:.0f} MiB, {timing['seconds']:.0f} s, "
              f"{timing['pixels'] / timing['seconds'] / 1e6:.2f} Mpx/s ({args.model} width {args.width}, window {WINDOW}, "
              f"stride {WINDOW}, block rows {timing['block_rows']})")


def label(args) -> None:
    """Label one raster with eoseg's inference path (outputs written) and report its time."""
    from eoseg.checkpoint import save_checkpoint
    from eoseg.infer import Job, label_raster
    from eoseg.labelling import make_predictor
    from eoseg.io import raster_info
    from eoseg.models import model_from_config
    from eoseg.normalization import Normalization

    cfg = bench_config(args.model, args.width, f"WINDOW={WINDOW}", f"STRIDE={WINDOW}",
                       "WRITE_PREVIEW=False", "WRITE_COLOR=False", "DEVICE=cpu")
    torch.manual_seed(0)
    model = model_from_config(cfg)
    save_checkpoint(Path(args.out) / "weights.pt", cfg, model, iteration=0)  # as a user's run would load it
    info = raster_info(args.tif)
    predictor = make_predictor(cfg, model, Normalization.from_config(cfg), torch.device("cpu"))
    start = time.perf_counter()
    label_raster(cfg, predictor, Job(info, info.path.stem), Path(args.out))
    print(json.dumps({"seconds": time.perf_counter() - start, "pixels": info.width * info.height, "block_rows": cfg.INFER_BLOCK_ROWS}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("compare", help="naive reference vs eoseg: throughput, peak RSS, labels")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--width", type=float, default=1.0, help="SegNet width multiplier (1.0 = full SegNet)")
    p.add_argument("--compile", action="store_true", help="also time eoseg with INFER_COMPILE (torch.compile)")
    p.add_argument("--onnx", action="store_true", help="also time eoseg with INFER_ENGINE=onnxruntime")
    p.add_argument("--repeat", type=int, default=3, help="runs of each variant (alternating); medians are reported")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where every variant runs")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads of each variant (default: all cores)")
    add_workdir_argument(p, "eoseg-bench")
    p = commands.add_parser("memory", help="peak RSS labeling a huge raster and one --taller times taller")
    p.add_argument("--size", type=int, default=20000)
    p.add_argument("--taller", type=int, default=4)
    p.add_argument("--width", type=float, default=0.0625, help="a small SegNet keeps the run short")
    add_workdir_argument(p, "eoseg-bench")
    p = commands.add_parser("child")
    p.add_argument("--variant", choices=["naive", "eoseg", "eoseg-auto", "eoseg-compiled", "eoseg-onnxruntime"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--tif")
    p.add_argument("--weights")
    p.add_argument("--width", type=float)
    p.add_argument("--labels")
    p = commands.add_parser("label")
    p.add_argument("--tif")
    p.add_argument("--width", type=float)
    p.add_argument("--out")
    for command in commands.choices.values():
        command.add_argument("--model", default="segnet",
                             help="the network labelling (a name of eoseg.models.MODELS; default: the method's SegNet)")
    args = parser.parse_args()
    {"compare": compare, "memory": memory, "child": child, "label": label}[args.command](args)


if __name__ == "__main__":
    main()
