#!/usr/bin/env bash
# The test suite on a fresh machine: make or reuse .venv, install gpt1 with its test extras, run every test
# (the quick ones, then the slow end-to-end ones). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
pip install -q -e ".[test]"
exec python -m pytest -m "slow or not slow" "$@"
