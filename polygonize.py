"""Class polygons of a label map, as GeoPackage or GeoJSON for QGIS and other GIS software.

    python polygonize.py runs/vaihingen/inference/top_mosaic_09cm_area5_labels.tif --out area5.gpkg
    python polygonize.py labels.tif --out labels.geojson --simplify 0.2 --min-area 1.0

Each connected region of a class becomes a polygon with attributes class_id and
class_name (CLASS_NAMES of the config), in the raster's CRS. Pixels labelled IGNORE_LABEL
(or the raster's nodata) get no polygon. --min-area drops regions smaller than that many
square CRS units (square metres in a UTM CRS) and fills holes as small, so a small island
merges into the region around it; --simplify then simplifies all boundaries by that
tolerance in CRS units, keeping neighbouring polygons edge to edge. A label map without a
CRS (a PNG, say) is refused: --pixel-coordinates writes its polygons in pixel columns and
rows (or its transform's units), which no map places anywhere.
"""

from __future__ import annotations

from pathlib import Path

from eoseg.cli import make_parser, parse, run
from eoseg.gis import VECTOR_DRIVERS, polygonize_labels


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("labels", metavar="LABELS", help="numeric label map (GeoTIFF written by inference.py)")
    parser.add_argument("--out", metavar="FILE", required=True, help=f"output vector file ({', '.join(VECTOR_DRIVERS)})")
    parser.add_argument("--simplify", metavar="T", type=float, default=0.0, help="simplification tolerance in CRS units (default: none)")
    parser.add_argument("--min-area", metavar="A", type=float, default=0.0, help="drop regions and fill holes under A square CRS units (default: none)")
    parser.add_argument("--pixel-coordinates", action="store_true",
                        help="accept a label map without CRS; its polygons are then in pixel (column, row) coordinates")
    args, cfg = parse(parser, argv)
    out = Path(args.out)
    summary = polygonize_labels(args.labels, out, cfg.CLASS_NAMES, [cfg.IGNORE_LABEL], args.simplify, args.min_area,
                                args.pixel_coordinates, block_rows=cfg.INFER_BLOCK_ROWS)  # bounded memory, like labelling
    cfg.replace(POLYGON_SIMPLIFY=args.simplify, POLYGON_MIN_AREA=args.min_area).save_beside(out)
    dropped = f", {summary.dropped} regions under the minimum area dropped" if summary.dropped else ""
    where = f"CRS {summary.crs}" if summary.crs else "no CRS: coordinates are pixel columns and rows, not places on a map"
    print(f"wrote {summary.features} polygons to {out} ({where}){dropped}")


if __name__ == "__main__":
    run(main)
