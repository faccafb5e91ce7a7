"""Convert weights to .safetensors: the method's published Caffe models or eoseg checkpoints.

    python convert_weights.py segnet_vaihingen_irrg.caffemodel --out models/vaihingen.safetensors DATASET=vaihingen
    python convert_weights.py models/sample_unet.pt --out models/sample_unet.safetensors
    python convert_weights.py other.caffemodel --caffe-mean 92.55,86.55,97.64 --out models/other.safetensors

The output records the model, classes, palette, bands and the normalisation its inputs
need, and is checked against the config wherever it is used (inference.py --weights).
A .caffemodel needs the config it is meant for (CLASS_NAMES, BANDS...) and the mean pixel
it was trained with: by default the published one for DATASET=vaihingen; otherwise give
--caffe-mean. A .safetensors file holds no code: it is tensors and a JSON header. An
existing --out file is replaced only with --force.
"""

from __future__ import annotations

from pathlib import Path

from eoseg.caffe.segnet import PUBLISHED_MEAN_PIXELS
from eoseg.cli import make_parser, parse, run
from eoseg.errors import EosegError
from eoseg.weights import SUFFIXES, config_that_ran, read_weights, save_safetensors


def describe(record: dict) -> str:
    model, norm = record["model"], record["signature"]["normalization"]
    order = f"bands reordered {norm['band_order']}, " if "band_order" in norm else ""
    return (f"{model['name']} ({model['in_channels']} bands, {model['num_classes']} classes, width {model['width']:g}); "
            f"inputs: {order}mean {norm['mean']} subtracted, divided by {norm['std']}")


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("weights", metavar="WEIGHTS", help=f"weights to convert ({', '.join(s for s in SUFFIXES if s != '.onnx')})")
    parser.add_argument("--out", metavar="FILE", required=True, help="output .safetensors file")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    parser.add_argument("--caffe-mean", metavar="MEAN",
                        help=f"mean pixel of a .caffemodel, in the network's reversed (BGR) band order: "
                             f"{' or '.join(PUBLISHED_MEAN_PIXELS)} or comma-separated values")
    args, cfg = parse(parser, argv)
    source, out = Path(args.weights), Path(args.out)
    if source.suffix.lower() == ".onnx":
        raise EosegError(f"{source}: an ONNX file cannot be converted back; convert the weights it was exported from")
    if out.suffix.lower() != ".safetensors":
        raise EosegError(f"{out}: the output must be a .safetensors file")
    if out.exists() and not args.force:
        raise EosegError(f"{out} already exists; pass --force to replace it")
    model, record = read_weights(source, cfg, args.caffe_mean)
    save_safetensors(out, model, record)
    config_that_ran(cfg, record).save_beside(out)
    print(f"wrote {out}: {describe(record)}")


if __name__ == "__main__":
    run(main)
