#!/usr/bin/env bash
# Every GPU measurement of issue 4 in one call of the device tool, whose python3 holds torch and transformers
# (no install needed: bench_train.py imports neither spaCy nor ftfy):
#     run(command="bash benchmarks/gpu.sh", timeout_s=540)
# Writes gpu*.json and gpu*.log under $OUT (the device tool's folder) or benchmarks/results/.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
out=${OUT:-benchmarks/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$out/gpu-card.txt"
# Dense bf16 peak of the H100 SXM and the H200 (NVIDIA's datasheets, without sparsity), for MFU.
peak=989
common=(--device cuda --peak-tflops $peak --steps 10 --warmup 3)
# Eager: the paper's shapes, batches large enough to fill the card, every mode, bf16 then fp32.
python3 benchmarks/bench_train.py "${common[@]}" --dtypes bf16 fp32 --modes train infer finetune generate \
    --shapes 8x512 32x512 --out "$out/gpu.json" 2>&1 | tee "$out/gpu.log"
# torch.compile of gpt1 (the peer stays eager); the first-step column is the compile time.
python3 benchmarks/bench_train.py "${common[@]}" --dtypes bf16 --modes train finetune --shapes 32x512 --compile \
    --out "$out/gpu-compile.json" 2>&1 | tee "$out/gpu-compile.log"
