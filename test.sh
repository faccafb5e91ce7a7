#!/usr/bin/env bash
# Run the test suite (sets up .venv on first use) on every core (pytest-xdist; -n 0 for one
# process). Extra arguments go to pytest.
source "$(dirname "$0")/tools/env.sh"
exec python -m pytest -n auto "$@"
