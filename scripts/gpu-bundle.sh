#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine that has no LLVM (docs/gpu.md):
# slopec, the unit tests and the benchmarks linked to one libslope.so with LLVM inside
# (-DSLOPE_STATIC_LLVM=ON), stripped and packed into BUILD/gpu-bundle.tar.xz (15 MB at 71c9696;
# the device tool carries at most 64 MiB).
#   scripts/gpu-bundle.sh [BUILD]     (default: build-gpu, beside build/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-gpu}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSLOPE_STATIC_LLVM=ON > /dev/null
cmake --build "$build" --target slopec slope_unit_tests slope_bench
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
b=$stage/bundle
mkdir -p "$b/tests" "$b/bench"
# Each program finds libslope.so.0 beside it or one directory up ($ORIGIN in its run path).
strip --strip-unneeded -o "$b/libslope.so.0" "$(readlink -f "$build/libslope.so.0")"
strip -o "$b/slopec" "$build/slopec"
strip -o "$b/tests/slope_unit_tests" "$build/tests/slope_unit_tests"
strip -o "$b/bench/slope_bench" "$build/bench/slope_bench"
# Google Benchmark is a Debian shared library the GPU machine lacks: it travels in lib/.
mkdir -p "$b/lib"
ldd "$build/bench/slope_bench" | awk '/libbenchmark/ {print $3}' | xargs -r -I{} cp {} "$b/lib/"
# The peers' versions of the GPU workloads (PyTorch, JAX), where ../shared has them.
[ -f "$root/../shared/bench/gpu_anchors.py" ] && cp "$root/../shared/bench/gpu_anchors.py" "$b/"
# The tests read the samples from the source tree whose path they were built with.
echo "$root" > "$b/source_dir"
git -C "$root" rev-parse --short HEAD > "$b/commit" 2>/dev/null || echo unknown > "$b/commit"
tar -C "$stage" -cJf "$build/gpu-bundle.tar.xz" bundle
ls -l "$build/gpu-bundle.tar.xz"
