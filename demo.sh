#!/usr/bin/env bash
# Set up the environment (first run only) and run the whole pipeline on the synthetic
# sample: generate -> convert -> extract -> LMDB -> train -> infer. Each step replaces what
# the demo made before (a rerun trains new weights, whose maps replace the earlier ones).
# KEY=VALUE arguments are passed to every step, e.g. `bash demo.sh TRAIN_MINUTES=2`.
source "$(dirname "$0")/tools/env.sh"
start=$SECONDS
step() { echo; echo "== $1"; shift; python "$@"; }
step "1/6 generate the synthetic sample tiles"   make_sample.py --force "$@"
step "2/6 colour ground truth -> label maps"     convert_gt.py --from-color "$@"
step "3/6 cut training and test patches"         extract_images.py --force "$@"
step "4/6 pack the patches into LMDB"            create_lmdb.py --force "$@"
step "5/6 train the network"                     training.py --force "$@"
step "6/6 label the held-out tiles and score them" inference.py --force "$@"
echo
echo "demo finished in $((SECONDS - start)) s"
