#!/usr/bin/env bash
# Every GPU measurement of issue 4 in one call of the device tool, whose python3 holds torch and transformers
# (no install needed: bench_train.py imports neither spaCy nor ftfy):
#     run(command="bash benchmarks/gpu.sh", timeout_s=560)
# Most important first, each part in its own file, every row written as it is measured, so that a run cut off
# by the time limit still returns what it measured. Writes gpu-*.json and gpu.log under $OUT or benchmarks/results/.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
out=${OUT:-benchmarks/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$out/gpu-card.txt"
# Dense bf16 peak of the H100 SXM and the H200 (NVIDIA's datasheets, without sparsity), for MFU.
peak=989
bench() { python3 benchmarks/bench_train.py --device cuda --peak-tflops $peak --steps 10 --warmup 3 "$@" 2>&1 | tee -a "$out/gpu.log"; }
# The paper's context, bf16 autocast, dropout 0.1: the pre-training step at two batch sizes, each with one
# profiled eager step (where the eager step's time goes, besides the launches; tables in $out/profiles/).
bench --dtypes bf16 --modes train --shapes 8x512 32x512 --profile "$out/profiles" --out "$out/gpu-train.json"
# torch.compile of gpt1 (the peer stays eager); the first-step column is the compile time.
bench --dtypes bf16 --modes train finetune --shapes 32x512 --compile --out "$out/gpu-compile.json"
# Where the compiled step's time goes: one profiled gpt1 step, operator table in $out/profiles/.
bench --dtypes bf16 --modes train --shapes 32x512 --compile --steps 3 --warmup 2 --profile "$out/profiles" \
    --out "$out/gpu-profile.json"
# The other modes, eager.
bench --dtypes bf16 --modes finetune infer generate --shapes 32x512 --out "$out/gpu-modes.json"
bench --dtypes fp32 --modes train --shapes 32x512 --out "$out/gpu-fp32.json"
