#!/usr/bin/env bash
# The main job on a fresh machine: make or reuse .venv, install gpt1, pre-train the demo model on BBC News.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
pip install -q -e ".[demo]"
exec gpt1 demo "$@"
