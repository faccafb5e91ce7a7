"""Export weights to ONNX, to run them with ONNX Runtime (CPU, or CUDA where installed).

    python export_onnx.py --out models/sample_unet.onnx                   # MODEL_FILE of the config
    python export_onnx.py models/vaihingen.safetensors --out models/vaihingen.onnx DATASET=vaihingen

The ONNX model takes (N, bands, H, W) float32 inputs, normalised as recorded in the file,
with any batch size and H, W multiples of 32, and returns the class scores (N, classes,
H, W). The file records classes, bands and normalisation like every eoseg weights file, so
inference.py --weights model.onnx checks it against the config. The export is verified
by running ONNX Runtime and PyTorch on the same random input.

    python export_onnx.py --deepness --out models/m_qgis.onnx [--resolution-cm 9]

--deepness makes a model for the Deepness QGIS plugin: a fixed WINDOW x WINDOW input, a
softmax at the end, and the plugin's metadata (class names, resolution, tile size, tile
overlap from STRIDE, input standardisation) beside eoseg's record. The resolution is the
training imagery's pixel size as the weights record it (or the training tiles give it, for
weights that record none), else --resolution-cm, which may not say otherwise.
inference.py still takes the file (WINDOW must then equal its tile size).

An existing --out file is replaced only with --force, and only by an export that passed the check.
"""

from __future__ import annotations

from pathlib import Path

import torch

from eoseg.caffe.segnet import PUBLISHED_MEAN_PIXELS
from eoseg.cli import make_parser, parse, run
from eoseg.deepness import Softmaxed, check_deepness_inputs, deepness_metadata, training_resolution_cm
from eoseg.errors import EosegError
from eoseg.io import atomic_path
from eoseg.onnx_engine import OUTPUT, SIZE_MULTIPLE, OnnxModel, onnx_with_record
from eoseg.weights import config_that_ran, read_weights

# float32 kernels of two runtimes differ by rounding; a wrong graph differs by far more
TOLERANCE = 1e-3
RESOLUTION_TOLERANCE = 0.01  # --resolution-cm within 1% of the training imagery's pixel size says the same


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("weights", metavar="WEIGHTS", nargs="?", help="weights to export (default: MODEL_FILE)")
    parser.add_argument("--out", metavar="FILE", required=True, help="output .onnx file")
    parser.add_argument("--caffe-mean", metavar="MEAN",
                        help=f"mean pixel of a .caffemodel, in the network's reversed (BGR) band order: "
                             f"{' or '.join(PUBLISHED_MEAN_PIXELS)} or comma-separated values")
    parser.add_argument("--deepness", action="store_true",
                        help="for the Deepness QGIS plugin: fixed WINDOW x WINDOW input, softmax output, its metadata")
    parser.add_argument("--resolution-cm", metavar="CM", type=float,
                        help="--deepness: centimetres per pixel of the imagery the model is for "
                             "(default: the training tiles' pixel size, when they are georeferenced)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    args, cfg = parse(parser, argv)
    source, out = Path(args.weights or cfg.MODEL_FILE), Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise EosegError(f"{out}: the output must be an .onnx file")
    if out.exists() and not args.force:
        raise EosegError(f"{out} already exists; pass --force to replace it")
    if source.suffix.lower() == ".onnx":
        raise EosegError(f"{source} is already an ONNX file")
    if args.resolution_cm is not None and not (args.deepness and args.resolution_cm > 0):
        raise EosegError("--resolution-cm takes a positive number of cm per pixel, with --deepness")
    if args.deepness and cfg.WINDOW % SIZE_MULTIPLE:
        raise EosegError(f"--deepness exports WINDOW x WINDOW inputs; set WINDOW to a multiple of {SIZE_MULTIPLE} (it is {cfg.WINDOW})")
    model, record = read_weights(source, cfg, args.caffe_mean)
    metadata, tile_size = None, None
    if args.deepness:
        check_deepness_inputs(cfg, record)
        trained = training_resolution_cm(cfg, record)
        if args.resolution_cm and trained and abs(args.resolution_cm / trained - 1) > RESOLUTION_TOLERANCE:
            raise EosegError(f"the weights were trained on {trained:g} cm pixels, but --resolution-cm {args.resolution_cm:g} "
                             f"would have Deepness resample the imagery to {args.resolution_cm:g} cm for them; leave "
                             "--resolution-cm out (it is for weights and tiles that give no pixel size)")
        resolution = args.resolution_cm or trained
        if resolution is None:
            raise EosegError("the weights do not record the training imagery's pixel size, and the training tiles are not "
                             "at hand, not georeferenced or of several sizes; pass --resolution-cm (e.g. 9 for the "
                             "ISPRS Vaihingen tiles)")
        tile_size = cfg.WINDOW
        metadata = deepness_metadata(cfg, record, tile_size, resolution)
        model, record = Softmaxed(model).eval(), {**record, "outputs": "probabilities"}
    exported = onnx_with_record(model, record, metadata, tile_size, output=record.get("outputs", OUTPUT))  # named as held

    height, width = (tile_size, tile_size) if tile_size else (2 * SIZE_MULTIPLE, 3 * SIZE_MULTIPLE)
    sample = torch.randn(2, model.in_channels, height, width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        difference = (OnnxModel(exported, str(out))(sample) - model(sample)).abs().max().item()
    if difference > TOLERANCE:  # checked before writing: a failed export leaves an existing file as it was
        raise EosegError(f"{out}: ONNX Runtime and PyTorch disagree by {difference:.3g} (> {TOLERANCE}); not written")
    with atomic_path(out) as tmp:
        tmp.write_bytes(exported)
    config_that_ran(cfg, record).save_beside(out)
    for_deepness = f"; for Deepness: {tile_size} px tiles, {float(metadata['resolution']):g} cm/px" if args.deepness else ""
    print(f"wrote {out} ({record['model']['num_classes']} classes, {record['model']['in_channels']} bands{for_deepness}); "
          f"ONNX Runtime matches PyTorch within {difference:.2g}")


if __name__ == "__main__":
    run(main)
