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
#
# A GPU machine without network access but with a CUDA torch (as the workplace's device
# machines have) lacks only the geospatial packages: fetch their wheels on a machine with
# PyPI access first, into .whl/ (ignored by git; Python 3.12 unless GPU_WHEELS_PYTHON says
# otherwise), and carry that folder along; this script then installs them for this run:
#
#   bash bench/gpu.sh --download-wheels      # here, with PyPI access: about 47 MiB
#   bash bench/gpu.sh "$OUT/results.txt"     # there, with .whl/ beside bench/
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.whl}"
# what a CUDA machine with torch lacks, at versions whose wheels fit a 64 MiB transfer (the
# newest rasterio and pyogrio wheels, each with its own GDAL, take 72 MB together)
DEVICE_WHEELS=(rasterio==1.4.3 pyogrio==0.10.0 shapely lmdb affine cligj click-plugins)
if [ "${1:-}" = --download-wheels ]; then
  version="${GPU_WHEELS_PYTHON:-3.12}"
  platforms=()
  for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$platform")
  done
  "${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" \
    --implementation cp "${platforms[@]}" -d "$WHEELS" "${DEVICE_WHEELS[@]}" \
    || { echo "error: could not download the wheels for Python $version into $WHEELS" >&2; exit 2; }
  echo "$(ls "$WHEELS"/*.whl | wc -l) wheels for Python $version in $WHEELS ($(du -sh "$WHEELS" | cut -f1))"
  exit 0
fi
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
needed='import numpy, rasterio, pyogrio, shapely, lmdb, matplotlib, tqdm, safetensors, pytest'
if ! "$PY" -c "$needed" >/dev/null 2>&1 && compgen -G "$WHEELS/*.whl" >/dev/null; then
  # for this run only: into the work folder, ahead of the environment's own packages
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/*.whl >&2 \
    || fail "could not install the wheels of $WHEELS (made for another Python?): see bash bench/gpu.sh --download-wheels"
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "$needed" >/dev/null 2>&1; then
  timeout 900 "$PY" -m pip install --quiet -r requirements-dev.txt >&2 \
    || fail "could not install requirements-dev.txt (no network?): install it into $PY's environment, or bring wheels (bash bench/gpu.sh --download-wheels), and rerun"
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
# only the modules that hold device tests: the others need packages (notebooks) a GPU machine may lack
"$PY" -m pytest -m gpu -q -p no:cacheprovider $(grep -l 'pytest.mark.gpu' tests/test_*.py) >> "$RESULTS" 2>&1 || status=1

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
