"""Size and CPU cost of every network per labelled window, against the full SegNet.

    python bench/model_cost.py [--window 256] [--repeats 5] [--threads 1] [--width 1.0]

For each registry model on 3 bands and 6 classes (``unet``/``unetformer`` on each ResNet):
its parameters, the floating-point operations of one window (torch's FlopCounterMode:
convolutions and matrix products, the bulk of the work; a count that no other load on
the machine disturbs), and the time of one forward pass over a window of ``--window`` px in
inference form (eval mode, batch norm folded, channels_last, as the Predictor runs it),
the median of ``--repeats`` after one warm-up, on ``--threads`` threads; the ratio is to
``segnet`` at the same width. A rough figure: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from eoseg.models import MODELS, build_model, uses_encoder  # noqa: E402
from eoseg.models.fuse import can_fuse_relu, fold_batchnorm  # noqa: E402
from eoseg.models.resnet import RESNETS  # noqa: E402


def gflops_per_window(model: torch.nn.Module, window: int) -> float:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.randn(1, model.in_channels, window, window))
    return counter.get_total_flops() / 1e9


def seconds_per_window(model: torch.nn.Module, window: int, repeats: int) -> float:
    model = fold_batchnorm(model, fuse_relu=can_fuse_relu(torch.device("cpu"))).to(memory_format=torch.channels_last)
    x = torch.randn(1, model.in_channels, window, window).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = [("segnet", None)] + [(name, encoder) for name in MODELS if uses_encoder(name) for encoder in RESNETS]
    print(f"{args.window} px window, batch 1, {args.threads} thread(s), width {args.width}, {torch.__version__}")
    print(f"{'model':<22}{'parameters':>14}{'x SegNet':>10}{'GFLOP':>9}{'x SegNet':>10}{'s/window':>10}{'x SegNet':>10}")
    reference = None
    for name, encoder in variants:
        torch.manual_seed(0)
        model = build_model(name, 3, 6, args.width, encoder=encoder).eval()
        parameters = sum(p.numel() for p in model.parameters())
        gflops = gflops_per_window(model, args.window)
        seconds = seconds_per_window(model, args.window, args.repeats)
        reference = reference or (parameters, gflops, seconds)
        label = f"{name}/{encoder}" if encoder else name
        print(f"{label:<22}{parameters:>14,}{parameters / reference[0]:>10.2f}{gflops:>9.1f}{gflops / reference[1]:>10.2f}"
              f"{seconds:>10.3f}{seconds / reference[2]:>10.2f}")


if __name__ == "__main__":
    main()
