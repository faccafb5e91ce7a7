"""Class polygons of a large label map: peak memory and time of polygonize.py.

    python bench/polygons.py [--size 8000] [--speckle 0.02] [--simplify 0] [--workdir DIR]

Writes a synthetic ``--size`` x ``--size`` px label map in UTM (blocks of 40 px of six classes, and
``--speckle`` of its pixels single-pixel islands of another class, as a noisy map has: most of the
polygons) and runs ``polygonize.py`` on it to a GeoPackage, in a process of its own, reporting its
peak RSS (``ru_maxrss``), its time and the polygons written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

from inference import add_workdir_argument, run_measured, work_folder  # noqa: E402  (bench/, beside this file)


def write_label_map(path: Path, size: int, speckle: float, seed: int = 0) -> None:
    """Blocky classes with single-pixel islands, written by rows of blocks."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from eoseg.io import RasterInfo, RasterWriter

    rng = np.random.default_rng(seed)
    block = 40
    info = RasterInfo(path, size, size, 1, "uint8", CRS.from_epsg(32632), from_origin(496000, 5420000, 0.5, 0.5), None)
    with RasterWriter(path, info, 1, "uint8", nodata=255) as writer:
        for top in range(0, size, 1000):
            rows = min(1000, size - top)
            coarse = rng.integers(0, 6, (-(-rows // block), -(-size // block)), dtype=np.uint8)
            labels = np.kron(coarse, np.ones((block, block), dtype=np.uint8))[:rows, :size]
            islands = rng.random(labels.shape) < speckle
            labels[islands] = (labels[islands] + 1) % 6
            writer.write(labels[None], top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8000, help="side of the label map, in pixels")
    parser.add_argument("--speckle", type=float, default=0.02, help="share of pixels that are single-pixel islands")
    parser.add_argument("--simplify", type=float, default=0.0, help="polygonize.py --simplify (CRS units)")
    add_workdir_argument(parser, "eoseg-bench-polygons")
    args = parser.parse_args()
    work = work_folder(args)
    labels = work / f"labels_{args.size}_{args.speckle}.tif"
    if not labels.exists():
        write_label_map(labels, args.size, args.speckle)
    out = work / "classes.gpkg"
    seconds, rss, output = run_measured([sys.executable, str(ROOT / "polygonize.py"), str(labels), "--out", str(out),
                                         "--force", "--simplify", str(args.simplify)])
    print(output.strip())
    print(f"{args.size} x {args.size}, speckle {args.speckle}, simplify {args.simplify}: peak RSS "
          f"{rss:.0f} MiB, {seconds:.0f} s")


if __name__ == "__main__":
    main()
