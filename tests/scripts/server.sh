#!/bin/sh
# ds4-server end to end: a tiny synthetic model (random weights, the real
# DeepSeek tokenizer), one server on a free loopback port, and the node tests
# in tests/server/ (official openai and @anthropic-ai/sdk clients, raw HTTP
# abuse, concurrency, prefix reuse, disk KV cache restarts, Codex CLI).
# Replies are scripted (--test-only-scripted-output): a random model only
# emits noise, so the tests make it "say" known text and DSML tool calls
# while the forward pass still runs for every token.
set -eu
BUILD_DIR=${DS4_BUILD_DIR:-build}
BIN="$BUILD_DIR/bin"
TOK="$BUILD_DIR/tokenizer/deepseek-v4.tok"
[ -x "$BIN/ds4-server" ] || { echo "no $BIN/ds4-server (libmicrohttpd/cJSON missing?)"; exit 1; }
[ -f "$TOK" ] || make -s "BUILD=$BUILD_DIR" "$TOK"
[ -d node_modules/openai ] || { echo "node_modules missing: run npm ci"; exit 1; }

TMP=$(mktemp -d "${DS4_TEST_TMP:-/tmp}/ds4-server.XXXXXX")
PID=""
cleanup() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

"$BIN/ds4-synth" -q --vocab 8192 --tokenizer "$TOK" -o "$TMP/tiny.gguf"

# A free loopback port: bind port 0 and read back what the kernel chose.
free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PORT=$(free_port)

"$BIN/ds4-server" -m "$TMP/tiny.gguf" --cpu -t 2 --ctx 32768 --host 127.0.0.1 --port "$PORT" \
    --queue-max 4 --max-body-mb 8 --trace "$TMP/trace.txt" \
    --test-only-scripted-output tests/server/script.txt >"$TMP/server.log" 2>&1 &
PID=$!
i=0
until curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$PID" 2>/dev/null; then
        echo "server did not start"; cat "$TMP/server.log"; exit 1
    fi
    sleep 0.1
done

export DS4_SERVER_URL="http://127.0.0.1:$PORT"
export DS4_SERVER_BIN="$BIN/ds4-server"
export DS4_TEST_MODEL="$TMP/tiny.gguf"
export DS4_TEST_TRACE="$TMP/trace.txt"
export DS4_TEST_WORK="$TMP"
rc=0
node --test --test-concurrency=1 tests/server/ || rc=$?
if [ $rc -ne 0 ]; then
    echo "---- server log (tail)"
    tail -n 40 "$TMP/server.log"
fi
# The shared server must have survived everything thrown at it.
curl -fs "http://127.0.0.1:$PORT/health" >/dev/null || { echo "server died"; rc=1; }
kill -TERM "$PID"
if ! wait "$PID"; then echo "server did not exit cleanly on SIGTERM"; rc=1; fi
PID=""
exit $rc
