#!/bin/sh
# GPU machine measurements for docs/BENCHMARKS.md. Builds the CUDA programs,
# runs the kernel/model tests, writes the full-size synthetic q2 model to
# /dev/shm (80.8 GiB: needs an H200) and measures on it:
#   1. determinism and chunk invariance: the logits of every position of a
#      7,560-token prompt, twice with chunk 2048 (must be bitwise identical)
#      and once with chunk 4096 (difference by position);
#   2. CPU vs CUDA on the first step after short prompts (ds4-cuda-test compare);
#   3. a decode profile (DS4_CUDA_PROFILE=1: GPU time between step events,
#      kernels launched one by one) and a prefill profile at 4096 tokens;
#   4. ds4-bench from 2k to ctx-max context.
#   sh scripts/gpu-bench.sh [ctx-max] [compare-prompts]
# Results go to $OUT (the device tool brings them back). Needs python3 with
# numpy on the GPU machine for step 1.
set -u
OUT=${OUT:-/tmp/ds4-bench-out}
CTX_MAX=${1:-65536}
NCMP=${2:-10}
mkdir -p "$OUT"
T0=$(date +%s)
step() { echo "[$(($(date +%s) - T0)) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
make -j"$(nproc)" cuda >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
step built
build-cuda/bin/ds4-cuda-test all >"$OUT/cudatest.txt" 2>&1
echo "ds4-cuda-test: rc=$? ($(grep -c '^ok' "$OUT/cudatest.txt") checks passed)"
build-cuda/bin/ds4-cuda-test gemv-bench >"$OUT/gemv_bench.txt" 2>&1
step "kernel timings in gemv_bench.txt"
M=/dev/shm/ds4-q2.gguf
[ -f "$M" ] || build-cuda/bin/ds4-synth -q --preset published --policy ds4 --branch-gain 0.1 \
    --tokenizer build/tokenizer/deepseek-v4.tok -o "$M" || exit 1
step "model ready"

# 1. determinism and chunk invariance
python3 -c "import numpy as np; np.random.seed(1); np.random.randint(1000,120000,7560).astype('<i4').tofile('/dev/shm/ds4-t.bin')"
for r in a:2048 b:2048 c:4096; do
    build-cuda/bin/ds4 -m "$M" --cuda --ctx 8192 --prefill-chunk "${r##*:}" --eval-tokens /dev/shm/ds4-t.bin \
        --dump-logits "/dev/shm/ds4-l_${r%%:*}.f32" >"$OUT/eval_${r%%:*}.txt" 2>&1
done
cmp -s /dev/shm/ds4-l_a.f32 /dev/shm/ds4-l_b.f32 && echo "chunk 2048 twice: bitwise identical" || echo "chunk 2048 twice: DIFFER"
python3 - >"$OUT/chunkdiff.txt" <<'PY'
import numpy as np
V = 129280
a = np.memmap('/dev/shm/ds4-l_a.f32', dtype='<f4', mode='r').reshape(-1, V)
c = np.memmap('/dev/shm/ds4-l_c.f32', dtype='<f4', mode='r').reshape(-1, V)
n = a.shape[0]
for p in [0, 1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 2047, 2048, 4095, 4096, 6000, n - 1]:
    x, y = a[p].astype(np.float64), c[p].astype(np.float64)
    d = np.abs(x - y).max() / max(1.0, np.abs(x).max())
    t8 = len(set(np.argsort(-x)[:8]) & set(np.argsort(-y)[:8]))
    print(f"pos {p + 1:5d}: chunk 2048 vs 4096 max|d|/max(1,max|logit|) {d:.3e}, "
          f"argmax {'same' if x.argmax() == y.argmax() else 'DIFF'}, top-8 overlap {t8}/8")
PY
cat "$OUT/chunkdiff.txt"
rm -f /dev/shm/ds4-l_*.f32
step "determinism checked"

# 2. CPU vs CUDA
[ "$NCMP" -gt 0 ] && build-cuda/bin/ds4-cuda-test compare "$M" "$NCMP" 64 2>&1 | grep -v loading >"$OUT/compare.txt"
tail -1 "$OUT/compare.txt"
step compared

# 3. decode profile
DS4_CUDA_PROFILE=1 build-cuda/bin/ds4 -m "$M" --cuda --nothink --temp 0 -n 24 \
    -p "Write a long story about a lighthouse keeper." >"$OUT/profile.txt" 2>&1
DS4_CUDA_PROFILE=1 build-cuda/bin/ds4-bench -m "$M" --cuda --prompt-file tests/data/tokenizer/corpus.txt \
    --ctx-start 4096 --ctx-max 4096 --gen-tokens 1 >"$OUT/profile_prefill.txt" 2>&1

# 4. throughput
build-cuda/bin/ds4-bench -m "$M" --cuda --prompt-file tests/data/tokenizer/corpus.txt --ctx-start 2048 \
    --ctx-max "$CTX_MAX" --step-mul 2 --gen-tokens 64 --csv "$OUT/bench_q2_cuda.csv" >"$OUT/bench.log" 2>&1
cat "$OUT/bench_q2_cuda.csv"
grep "session" "$OUT/bench.log" | head -1
step benched
