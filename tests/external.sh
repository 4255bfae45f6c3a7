#!/usr/bin/env bash
# Configures, builds and runs samples/external as a separate project would
# (find_package(Slope), AOT through slope_add_library and JIT through Slope::slope) against
# an installed Slope: this build installed into a temporary prefix, or PREFIX where given
# (tests/debian_package.sh: the unpacked package). Run by ctest:
#   tests/external.sh BUILD SRC [PREFIX]
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=${3:-$work/prefix}
[ $# -ge 3 ] || cmake --install "$build" --prefix "$prefix" >/dev/null
# The project must find everything in the prefix: nothing from the build tree.
cmake -S "$src/samples/external" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/build"
"$work/build/aot_bowl"
"$work/build/jit_bowl"
# What the program needs at run time: libslope.so from the prefix for the JIT, nothing of
# Slope or LLVM for the ahead-of-time one.
# (ldd's output is read whole before grep sees it: `ldd | grep -q` under pipefail fails
# whenever grep exits at its match before ldd has written everything, and ldd gets SIGPIPE.)
aot_libs=$(ldd "$work/build/aot_bowl")
jit_libs=$(ldd "$work/build/jit_bowl")
if grep -E 'slope|LLVM' <<<"$aot_libs"; then
  echo "aot_bowl links a Slope or LLVM library" >&2
  exit 1
fi
grep -q "$prefix/lib/libslope.so" <<<"$jit_libs"
echo "external project: AOT and JIT pass"
