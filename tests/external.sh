#!/usr/bin/env bash
# Installs this build into a temporary prefix, then configures, builds and runs
# samples/external from there as a separate project would (find_package(Slope), AOT through
# slope_add_library and JIT through Slope::slope). Run by ctest: tests/external.sh BUILD SRC
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
# The project must find everything in the prefix: nothing from the build tree.
cmake -S "$src/samples/external" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build"
"$work/build/aot_bowl"
"$work/build/jit_bowl"
# What the program needs at run time: libslope.so from the prefix for the JIT, nothing of
# Slope or LLVM for the ahead-of-time one.
if ldd "$work/build/aot_bowl" | grep -E 'slope|LLVM'; then
  echo "aot_bowl links a Slope or LLVM library" >&2
  exit 1
fi
ldd "$work/build/jit_bowl" | grep -q "$work/prefix/lib/libslope.so"
echo "external project: AOT and JIT pass"
