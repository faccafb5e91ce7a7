"""Export weights to ONNX, to run them with ONNX Runtime (CPU, or CUDA where installed).

    python export_onnx.py --out models/sample_segnet.onnx                 # MODEL_FILE of the config
    python export_onnx.py models/vaihingen.safetensors --out models/vaihingen.onnx DATASET=vaihingen

The ONNX model takes (N, bands, H, W) float32 inputs, normalised as recorded in the file,
with any batch size and H, W multiples of 32, and returns the class scores (N, classes,
H, W). The file records classes, bands and normalisation like every eoseg weights file, so
inference.py --weights model.onnx checks it against the config. The export is verified
by running ONNX Runtime and PyTorch on the same random input.
"""

from __future__ import annotations

from pathlib import Path

import torch

from eoseg.caffe.segnet import PUBLISHED_MEAN_PIXELS
from eoseg.cli import make_parser, parse, run
from eoseg.errors import EosegError
from eoseg.onnx_engine import SIZE_MULTIPLE, OnnxModel, export_onnx
from eoseg.weights import config_that_ran, read_weights

# float32 kernels of two runtimes differ by rounding; a wrong graph differs by far more
TOLERANCE = 1e-3


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("weights", metavar="WEIGHTS", nargs="?", help="weights to export (default: MODEL_FILE)")
    parser.add_argument("--out", metavar="FILE", required=True, help="output .onnx file")
    parser.add_argument("--caffe-mean", metavar="MEAN",
                        help=f"mean pixel of a .caffemodel, in the network's reversed (BGR) band order: "
                             f"{' or '.join(PUBLISHED_MEAN_PIXELS)} or comma-separated values")
    args, cfg = parse(parser, argv)
    source, out = Path(args.weights or cfg.MODEL_FILE), Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise EosegError(f"{out}: the output must be an .onnx file")
    if source.suffix.lower() == ".onnx":
        raise EosegError(f"{source} is already an ONNX file")
    model, record = read_weights(source, cfg, args.caffe_mean)
    export_onnx(model, out, record)

    sample = torch.randn(2, model.in_channels, 2 * SIZE_MULTIPLE, 3 * SIZE_MULTIPLE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        difference = (OnnxModel(out, str(out))(sample) - model(sample)).abs().max().item()
    if difference > TOLERANCE:
        out.unlink()
        raise EosegError(f"{out}: ONNX Runtime and PyTorch disagree by {difference:.3g} (> {TOLERANCE}); export removed")
    config_that_ran(cfg, record).save_beside(out)
    print(f"wrote {out} ({record['model']['num_classes']} classes, {record['model']['in_channels']} bands); "
          f"ONNX Runtime matches PyTorch within {difference:.2g}")


if __name__ == "__main__":
    run(main)
