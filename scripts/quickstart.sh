#!/usr/bin/env bash
# Installs what is missing, builds slopec, and runs the seed example: value and gradient of
# samples/autograd_intro.slope, then a finite-difference check of every function in it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target slopec
set -x
build/slopec eval samples/autograd_intro.slope --fn quadratic x=2
build/slopec eval samples/autograd_intro.slope --fn bowl x='[[1,2],[3,4]]'
build/slopec check samples/autograd_intro.slope
