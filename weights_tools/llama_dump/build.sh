#!/bin/sh
# Build llama_dump against a llama.cpp source tree and its CMake build (static libraries), e.g.
#   weights_tools/llama_dump/build.sh /path/to/llama.cpp /path/to/llama.cpp/build llama_dump
set -e
SRC=${1:?llama.cpp source tree} BUILD=${2:?its CMake build directory (BUILD_SHARED_LIBS=OFF)} OUT=${3:-llama_dump}
HERE=$(dirname "$0")
${CXX:-g++} -O2 -std=c++17 "$HERE/llama_dump.cpp" -I"$SRC/include" -I"$SRC/ggml/include" \
    "$BUILD/src/libllama.a" "$BUILD/ggml/src/libggml.a" "$BUILD/ggml/src/libggml-cpu.a" "$BUILD/ggml/src/libggml-base.a" \
    -lgomp -lpthread -ldl -o "$OUT"
echo "built $OUT"
