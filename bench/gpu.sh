#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, run the device tests (pytest marker `gpu`:
# predictor, mixed-precision training steps with channels_last, DDP with NCCL on every GPU,
# ONNX Runtime's CUDA provider if installed), then the inference and training benchmarks on
# the GPU, all written to one results file. About 3-5 minutes on one modern GPU.
#
#   bash bench/gpu.sh [RESULTS_FILE]      # default: /tmp/eoseg-gpu/results.txt
#
# Without a GPU every part still runs: the device tests skip and the benchmarks run on the
# CPU. GPU_CHECK_QUICK=1 shrinks the benchmarks to seconds (tests/test_gpu.py runs it so).
# Python: $PYTHON, else the project's .venv, else python3. Where torch is a CPU build but
# nvidia-smi sees a GPU, the CUDA build of the pinned torch is installed first (set
# TORCH_INDEX_URL to choose the CUDA version); without network access that fails with one
# line saying what to install.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RESULTS="${1:-/tmp/eoseg-gpu/results.txt}"
WORK="${GPU_CHECK_WORK:-$(dirname "$RESULTS")/work}"
QUICK="${GPU_CHECK_QUICK:-0}"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
export MPLBACKEND=Agg PYTHONWARNINGS=ignore
fail() { echo "error: $*" >&2; exit 2; }
mkdir -p "$(dirname "$RESULTS")" "$WORK" || fail "cannot create $(dirname "$RESULTS") or $WORK"
: > "$RESULTS" || fail "cannot write $RESULTS"
section() { echo; echo "== $*"; } >> "$RESULTS"
log() { echo "$*" | tee -a "$RESULTS"; }
started=$SECONDS

# ---------------------------------------------------------------- environment
pin="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' requirements.txt)"
torch_cuda() { "$PY" -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null; }
gpu_seen=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu_seen=1; fi
if ! "$PY" -c 'import torch' >/dev/null 2>&1 || { [ "$gpu_seen" = 1 ] && [ -z "$(torch_cuda)" ]; }; then
  if [ "$gpu_seen" = 1 ]; then
    index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}"
    echo "installing the CUDA build of torch==$pin from $index" >&2
    timeout 900 "$PY" -m pip install --quiet "torch==$pin" --index-url "$index" >&2 \
      || fail "could not install the CUDA build of torch==$pin from $index (no network?): install it into $PY's environment (https://pytorch.org) and rerun"
  else
    fail "$PY has no torch: install the project's requirements (pip install -r requirements-dev.txt) and rerun"
  fi
fi
if ! "$PY" -c 'import numpy, rasterio, lmdb, matplotlib, tqdm, safetensors, pytest' >/dev/null 2>&1; then
  timeout 900 "$PY" -m pip install --quiet -r requirements-dev.txt >&2 \
    || fail "could not install requirements-dev.txt (no network?): install it into $PY's environment and rerun"
fi

DEVICE="$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')" || fail "$PY cannot import torch"
section "machine"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$PY" -c "import torch; from eoseg.precision import describe_hardware, resolve_precision as r; d='$DEVICE'; print('machine: ' + describe_hardware(d)); print('precision auto: %s (%s)' % r('auto', d))"
  if [ "$gpu_seen" = 1 ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
  if [ "$DEVICE" = cpu ]; then echo "no CUDA GPU: the device tests skip and the benchmarks run on the CPU"; fi
  if [ "$QUICK" = 1 ]; then echo "quick mode (GPU_CHECK_QUICK=1): tiny benchmarks, to check that every part runs"; fi
} >> "$RESULTS" 2>&1
status=0

section "device tests (pytest -m gpu)"
"$PY" -m pytest -m gpu -q -p no:cacheprovider tests >> "$RESULTS" 2>&1 || status=1

section "inference benchmark (bench/inference.py compare)"
if [ "$QUICK" = 1 ]; then inference=(--size 256 --width 0.0625 --repeat 1 --threads 1); else inference=(--size 1024 --width 1.0 --repeat 3); fi
timeout 300 "$PY" bench/inference.py compare "${inference[@]}" --device "$DEVICE" --workdir "$WORK/inference" >> "$RESULTS" 2>&1 || status=1

section "training benchmark (bench/training.py)"
if [ "$QUICK" = 1 ]; then training=(--patches 8 --steps 1 --batch 2 --networks segnet:0.0625 --workers 0 --skip-data); else training=(--patches 160 --steps 20 --batch 10 --networks segnet:1.0 demo); fi
TMPDIR="$WORK" timeout 300 "$PY" bench/training.py "${training[@]}" --device "$DEVICE" >> "$RESULTS" 2>&1 || status=1

section "done"
echo "$((SECONDS - started)) s, status $status" >> "$RESULTS"
echo "results: $RESULTS"
[ "$status" = 0 ] || { echo "some parts failed: see $RESULTS" >&2; exit 1; }
