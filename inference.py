"""Step 5: label whole tiles with a sliding window; score them; write maps and plots.

    python inference.py                          # the TEST_IDS tiles, weights from MODEL_FILE
    python inference.py --split official_test    # or train / test
    python inference.py --tiles 5 21
    python inference.py --images scenes/ "more/*.tif" b.png --weights my.pt
    python inference.py --weights segnet_vaihingen_128x128_fold1_iter_60000.caffemodel DATASET=vaihingen --tiles 32 34 37
    python inference.py --engine onnxruntime WRITE_COG=True WRITE_POLYGONS=.gpkg
    torchrun --nproc_per_node=4 inference.py --images scenes/   # images shared out over 4 processes
    python inference.py --images region/ --shard 3/50            # job 3 of an array of 50 (SLURM, ...)
    python inference.py --merge-metrics                          # then one report from the 50 shares

Rasters are streamed by blocks of rows (INFER_BLOCK_ROWS): memory grows with that times a raster's width, not
with its height.
For each image (NAME: its file name; a tile's id before it where only a folder names the tile,
as IMAGE_PATTERN = "{id}/ortho.tif" does): NAME_labels (class ids, palette as colour table, class names for GIS, IGNORE_LABEL where the
input is nodata) and NAME_color (WRITE_COLOR) as GeoTIFFs with the input's CRS and transform
when it is georeferenced (else PNG), NAME_probabilities.tif (WRITE_PROBABILITIES, a GeoTIFF
either way), NAME_classes.gpkg or .geojson (WRITE_POLYGONS) and NAME_preview.png (WRITE_PREVIEW). Tiles with ground truth (the eroded GT when the dataset
has one) are scored: metrics.json, metrics.txt and confusion_matrix.png in INFER_DIR.
NAME_record.json, written last, records the outputs' hashes and the weights, config and
inputs they were made with: a rerun (after an interruption, say) keeps the images it
finds done that way and labels the others; --force labels them all again. Outputs never
replace an input (ground truth in the output folder), and replace a file that no record
there lists (another tool's map of the same name) only with --force.
Overlapping windows are blended by BLEND; TTA, INFER_PRECISION ("auto": bfloat16 where the
hardware computes it, printed at start), INFER_OPTIMIZE and INFER_COMPILE trade speed and accuracy.
A georeferenced image whose pixels are finer (by over 10%) than the training imagery's, as
the weights record it, is labelled at the training pixel size and its labels brought back
onto its own grid (coarser ones are labelled as they are); INFER_PIXEL_SIZE sets that size in
metres for finer and coarser images alike, or "image" labels every image as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path

from eoseg.cli import make_parser, parse, run
from eoseg.config import SPLITS, check_tile_ids, given_folders
from eoseg.device import distributed_rank, leave_process_group
from eoseg.errors import EosegError
from eoseg.infer import merge_shard_reports, parse_shard, run_inference
from eoseg.metrics import format_table, nothing_scored, percent


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--weights", metavar="FILE",
                        help="weights: eoseg .pt, .safetensors, .onnx, or a Caffe .caffemodel (default: MODEL_FILE)")
    parser.add_argument("--caffe-mean", metavar="MEAN",
                        help="mean pixel of .caffemodel weights: a published name (vaihingen_irrg, potsdam_irrg) or "
                             "values like 81.29,81.93,120.90 in the network's band order, the reverse of the image's (B,G,R "
                             "for RGB bands; default: the DATASET's)")
    parser.add_argument("--engine", choices=["torch", "onnxruntime"], help="run the network with (default: INFER_ENGINE)")
    parser.add_argument("--split", choices=list(SPLITS), default="test", help="which tiles of the config to label (default: test)")
    parser.add_argument("--tiles", nargs="+", metavar="ID", help="label these tile ids instead of a split")
    parser.add_argument("--images", nargs="+", metavar="PATH", help="label these image files, folders or glob patterns instead of tiles")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: INFER_DIR)")
    parser.add_argument("--force", action="store_true",
                        help="label every image again, even those whose completion record shows them done "
                             "with these weights, config and inputs")
    parser.add_argument("--shard", metavar="K/N",
                        help="label only the K-th of N shares of the sorted inputs (1 <= K <= N), for job arrays; "
                             "the report goes to metrics.shard-K-of-N.json")
    parser.add_argument("--merge-metrics", nargs="*", metavar="DIR",
                        help="label nothing: gather the shard reports in these folders (default: the output folder) "
                             "into one metrics.json, metrics.txt and confusion_matrix.png in the output folder")
    args, cfg = parse(parser, argv)
    if args.weights:  # the weights that label, as the config saved beside the maps records them
        cfg = cfg.replace(MODEL_FILE=args.weights)
    if args.engine:
        if args.engine == "torch" and Path(cfg.MODEL_FILE).suffix.lower() == ".onnx":
            raise EosegError(f"--engine torch: {cfg.MODEL_FILE} is an ONNX file, which onnxruntime runs; "
                             "give the .pt or .safetensors weights it was exported from, or leave out --engine")
        cfg = cfg.replace(INFER_ENGINE=args.engine)
    check_tile_ids(args.tiles or [], "--tiles")
    cfg = given_folders(cfg, {"INFER_DIR": ("--out", args.out)})  # not the data's folder, nor another step's
    out_dir = cfg.INFER_DIR
    if args.merge_metrics is not None:
        if args.shard or args.tiles or args.images:
            raise EosegError("--merge-metrics labels nothing; give it without --shard, --tiles or --images")
        merged = merge_shard_reports(cfg, args.merge_metrics or [out_dir], out_dir)
        if merged.metrics is not None:
            print(format_table(merged.metrics, f"metrics over {sum(i.metrics is not None for i in merged.images)} "
                                               f"image(s) with ground truth, of {len(merged.images)}"))
        for name, path in merged.outputs.items():
            print(f"{name}: {path}")
        refuse_failed(merged)
        return
    shard = parse_shard(args.shard) if args.shard else None
    tiles = args.tiles if args.tiles else ([] if args.images else cfg.tile_ids(args.split))
    if not tiles and not args.images:
        raise EosegError(f"--split {args.split} labels the tiles of {SPLITS[args.split]}, and it is empty; list them there, "
                         "or give --tiles or --images")
    summary = run_inference(cfg, cfg.MODEL_FILE, out_dir, tiles, args.images,
                            caffe_mean=args.caffe_mean, force=args.force, shard=shard)
    rank = distributed_rank()[0]
    leave_process_group()
    if rank != 0:
        return
    reused = sum(image.reused for image in summary.images)
    if reused:
        print(f"kept {reused} image(s) already labelled with these weights, config and inputs "
              "(their completion records match; --force labels them again)")
    for image in summary.images:
        if image.metrics is not None:
            scored = f"OA {percent(image.metrics['overall_accuracy'])}" if image.metrics["pixels"] else nothing_scored(image.metrics)
            print(f"{image.name}: {scored}  (vs {image.truth_source})")
    if summary.metrics is not None:
        print()
        with_truth = sum(i.metrics is not None for i in summary.images)
        print(format_table(summary.metrics, f"metrics over {with_truth} image(s) with ground truth"))
    print()
    for image in summary.images:
        print(f"{image.name}: " + ", ".join(str(p) for p in image.outputs.values()))
    for name, path in summary.outputs.items():
        print(f"{name}: {path}")
    if summary.band_order_warning:
        print(f"warning: {summary.band_order_warning}", file=sys.stderr)
    refuse_failed(summary)


def refuse_failed(summary) -> None:
    """List the images that could not be labelled, and end with an error saying how many: a run with holes is not
    passed off as complete."""
    if summary.failed:
        for why in summary.failed.values():
            print(f"not labelled: {why}", file=sys.stderr)
        raise EosegError(f"{len(summary.failed)} of {len(summary.failed) + len(summary.images)} images could not be "
                         f"labelled (listed above and in {summary.outputs['metrics']}); the others were labelled")


if __name__ == "__main__":
    run(main)
