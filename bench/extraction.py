"""Patch extraction from a huge tile: peak memory and time of extract_images.py.

    python bench/extraction.py [--size 12000] [--taller 2] [--workdir DIR]

Writes a synthetic 3-band uint8 GeoTIFF of ``--size`` x ``--size`` px (sample-generator scenes,
tiled, deflate) with its label map, and one ``--taller`` times taller, and runs
``extract_images.py`` on each as a user would (one training tile, the config's PATCH_SIZE and
TRAIN_STRIDE, no flips, no test tile), in a process of its own, reporting its peak RSS
(``ru_maxrss``), its time and the patches written. Peak memory should not grow with the tile.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # after bench/: its inference.py, not the script of that name

from inference import add_workdir_argument, run_measured, work_folder, write_sample_tif  # noqa: E402  (bench/, beside this file)


def extract(work: Path, tile_id: str) -> tuple[float, float, dict]:
    """Run extract_images.py on tile ``tile_id`` of ``work``: (seconds, peak RSS in MiB, patch counts)."""
    out = work / f"patches_{tile_id}"
    overrides = [f"DATA_ROOT={work}", "IMAGE_PATTERN=tile_{id}.tif", "LABEL_PATTERN=labels_{id}.tif",
                 "GT_COLOR_PATTERN=", "GT_ERODED_PATTERN=", f"TRAIN_IDS=['{tile_id}']", "TEST_IDS=[]", "FLIPS=False",
                 f"PATCHES_DIR={out}"]
    seconds, rss, _ = run_measured([sys.executable, str(ROOT / "extract_images.py"), "--force", *overrides], cwd=work)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    return seconds, rss, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=12000, help="side of the first tile, in pixels")
    parser.add_argument("--taller", type=int, default=2, help="the second tile is this many times taller")
    add_workdir_argument(parser, "eoseg-bench-extraction")
    args = parser.parse_args()
    work = work_folder(args)
    for factor in (1, args.taller):
        height = args.size * factor
        tile_id = f"{args.size}x{height}"
        image, labels = work / f"tile_{tile_id}.tif", work / f"labels_{tile_id}.tif"
        if not (image.exists() and labels.exists()):
            start = time.perf_counter()
            write_sample_tif(image, height, args.size, labels_path=labels)
            print(f"wrote {image.name} and {labels.name} in {time.perf_counter() - start:.0f} s")
        seconds, rss, counts = extract(work, tile_id)
        print(f"{args.size} x {height}: peak RSS {rss:.0f} MiB, {seconds:.0f} s, {counts['train']} patches")


if __name__ == "__main__":
    main()
