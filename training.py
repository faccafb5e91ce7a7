"""Step 4: train SegNet.

    python training.py [KEY=VALUE ...]                   # from LMDB_DIR/train.lmdb
    python training.py TRAIN_SOURCE=tiles                # random crops straight from the tiles
    python training.py --resume runs/sample/train/checkpoints/iter_0000500.pt ITERATIONS=3000

Writes TRAIN_DIR/log.csv, TRAIN_DIR/loss.png, checkpoints every SNAPSHOT_EVERY
iterations in TRAIN_DIR/checkpoints, and the final weights to MODEL_FILE.
"""

from __future__ import annotations

from pathlib import Path

from eoseg.cli import make_parser, parse, run
from eoseg.train import train


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint of TRAIN_DIR/checkpoints")
    args, cfg = parse(parser, argv)
    weights = train(cfg, resume=args.resume)
    print(f"weights: {weights}\nlog:     {Path(cfg.TRAIN_DIR) / 'log.csv'}\nplot:    {Path(cfg.TRAIN_DIR) / 'loss.png'}")


if __name__ == "__main__":
    run(main)
