#!/bin/sh
# A/B timing in one call on one machine, the way docs/BENCHMARKS.md compares:
# ds4-bench runs once per setting and round, the settings alternating (a
# setting is a list of environment assignments; "" is the default), then
# each setting's mean prefill and decode t/s. Run-to-run drift hits every
# setting alike this way; numbers from two device calls differ by ~1%.
# A setting that starts with @DIR runs DIR's build instead (another tree,
# e.g. a commit unpacked with `git archive REV | tar -x -C .base`, carried to
# the GPU machine; built with make cuda there unless DS4_AB_NOBUILD=1), with
# the rest of the setting as its environment.
#   sh scripts/gpu-ab.sh [-r ROUNDS] [-m MODEL] [-a "ds4-bench args"] SETTING...
#   e.g. sh scripts/gpu-ab.sh "" "DS4_GEMV_STAGES=3"
#        sh scripts/gpu-ab.sh "" "@.base"
# Defaults: 3 rounds; the 12-layer full-width model in /dev/shm (written by
# ds4-synth when missing, ~15 s on the GPU machine); ds4-bench --cuda
# --ctx-start 4096 --ctx-max 4096 --gen-tokens 256 on the tokenizer corpus.
# Builds the CUDA programs first (make cuda) unless DS4_AB_NOBUILD=1.
set -u
ROUNDS=3
MODEL=/dev/shm/ds4-ab-12l.gguf
ARGS="--cuda --ctx-start 4096 --ctx-max 4096 --gen-tokens 256"
while getopts r:m:a: opt; do
    case $opt in
    r) ROUNDS=$OPTARG ;;
    m) MODEL=$OPTARG ;;
    a) ARGS=$OPTARG ;;
    *) echo "usage: sh scripts/gpu-ab.sh [-r ROUNDS] [-m MODEL] [-a ARGS] SETTING..." >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "gpu-ab: give at least one setting (\"\" is the default)" >&2; exit 2; }
BIN=build-cuda/bin
if [ "${DS4_AB_NOBUILD:-0}" != 1 ]; then
    make -j"$(nproc)" cuda >/tmp/ds4-ab-build.log 2>&1 || { tail -20 /tmp/ds4-ab-build.log; exit 1; }
    for s in "$@"; do
        case $s in
        @*)
            dir=${s%% *}
            dir=${dir#@}
            make -C "$dir" -j"$(nproc)" cuda >/tmp/ds4-ab-build-other.log 2>&1 ||
                { tail -20 /tmp/ds4-ab-build-other.log; exit 1; }
            ;;
        esac
    done
fi
[ -x "$BIN/ds4-bench" ] || BIN=build/bin
if [ ! -f "$MODEL" ]; then
    echo "gpu-ab: writing the 12-layer model to $MODEL"
    "$BIN/ds4-synth" -q --preset published --policy ds4 --branch-gain 0.1 \
        --tokenizer build/tokenizer/deepseek-v4.tok --layers 12 -o "$MODEL" || exit 1
fi
RES=$(mktemp)
r=1
while [ "$r" -le "$ROUNDS" ]; do
    i=0
    for s in "$@"; do
        i=$((i + 1))
        bin=$BIN
        envs=$s
        case $s in
        @*)
            dir=${s%% *}
            bin=${dir#@}/build-cuda/bin
            envs=$(echo "$s" | sed 's/^@[^ ]*//')
            ;;
        esac
        # shellcheck disable=SC2086 # the setting and the arguments are word lists
        line=$(env $envs "$bin/ds4-bench" -m "$MODEL" --prompt-file tests/data/tokenizer/corpus.txt $ARGS 2>/dev/null |
            tail -1)
        echo "round $r  [$i] ${s:-default}: $line"
        echo "$i,$line" >>"$RES"
    done
    r=$((r + 1))
done
# CSV: setting, ctx, prefill tokens, prefill t/s, gen tokens, gen t/s, kv bytes
i=0
for s in "$@"; do
    i=$((i + 1))
    awk -F, -v i="$i" -v name="${s:-default}" '$1 == i && NF >= 7 { p += $4; d += $6; n++ }
        END { if (n) printf "mean [%d] %s: prefill %.1f t/s, decode %.2f t/s (%d runs)\n", i, name, p / n, d / n, n;
              else printf "mean [%d] %s: no runs completed\n", i, name }' "$RES"
done
rm -f "$RES"
