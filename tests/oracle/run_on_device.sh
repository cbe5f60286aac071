#!/bin/sh
# Regenerates the oracle fixtures on the GPU machine (python3 there has torch
# and transformers). Builds ds4-synth, writes every model of cases.txt,
# runs gen_fixtures.py, and leaves tests/oracle/fixtures as a tar in $OUT.
#   device run: sh tests/oracle/run_on_device.sh
# Then here: tar -xf <files_at>/fixtures.tar -C tests/oracle/
set -eu
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ds4-oracle-out}
mkdir -p "$OUT"
B=/tmp/ds4-oracle-build
make -s -j"$(nproc)" BUILD=$B $B/bin/ds4-synth $B/bin/ds4 >/dev/null
IN=/tmp/ds4-oracle-in
rm -rf "$IN" && mkdir -p "$IN"
cases=""
grep -v '^#' tests/oracle/cases.txt | while read -r name args; do
    [ -n "$name" ] || continue
    $B/bin/ds4-synth -q $args -o "$IN/$name.gguf"
done
for f in "$IN"/*.gguf; do
    name=$(basename "$f" .gguf)
    if $B/bin/ds4 --inspect -m "$f" 2>/dev/null | grep -q "q8_0"; then
        $B/bin/ds4-synth --dequantize "$f" -o "$IN/$name.f32.gguf"
        cases="$cases --case $name:$f:$IN/$name.f32.gguf"
    else
        cases="$cases --case $name:$f"
    fi
done
sha256sum "$IN"/*.gguf
rm -rf /tmp/ds4-fixtures && mkdir -p /tmp/ds4-fixtures
PYTHONUNBUFFERED=1 python3 tests/oracle/gen_fixtures.py --out /tmp/ds4-fixtures --qat $cases
tar -C /tmp -cf "$OUT/fixtures.tar" --transform 's,^ds4-fixtures,fixtures,' ds4-fixtures
echo "fixtures: $OUT/fixtures.tar"
