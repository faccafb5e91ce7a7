"""Step 4: train the network (MODEL: U-Net on ResNet-18 by default, SegNet in the ISPRS presets).

    python training.py [KEY=VALUE ...]                   # from LMDB_DIR/train.lmdb
    python training.py TRAIN_SOURCE=tiles                # random crops straight from the tiles
    python training.py --resume                          # carry on from the latest checkpoint of TRAIN_DIR
    python training.py --resume runs/sample/train/checkpoints/iter_0000200.pt TRAIN_MINUTES=10   # a longer budget
    python training.py TRAIN_MINUTES=30 LR_SCHEDULE=cosine   # 30 minutes of training, the schedule laid over them
    python training.py --force                           # start over in a TRAIN_DIR that holds a run

One GPU, the published recipe (give ENCODER_WEIGHTS to start from ImageNet; PRECISION="auto"
trains in bfloat16 mixed precision on GPUs and CPUs that compute it, and says so at start):
    python training.py DATASET=vaihingen DEVICE=cuda

One machine, N GPUs (or N CPU processes with DEVICE=cpu); BATCH_SIZE is per process:
    torchrun --standalone --nproc_per_node=N training.py DATASET=vaihingen

Several machines, N GPUs each: run on every machine, with HOST:PORT a machine all can reach
(TRAIN_DIR on storage every machine sees, so that --resume finds the checkpoints):
    torchrun --nnodes=M --nproc_per_node=N --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT \\
        --rdzv_id=eoseg training.py DATASET=vaihingen

Writes TRAIN_DIR/log.csv, TRAIN_DIR/loss.png (loss, learning rate, validation metrics),
checkpoints every SNAPSHOT_EVERY iterations in TRAIN_DIR/checkpoints (with best.pt, the
best validation mean F1), and the final weights to MODEL_FILE. A checkpoint holds the full
training state: resuming repeats the losses an uninterrupted run would have had (bit for bit on a CPU; on a GPU
with DETERMINISTIC=True).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from eoseg.cli import make_parser, parse, run
from eoseg.device import Processes
from eoseg.errors import EosegError
from eoseg.train import BEST_CHECKPOINT, claim_train_dir, latest_checkpoint, train

LATEST = "latest"


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--resume", metavar="CHECKPOINT", nargs="?", const=LATEST,
                        help="continue from a checkpoint (without a path: the latest in TRAIN_DIR/checkpoints)")
    parser.add_argument("--force", action="store_true",
                        help="start a new run in a TRAIN_DIR that holds one (its log, checkpoints and MODEL_FILE are "
                             "removed once the new run writes) and replace MODEL_FILE")
    args, cfg = parse(parser, argv)
    if args.resume and args.force:
        raise EosegError("--resume continues a run and --force starts a new one: give one of them")
    main_process = Processes.from_environment().is_main
    # under torchrun the main process alone writes TRAIN_DIR, so it alone claims it
    given = None if args.resume in (None, LATEST) else args.resume  # a checkpoint named by its path
    if given is not None and not Path(given).is_file():  # before the checks of the run it would continue (review)
        raise EosegError(f"--resume {given}: no such checkpoint file; without a path, --resume continues from the latest "
                         "in TRAIN_DIR/checkpoints")
    with claim_train_dir(cfg, resume=bool(args.resume), force=args.force, checkpoint=given) if main_process \
            else contextlib.nullcontext():
        resume = latest_checkpoint(cfg) if args.resume == LATEST else args.resume
        weights = train(cfg, resume=resume)
    if main_process:  # under torchrun, one report
        train_dir = Path(cfg.TRAIN_DIR)
        best = train_dir / "checkpoints" / BEST_CHECKPOINT
        print(f"weights: {weights}" + (f"\nbest:    {best}" if best.is_file() else "")
              + f"\nlog:     {train_dir / 'log.csv'}\nplot:    {train_dir / 'loss.png'}")
        if cfg.VAL_EVERY and not best.is_file():
            print("warning: validation scored no pixel (its tiles hold no data, or no labels where they do: of a tile split "
                  "into blocks, in its held-out blocks), so there is no best checkpoint", file=sys.stderr)


if __name__ == "__main__":
    run(main)
