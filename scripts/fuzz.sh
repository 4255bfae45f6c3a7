#!/usr/bin/env bash
# Builds the front-end fuzz target (tests/fuzz/frontend_fuzz.cpp) with libFuzzer, ASan and
# UBSan, and runs it on a corpus seeded with every .slope file in the repository.
#   scripts/fuzz.sh [SECONDS]     (default 60; 0 = until it finds something)
# Uses clang-19 if present, else clang; installs clang-19 and libclang-rt-19-dev if neither
# has libFuzzer. Findings land in build-fuzz/ as crash-* / timeout-* files; rerun one with
#   build-fuzz/frontend_fuzz build-fuzz/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
CXX=$(command -v clang++-19 || command -v clang++ || true)
probe() { echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, long) { return 0; }' |
            "$CXX" -x c++ -fsanitize=fuzzer - -o /dev/null 2>/dev/null; }
if [ -z "$CXX" ] || ! probe; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    clang-19 libclang-rt-19-dev
  CXX=clang++-19
fi
mkdir -p build-fuzz/corpus
# Everything up to code generation (no LLVM needed: the target never reaches codegen).
srcs=$(ls compiler/parse/*.cpp compiler/check/*.cpp compiler/ir/*.cpp compiler/support/*.cpp \
          compiler/simplify/*.cpp compiler/autodiff/*.cpp compiler/eval/*.cpp \
          compiler/pipeline.cpp runtime/*.cpp)
if [ ! -x build-fuzz/frontend_fuzz ] || [ -n "$(find $srcs tests/fuzz -newer build-fuzz/frontend_fuzz)" ]; then
  echo "fuzz: building with $CXX (a minute or two)"
  "$CXX" -std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=all -Wno-parentheses -I. -Iinclude -DSLOPE_VERSION='"fuzz"' \
    tests/fuzz/frontend_fuzz.cpp $srcs -o build-fuzz/frontend_fuzz -lpthread
fi
find samples tests -name '*.slope' -exec cp {} build-fuzz/corpus/ \;
cd build-fuzz
./frontend_fuzz -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 \
  -dict=../tests/fuzz/slope.dict corpus 2>&1 | tee fuzz.log | grep -E "^#[0-9]+ +(DONE|pulse)|ERROR|SUMMARY" || true
grep -q "ERROR:" fuzz.log && { echo "fuzz: found a failure (build-fuzz/fuzz.log)"; exit 1; }
echo "fuzz: $(grep -Eo '^#[0-9]+' fuzz.log | tail -1 | tr -d '#') inputs, no failure"
