#!/bin/sh
# Builds scripts/cupti-trace.c against the toolkit's CUPTI (GPU machine) into
# build-cuda/libds4trace.so and traces the command given, e.g.
#   sh scripts/cupti-trace.sh /tmp/trace.csv build-cuda/bin/ds4-bench -m M --cuda ...
set -eu
OUTCSV=$1; shift
CUDA=${CUDA_HOME:-/usr/local/cuda}
CUPTI=$CUDA/extras/CUPTI
[ -d "$CUPTI/include" ] || CUPTI=$CUDA
KREC=$(grep -oh 'CUpti_ActivityKernel[0-9]*' "$CUPTI"/include/cupti_activity*.h | sort -V | tail -1)
MREC=$(grep -oh 'CUpti_ActivityMemcpy[0-9]*' "$CUPTI"/include/cupti_activity*.h | sort -V | tail -1)
mkdir -p build-cuda
cc -O2 -fPIC -shared -DKREC="$KREC" -DMREC="$MREC" -I"$CUPTI/include" -I"$CUDA/include" scripts/cupti-trace.c \
    -L"$CUPTI/lib64" -Wl,-rpath,"$CUPTI/lib64" -lcupti -o build-cuda/libds4trace.so
CUDA_INJECTION64_PATH=$PWD/build-cuda/libds4trace.so DS4_TRACE_OUT=$OUTCSV "$@"
