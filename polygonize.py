"""Class polygons of a label map, as GeoPackage or GeoJSON for QGIS and other GIS software.

    python polygonize.py runs/vaihingen/inference/top_mosaic_09cm_area5_labels.tif --out area5.gpkg
    python polygonize.py labels.tif --out labels.geojson --simplify 0.2 --min-area 1.0
    python polygonize.py labels.tif --out labels.gpkg POLYGON_SIMPLIFY=0.2 POLYGON_MIN_AREA=1.0

Each connected region of a class becomes a polygon with attributes class_id and
class_name, in the raster's CRS. The class names are those the label map records (as
inference.py writes them), else CLASS_NAMES of the config; a config given with --config,
CLASS_NAMES= or DATASET= whose CLASS_NAMES differ from the recorded ones is refused.
A label map that records no class names and whose colour table does not say it holds class
ids (ground truth of raw codes, a 0/255 mask) is read through LABEL_VALUES, as every step
reads label rasters, by value (its nodata tag is not read: a 0/255 mask tagged nodata 0 keeps its
background). Pixels labelled IGNORE_LABEL (in a label map eoseg wrote, also its nodata value) get no polygon.
--min-area drops
regions smaller than that many square CRS units (square metres in a UTM CRS) and fills
holes as small, so a small island merges into the region around it (a hole holding unlabelled pixels, a nodata
gap, stays); --simplify then
simplifies all boundaries by that tolerance in CRS units, keeping neighbouring polygons
edge to edge. Without the flags, the config's POLYGON_MIN_AREA and POLYGON_SIMPLIFY apply
(as inference.py's WRITE_POLYGONS applies them); the flags win over them. A label map without a
CRS (a PNG, say) is refused: --pixel-coordinates writes its polygons in pixel columns and
rows (or its transform's units), which no map places anywhere. The polygons carry the raster's
exact CRS; GeoJSON records a CRS only as an authority code, so a .geojson of a CRS no code
equals (a custom projection, a site grid, a datum shift) is refused: write .gpkg. In a CRS in degrees
--simplify and --min-area are refused (they would be degrees). An existing --out file is
replaced only with --force, and never a file the config reads (its vector labels, say).
"""

from __future__ import annotations

import sys
from pathlib import Path

from eoseg.cli import make_parser, parse, run
from eoseg.convert import label_map_reader
from eoseg.errors import EosegError
from eoseg.gis import VECTOR_DRIVERS, check_polygon_georeference, polygonize_labels
from eoseg.io import check_outputs, raster_info, recorded_class_names
from eoseg.labels import LabelValues
from eoseg.tiles import configured_inputs

# overrides that choose the class names (a DATASET brings its preset's)
CLASS_NAME_OVERRIDES = ("CLASS_NAMES=", "DATASET=")


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("labels", metavar="LABELS", help="numeric label map (GeoTIFF written by inference.py)")
    parser.add_argument("--out", metavar="FILE", required=True, help=f"output vector file ({', '.join(VECTOR_DRIVERS)})")
    parser.add_argument("--simplify", metavar="T", type=float,
                        help="simplification tolerance in CRS units, 0 for none (default: POLYGON_SIMPLIFY)")
    parser.add_argument("--min-area", metavar="A", type=float,
                        help="drop regions and fill holes under A square CRS units, 0 for none (default: POLYGON_MIN_AREA)")
    parser.add_argument("--pixel-coordinates", action="store_true",
                        help="accept a label map without CRS; its polygons are then in pixel (column, row) coordinates")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    argv = sys.argv[1:] if argv is None else list(argv)
    args, cfg = parse(parser, argv)
    # the flags win over the config's values; cfg then holds what runs, and the config saved beside --out records it
    cfg = cfg.replace(POLYGON_SIMPLIFY=cfg.POLYGON_SIMPLIFY if args.simplify is None else args.simplify,
                      POLYGON_MIN_AREA=cfg.POLYGON_MIN_AREA if args.min_area is None else args.min_area)
    out = Path(args.out)
    # never over an input, even with --force: the config's ground truth (vector labels), or the label map itself
    inputs = {**configured_inputs(cfg), Path(args.labels).resolve(): "the label map polygonized"}
    check_outputs([out], inputs, args.force, "--out")
    info = raster_info(args.labels, "label map")
    # before LABEL_VALUES reads every pixel: a raster refused for its CRS alone is refused at once
    check_polygon_georeference(info.crs, info.transform, out.suffix, cfg.POLYGON_SIMPLIFY, cfg.POLYGON_MIN_AREA,
                               args.pixel_coordinates, args.labels)
    recorded = recorded_class_names(args.labels)
    configured = args.config is not None or any(arg.startswith(CLASS_NAME_OVERRIDES) for arg in argv)
    if recorded is not None and configured and recorded != list(cfg.CLASS_NAMES):
        raise EosegError(f"{args.labels} records the class names {recorded}, the config gives CLASS_NAMES "
                         f"{list(cfg.CLASS_NAMES)}; set CLASS_NAMES to the label map's, or leave out --config, CLASS_NAMES= and "
                         "DATASET= to take the label map's")
    class_names = recorded if recorded is not None else cfg.CLASS_NAMES
    if recorded is None:  # not a label map eoseg wrote: read through LABEL_VALUES, as every step reads label rasters
        values = label_map_reader(info, cfg.palette, LabelValues.from_config(cfg)).values
        ignore = []  # the values' IGNORE_LABEL is left out
    else:
        values, ignore = None, [cfg.IGNORE_LABEL]
    summary = polygonize_labels(args.labels, out, class_names, ignore, cfg.POLYGON_SIMPLIFY, cfg.POLYGON_MIN_AREA,
                                args.pixel_coordinates, block_rows=cfg.INFER_BLOCK_ROWS,  # bounded memory, like labelling
                                values=values)
    cfg.save_beside(out)
    dropped = f", {summary.dropped} regions under the minimum area dropped" if summary.dropped else ""
    units = "pixel columns and rows" if info.transform.is_identity else "its transform's units"
    where = f"CRS {summary.crs}" if summary.crs else f"no CRS: coordinates are {units}, not places on a map"
    names = "as the label map records them" if recorded is not None else "CLASS_NAMES of the config: the label map records none"
    print(f"wrote {summary.features} polygons to {out} ({where}; class names {names}){dropped}")


if __name__ == "__main__":
    run(main)
