"""Check a dataset before training: what the tiles hold, and every problem, one line each.

    python check_data.py                                  # the config's train and test tiles
    python check_data.py --config mine.py --write-norm    # also write NORM_MEAN / NORM_STD into mine.py

Reports per image its size, bands, data type, CRS, resolution and nodata; per band the
range, mean and standard deviation over the training tiles (printed as NORM_MEAN and
NORM_STD config lines); the label values found against LABEL_VALUES and the classes; the
share of each class in the training and test tiles (also drawn in OUT/class_shares.png);
and every problem found: missing files, unmapped label values, rasters that do not
overlap their image, classes absent from training, a normalisation that leaves a band far
from values of order 1. Rasters are read by windows. The exit
status is 1 when a problem was found.
"""

from __future__ import annotations

import sys
from pathlib import Path

from eoseg.cli import make_parser, parse, run
from eoseg.datacheck import check_dataset, format_report, norm_lines, plot_class_shares, write_norm
from eoseg.errors import EosegError
from eoseg.io import check_writable, make_folder


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--out", metavar="DIR", help="where the bar chart and the config go (default: beside PATCHES_DIR, check_data/)")
    parser.add_argument("--write-norm", action="store_true", help="write the measured NORM_MEAN / NORM_STD into the --config file")
    args, cfg = parse(parser, argv, norm_to_measure=lambda args: args.write_norm)
    if args.write_norm and not args.config:
        raise EosegError("--write-norm writes into the --config file: give one (--config mine.py)")
    out = Path(args.out) if args.out else Path(cfg.PATCHES_DIR).parent / "check_data"
    check_writable(out, "--out" if args.out else "the check_data folder")  # before the check reads every tile
    report = check_dataset(cfg, norm_to_write=args.write_norm)
    print(format_report(cfg, report))
    make_folder(out, "--out" if args.out else "the check_data folder")
    print(f"\nwrote {plot_class_shares(cfg, report, out / 'class_shares.png')}")
    cfg.save(out, "config.check_data.json")
    if args.write_norm:
        if not report.statistics.count:
            raise EosegError("no valid training pixel was read: nothing to write into the config")
        write_norm(Path(args.config), norm_lines(cfg, report))
        print(f"wrote NORM_MEAN and NORM_STD into {args.config}"
              + ('; EXTRA_SOURCES\' "mean" and "std" are yours to set in each entry, as the report gives them'
                 if cfg.extra_sources else ""))
    if report.problems:
        sys.exit(1)


if __name__ == "__main__":
    run(main)
