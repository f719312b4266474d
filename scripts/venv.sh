# Sourced by run.sh and test.sh: create or reuse .venv and install torch first, pinned, so that installing
# gpt1 afterwards finds its torch range satisfied and never pulls a different (CUDA, multi-GB) build.
python3 -m venv .venv 2>/dev/null || python3 -m venv --without-pip .venv
source .venv/bin/activate
python -m pip --version >/dev/null 2>&1 || python -m ensurepip -q
python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || pip install -q torch==2.13.0
