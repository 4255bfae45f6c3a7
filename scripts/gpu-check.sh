#!/usr/bin/env bash
# The checks of the CUDA backend on a GPU machine (docs/gpu.md), over a build carried from a
# machine with LLVM (scripts/gpu-bundle.sh). Run from the repository root:
#   scripts/gpu-check.sh build-gpu/gpu-bundle.tar.xz [OUT]
# OUT (default: $OUT, else gpu-check-out) gets results.txt with every number, the test log
# and the peers' JSON. Each step has its own time limit, and a failing step does not stop
# the others: one run on a lent machine brings back all it can.
set -uo pipefail
bundle=${1:?usage: scripts/gpu-check.sh BUNDLE.tar.xz [OUT]}
out=${2:-${OUT:-gpu-check-out}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
results=$out/results.txt
log() { echo "$*" | tee -a "$results"; }
step() { # step NAME SECONDS COMMAND...: runs it with a time limit, logs its status
  local name=$1 limit=$2
  shift 2
  log "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$out/$name.log" | tee -a "$results" > /dev/null
  log "== $name: exit $rc in $((SECONDS - t0)) s"
  return 0
}

work=$(mktemp -d)
tar -C "$work" -xJf "$bundle" || { log "cannot unpack $bundle"; exit 1; }
b=$work/bundle
# The unit tests read samples from the source path they were built with: point it here.
src=$(cat "$b/source_dir")
if [ ! -e "$src/samples" ]; then
  mkdir -p "$(dirname "$src")" && ln -sfn "$PWD" "$src" ||
    log "warning: cannot link $src to $PWD; tests that read samples will fail"
fi
log "slope gpu-check at commit $(cat "$b/commit"), $(date -u +%FT%TZ)"
log "machine: $(uname -srm), $(nproc) cores; glibc $(ldd --version | head -1 | awk '{print $NF}')"
command -v nvidia-smi > /dev/null && log "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"

# 1. The driver as Slope finds it (--device cuda names the GPU, or what is missing).
step device 60 "$b/slopec" eval samples/autograd_intro.slope --fn quadratic x=2 --device cuda
step device-auto 60 "$b/slopec" eval samples/autograd_intro.slope --fn bowl \
  'x=[[1,2],[3,4]]' --device auto

# 2. The kernels: PTX for this GPU that the driver loads, and ptxas where the toolkit is.
export PATH=$PATH:/usr/local/cuda/bin
step gpu-tests 300 "$b/tests/slope_unit_tests" \
  --gtest_filter='CudaDevice.*:Ptx.*:Ops/JitVsInterp.PtxAssembles/*'

# 3. The CPU build runs here too: the gradient table against the evaluator.
step cpu-tests 300 "$b/tests/slope_unit_tests" --gtest_filter='Ops/JitVsInterp.*:-*AheadOfTime*'

# 4. The peers on this GPU (../shared/bench/gpu_anchors.py: PyTorch and JAX), and Slope's
# CPU numbers for the same workloads on this machine's cores, side by side.
py=/opt/torch/.venv/bin/python
anchors=$(ls "$b/gpu_anchors.py" ../shared/bench/gpu_anchors.py 2> /dev/null | head -1)
if [ -x "$py" ] && [ -n "$anchors" ]; then
  OUT=$out step anchors 240 "$py" "$anchors"
else
  log "== anchors: skipped (no $py or gpu_anchors.py)"
fi
step slope-cpu-bench 180 "$b/bench/slope_bench" --benchmark_filter='BM_Gmm_.*_Slope/n:(1000|10000)/d:10/K:25/threads:2' \
  --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
log "== done"
