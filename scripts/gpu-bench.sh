#!/bin/sh
# GPU machine benchmark (docs/BENCHMARKS.md): builds the CUDA programs, writes
# the full-size synthetic q2 model to /dev/shm (80.8 GiB: needs an H200), and
# runs ds4-bench plus the CPU-vs-CUDA comparison on it.
#   sh scripts/gpu-bench.sh [ctx-max] [gen-tokens] [compare-prompts]
# Results go to $OUT (the device tool brings them back).
set -eu
OUT=${OUT:-/tmp/ds4-bench-out}
CTX_MAX=${1:-65536}
GEN=${2:-64}
NCMP=${3:-10}
mkdir -p "$OUT"
[ -x build-cuda/bin/ds4-bench ] || make -j"$(nproc)" cuda >"$OUT/build.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
M=/dev/shm/ds4-q2.gguf
if [ ! -f "$M" ]; then
    T0=$(date +%s)
    build-cuda/bin/ds4-synth --preset published --policy ds4 --branch-gain 0.1 \
        --tokenizer build/tokenizer/deepseek-v4.tok -o "$M" 2>&1 | tail -2
    echo "synth: $(($(date +%s) - T0)) s"
fi
build-cuda/bin/ds4 --inspect -m "$M" | tee "$OUT/inspect.txt"
build-cuda/bin/ds4-bench -m "$M" --cuda --prompt-file tests/data/tokenizer/corpus.txt --ctx-start 2048 \
    --ctx-max "$CTX_MAX" --step-mul 2 --gen-tokens "$GEN" --csv "$OUT/bench_q2_cuda.csv" 2>&1 | tee "$OUT/bench.log"
nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee -a "$OUT/gpu.txt"
if [ "$NCMP" -gt 0 ]; then
    build-cuda/bin/ds4-cuda-test compare "$M" "$NCMP" 64 2>&1 | tee "$OUT/compare.txt"
fi
