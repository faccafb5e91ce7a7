# Sourced by demo.sh and test.sh: make (or reuse) the project's virtual environment.
# The venv is rebuilt only when the requirement files change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
stamp="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.eoseg-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "[eoseg] setting up $VENV (first run only)"
  "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements-dev.txt"
  echo "$stamp" > "$VENV/.eoseg-stamp"
fi
export PATH="$VENV/bin:$PATH"
export MPLBACKEND=Agg
cd "$ROOT"
