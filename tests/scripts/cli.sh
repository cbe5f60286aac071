#!/bin/sh
# End to end: ds4, ds4-synth and ds4-bench on a tiny synthetic model with the
# real tokenizer pieces; every bad input must give a clear message and a
# non-zero exit, never a crash.
set -u
B=${DS4_BUILD_DIR:-build}
T=$(mktemp -d /tmp/ds4-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
# expect_fail NAME EXPECTED-TEXT COMMAND...: non-zero exit (not a signal), message contains the text
expect_fail() {
    name=$1 want=$2
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ $rc -eq 0 ]; then bad "$name: exit 0"; return; fi
    if [ $rc -ge 128 ]; then bad "$name: killed by a signal ($rc)"; return; fi
    if ! grep -q -- "$want" "$T/err"; then bad "$name: stderr lacks '$want': $(head -c 300 "$T/err")"; return; fi
    ok "$name"
}

TOK=$B/tokenizer/deepseek-v4.tok
M=$T/tiny.gguf
$B/bin/ds4-synth -q --vocab 4096 --tokenizer "$TOK" --seed 3 -o "$M" || { echo "FAIL synth"; exit 1; }

# ---- generation
$B/bin/ds4 -m "$M" -p "Ciao, come stai?" -n 12 --temp 0.7 --seed 9 >"$T/gen1" 2>"$T/gen1.err" && ok "one-shot -p" || bad "one-shot -p: $(cat "$T/gen1.err")"
grep -q "prefill: .* t/s, generation: .* t/s" "$T/gen1.err" && ok "timing line" || bad "timing line missing"
$B/bin/ds4 -m "$M" -p "Ciao, come stai?" -n 12 --temp 0.7 --seed 9 >"$T/gen2" 2>/dev/null
cmp -s "$T/gen1" "$T/gen2" && ok "same seed, same text" || bad "seeded generation not reproducible"
printf 'Rispondi in italiano: chi era Ada Lovelace?' >"$T/prompt.txt"
$B/bin/ds4 -m "$M" --prompt-file "$T/prompt.txt" --nothink --temp 0 -n 8 >/dev/null 2>&1 && ok "--prompt-file --nothink greedy" || bad "--prompt-file"

# ---- --dump-logprobs writes valid JSON with the asked shape
$B/bin/ds4 -m "$M" --nothink -sys "" --temp 0 -n 4 --ctx 4096 --prompt-file "$T/prompt.txt" --dump-logprobs "$T/lp.json" --logprobs-top-k 5 2>/dev/null
node -e '
const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
if (j.source !== "ds4" || j.top_k !== 5 || j.ctx !== 4096 || !(j.prompt_tokens > 5)) throw new Error("header");
if (j.steps.length < 1 || j.steps.length > 4) throw new Error("steps " + j.steps.length);
for (const s of j.steps) {
  if (s.top_logprobs.length !== 5) throw new Error("top");
  if (s.top_logprobs[0].token.id !== s.selected.id) throw new Error("argmax");
  let sum = 0; for (const t of s.top_logprobs) { if (!(t.logprob <= 0)) throw new Error("logprob"); sum += Math.exp(t.logprob); }
  if (sum > 1.0000001) throw new Error("probabilities sum over 1");
  for (let i = 1; i < 5; i++) if (s.top_logprobs[i].logit > s.top_logprobs[i-1].logit) throw new Error("order");
}' "$T/lp.json" && ok "--dump-logprobs JSON" || bad "--dump-logprobs JSON invalid"

# ---- --dump-tokens loads only the vocabulary (works on a header-only file) and recognises specials
$B/bin/ds4-synth -q --vocab 4096 --tokenizer "$TOK" --header-only -o "$T/hdr.gguf"
$B/bin/ds4 -m "$T/hdr.gguf" --dump-tokens -p '<｜User｜>Hello<｜Assistant｜></think>' >"$T/toks" 2>&1 && ok "--dump-tokens on a header-only file" || bad "--dump-tokens: $(cat "$T/toks")"
head -1 "$T/toks" | grep -q '^\[[0-9]' && grep -q '<｜User｜>' "$T/toks" && ok "--dump-tokens format" || bad "--dump-tokens format"

# ---- ds4-bench: one CSV row per frontier and a plot
$B/bin/ds4-bench -m "$M" --prompt-file tests/data/tokenizer/corpus.txt --ctx-start 256 --ctx-max 1024 --step-mul 2 \
    --gen-tokens 4 --csv "$T/bench.csv" --plot "$T/bench.svg" 2>"$T/bench.err" && ok "ds4-bench runs" || bad "ds4-bench: $(cat "$T/bench.err")"
[ "$(head -1 "$T/bench.csv")" = "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes" ] && ok "bench CSV header" || bad "bench CSV header"
[ "$(tail -n +2 "$T/bench.csv" | cut -d, -f1 | tr '\n' ' ')" = "256 512 1024 " ] && ok "bench frontiers 256 512 1024" || bad "bench frontiers: $(cat "$T/bench.csv")"
grep -q '<svg' "$T/bench.svg" 2>/dev/null && ok "bench plot" || bad "bench plot missing"

# ---- interactive mode: multi-turn, commands, history file, Ctrl+C stops a reply
printf 'Hello there\n/help\n/nothink\nSecond question\n/ctx 2048\nThird\n/bogus\n/quit\n' |
    HOME="$T" $B/bin/ds4 -m "$M" -n 6 --seed 3 >"$T/chat" 2>&1
grep -q '/read FILE' "$T/chat" && grep -q 'thinking: off' "$T/chat" && grep -q 'context: 2048' "$T/chat" &&
    grep -q "unknown command '/bogus'" "$T/chat" && ok "interactive commands" || bad "interactive: $(cat "$T/chat")"
[ "$(wc -l <"$T/.ds4_history")" -ge 7 ] && ok "history saved" || bad "history file"
mkfifo "$T/in"
# a fixed seed: with a time-based one the random model sometimes samples EOS
# within the 2 seconds, and Ctrl+C then lands at the prompt (seed 1 runs
# thousands of tokens first)
HOME="$T" $B/bin/ds4 -m "$M" --seed 1 -n 100000000 --ctx 100000 <"$T/in" >"$T/intr" 2>&1 &
pid=$!
exec 7>"$T/in"
printf 'Tell me a long story\n' >&7
sleep 2
kill -INT $pid
sleep 1
printf '/quit\n' >&7
exec 7>&-
wait $pid
rc=$?
[ $rc -eq 0 ] && grep -q '(stopped)' "$T/intr" && ok "Ctrl+C stops the reply, chat continues" || bad "Ctrl+C: rc $rc $(tail -c 300 "$T/intr")"

# ---- bad input: clear messages, non-zero exits
expect_fail "missing prompt file" "cannot open" $B/bin/ds4 -m "$M" --prompt-file "$T/nope.txt"
expect_fail "prompt file is a directory" "not a regular file" $B/bin/ds4 -m "$M" --prompt-file "$T"
expect_fail "unknown flag" "unknown option" $B/bin/ds4 -m "$M" --frobnicate
expect_fail "bad number" "expects an integer" $B/bin/ds4 -m "$M" -n lots -p x
expect_fail "negative ctx" "expects an integer" $B/bin/ds4 -m "$M" --ctx -5 -p x
expect_fail "temperature out of range" "expects a number" $B/bin/ds4 -m "$M" --temp 1000 -p x
expect_fail "flag without value" "needs a value" $B/bin/ds4 -m "$M" -p
expect_fail "two prompt sources" "not both" $B/bin/ds4 -m "$M" -p x --prompt-file "$T/prompt.txt"
expect_fail "ctx too small for the prompt" "does not fit\|needs at least" $B/bin/ds4 -m "$M" --prompt-file tests/data/tokenizer/corpus.txt --ctx 100 -n 1
expect_fail "missing model" "cannot open model" $B/bin/ds4 -m "$T/missing.gguf" -p x
printf 'not a gguf file at all, longer than the header' >"$T/junk.gguf"
expect_fail "junk model" "magic" $B/bin/ds4 -m "$T/junk.gguf" -p x
head -c 5000 "$M" >"$T/trunc.gguf"
expect_fail "truncated model" "truncated" $B/bin/ds4 --inspect -m "$T/trunc.gguf"
expect_fail "--server points to ds4-server" "ds4-server" $B/bin/ds4 --server
printf 'abc' >"$T/odd.tok"
expect_fail "token file not a multiple of 4" "multiple of 4" $B/bin/ds4 -m "$M" --eval-tokens "$T/odd.tok"
printf '\377\377\377\177' >"$T/big.tok"
expect_fail "token id out of range" "outside the vocabulary" $B/bin/ds4 -m "$M" --eval-tokens "$T/big.tok"
expect_fail "bench without prompt" "exactly one of" $B/bin/ds4-bench -m "$M"
expect_fail "bench prompt too short" "fewer than --ctx-max" $B/bin/ds4-bench -m "$M" --prompt-file "$T/prompt.txt" --ctx-start 8 --ctx-max 4096
expect_fail "bench bad step-mul" "step-mul" $B/bin/ds4-bench -m "$M" --prompt-file "$T/prompt.txt" --step-mul 0.5
expect_fail "synth bad type" "unknown type" $B/bin/ds4-synth --expert-type q3_k -o "$T/x.gguf"
expect_fail "synth impossible shape" "multiple of" $B/bin/ds4-synth --policy ds4 --embd 96 -o "$T/x.gguf"

# ---- prefill chunk: flag, environment, safety limit (logged at startup)
DS4_PREFILL_CHUNK=64 $B/bin/ds4 -m "$M" --cpu -p x -n 1 --temp 0 >/dev/null 2>"$T/chunk.err" && grep -q "prefill_chunk=64" "$T/chunk.err" \
    && ok "DS4_PREFILL_CHUNK sets the chunk" || bad "DS4_PREFILL_CHUNK: $(cat "$T/chunk.err")"
DS4_PREFILL_CHUNK=64 $B/bin/ds4 -m "$M" --cpu -p x -n 1 --temp 0 --prefill-chunk 32 >/dev/null 2>"$T/chunk.err" && grep -q "prefill_chunk=32" "$T/chunk.err" \
    && ok "--prefill-chunk wins over the environment" || bad "--prefill-chunk over env: $(cat "$T/chunk.err")"
$B/bin/ds4 -m "$M" --cpu -p x -n 1 --temp 0 >/dev/null 2>"$T/chunk.err" && grep -q "prefill_chunk=2048" "$T/chunk.err" \
    && ok "CPU default chunk 2048" || bad "CPU default chunk: $(cat "$T/chunk.err")"
expect_fail "chunk above 4096 refused" "DS4_ALLOW_UNSAFE_PREFILL_CHUNK" $B/bin/ds4 -m "$M" --cpu -p x -n 1 --prefill-chunk 8192 --ctx 16384
expect_fail "env chunk above 4096 refused" "DS4_ALLOW_UNSAFE_PREFILL_CHUNK" env DS4_PREFILL_CHUNK=5000 $B/bin/ds4 -m "$M" --cpu -p x -n 1 --ctx 16384
expect_fail "env chunk not a number" "DS4_PREFILL_CHUNK='lots'" env DS4_PREFILL_CHUNK=lots $B/bin/ds4 -m "$M" --cpu -p x -n 1
DS4_ALLOW_UNSAFE_PREFILL_CHUNK=1 $B/bin/ds4 -m "$M" --cpu -p x -n 1 --temp 0 --prefill-chunk 8192 --ctx 16384 >/dev/null 2>"$T/chunk.err" \
    && grep -q "prefill_chunk=8192" "$T/chunk.err" && ok "unsafe chunk allowed on request" || bad "unsafe chunk: $(cat "$T/chunk.err")"

# ---- --kv-type: the KV cache's storage, logged at startup; bad values and fp8 in oracle mode refused
$B/bin/ds4 --help | grep -q -- "--kv-type T .*f16 (default), bf16, fp8" && ok "ds4 --help lists --kv-type" || bad "ds4 --help lacks --kv-type"
$B/bin/ds4-bench --help | grep -q -- "--kv-type T" && ok "ds4-bench --help lists --kv-type" || bad "ds4-bench --help lacks --kv-type"
$B/bin/ds4 -m "$M" --cpu -p x -n 1 --temp 0 >/dev/null 2>"$T/kv.err" && grep -q "kv=f16," "$T/kv.err" \
    && ok "default kv=f16 logged" || bad "default kv: $(cat "$T/kv.err")"
$B/bin/ds4 -m "$M" --cpu -p x -n 1 --temp 0 --oracle-mode >/dev/null 2>"$T/kv.err" && grep -q "kv=f32," "$T/kv.err" \
    && ok "oracle mode: kv=f32" || bad "oracle kv: $(cat "$T/kv.err")"
for kv in f16 bf16 fp8 f32; do
    $B/bin/ds4 -m "$M" --cpu -p "Ciao" -n 3 --temp 0 --kv-type $kv >"$T/kv.$kv" 2>"$T/kv.err" && grep -q "kv=$kv," "$T/kv.err" \
        && ok "--kv-type $kv" || bad "--kv-type $kv: $(cat "$T/kv.err")"
done
$B/bin/ds4 -m "$M" --cpu -p x -n 1 --temp 0 --oracle-mode --kv-type bf16 >/dev/null 2>"$T/kv.err" && grep -q "kv=bf16," "$T/kv.err" \
    && ok "oracle mode + --kv-type bf16" || bad "oracle mode + bf16: $(cat "$T/kv.err")"
printf '\1\0\0\0\2\0\0\0\3\0\0\0' >"$T/three.tok"
$B/bin/ds4 -m "$M" --cpu --eval-tokens "$T/three.tok" --dump-logits "$T/kv.logits" --kv-type fp8 2>"$T/kv.err" \
    && [ "$(wc -c <"$T/kv.logits")" -eq $((3 * 4096 * 4)) ] && ok "--eval-tokens --kv-type fp8" || bad "--eval-tokens fp8: $(cat "$T/kv.err")"
$B/bin/ds4-bench -m "$M" --cpu --prompt-file tests/data/tokenizer/corpus.txt --ctx-start 64 --ctx-max 64 --gen-tokens 2 \
    --kv-type fp8 >/dev/null 2>"$T/kv.err" && grep -q "kv=fp8," "$T/kv.err" && ok "ds4-bench --kv-type fp8" || bad "ds4-bench fp8: $(cat "$T/kv.err")"
expect_fail "unknown --kv-type" "expects f16, bf16, fp8 or f32, got 'fp16'" $B/bin/ds4 -m "$M" --kv-type fp16 -p x
expect_fail "empty --kv-type" "expects f16, bf16, fp8 or f32" $B/bin/ds4 -m "$M" --kv-type "" -p x
expect_fail "--kv-type without value" "needs a value" $B/bin/ds4 -m "$M" -p x --kv-type
expect_fail "fp8 in oracle mode" "fp8" $B/bin/ds4 -m "$M" --cpu --oracle-mode --kv-type fp8 -p x -n 1
expect_fail "fp8 in oracle mode (--eval-tokens)" "fp8" $B/bin/ds4 -m "$M" --cpu --oracle-mode --kv-type fp8 --eval-tokens "$T/three.tok"
expect_fail "ds4-bench unknown --kv-type" "expects f16, bf16, fp8 or f32, got 'q8'" $B/bin/ds4-bench -m "$M" \
    --prompt-file "$T/prompt.txt" --kv-type q8

# ---- backends: --cuda where this build or this machine cannot give it
expect_fail "--cuda in a build without CUDA" "make cuda" $B/bin/ds4 -m "$M" --cuda -p x -n 1
CB=${DS4_CUDA_BUILD_DIR:-build-cuda}
if [ -x "$CB/bin/ds4" ] && ! nvidia-smi >/dev/null 2>&1; then
    expect_fail "--cuda on a machine without a GPU" "run with --cpu" $CB/bin/ds4 -m "$M" --cuda -p x -n 1
    expect_fail "ds4-bench --cuda without a GPU" "run with --cpu" $CB/bin/ds4-bench -m "$M" --cuda \
        --prompt-file "$T/prompt.txt" --ctx-start 8 --ctx-max 8 --gen-tokens 1
    $CB/bin/ds4 -m "$M" -p x -n 1 --temp 0 >/dev/null 2>"$T/cb.err" && grep -q "backend cpu" "$T/cb.err" \
        && ok "CUDA build without a GPU: the CPU by default" || bad "CUDA build default backend: $(cat "$T/cb.err")"
fi

[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
