#!/usr/bin/env bash
# The checks of the CUDA backend on a GPU machine (docs/gpu.md), over a build carried from a
# machine with LLVM (scripts/gpu-bundle.sh). Run from the repository root:
#   scripts/gpu-check.sh build-gpu/gpu-bundle.tar.xz [OUT]
# OUT (default: $OUT, else gpu-check-out) gets four files: results.txt (every step's status
# and the end of its output), logs.txt.gz (every step's whole output), slope_gpu_bench.json and
# gpu_anchors.json (the device tool brings back at most 8 files). Each step has its own time
# limit, and a failing step does not stop the others: one run on a lent machine brings back
# all it can. The steps, most important first:
#   1. slopec on the GPU (the seed example, a gradient check);
#   2. the GPU tests (every gradient-table case, sample and loop program against the CPU),
#      in 8 processes; then a few in pinned memory (the fallback to managed memory);
#   3. Slope's GPU benchmarks (bench/bench_main.cpp, "CUDA offload");
#   4. PyTorch and JAX on the same workloads (../shared/bench/gpu_anchors.py).
set -uo pipefail
if [ "${1:-}" = --shards ]; then # --shards TESTS N FILTER: N processes, a shard each
  tests=$2 shards=$3 filter=$4 rc=0 dir=$(mktemp -d)
  for i in $(seq 0 $((shards - 1))); do
    GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i "$tests" --gtest_filter="$filter" \
      > "$dir/shard$i.log" 2>&1 &
  done
  for i in $(seq 0 $((shards - 1))); do
    wait -n || rc=1
  done
  for i in $(seq 0 $((shards - 1))); do
    echo "--- shard $i"
    cat "$dir/shard$i.log"
  done
  echo "--- failed or skipped, all shards:"
  grep -h -E "^\[  (FAILED|SKIPPED) " "$dir"/shard*.log | sort -u | head -n 80
  echo "passed: $(cat "$dir"/shard*.log | grep -c -E '^\[       OK ')"
  exit $rc
fi
bundle=${1:?usage: scripts/gpu-check.sh BUNDLE.tar.xz [OUT]}
out=${2:-${OUT:-gpu-check-out}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
results=$out/results.txt
logs=$out/logs.txt
log() { echo "$*" | tee -a "$results"; }
step() { # step NAME SECONDS COMMAND...: runs it with a time limit, logs its status
  local name=$1 limit=$2
  shift 2
  log "== $name (limit ${limit}s)"
  local t0=$SECONDS tmp
  tmp=$(mktemp)
  timeout "$limit" "$@" > "$tmp" 2>&1
  local rc=$?
  { echo "===== $name"; cat "$tmp"; } >> "$logs"
  tail -n 30 "$tmp" >> "$results"
  rm -f "$tmp"
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
command -v nvidia-smi > /dev/null &&
  log "$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader)"
export PATH=$PATH:/usr/local/cuda/bin
export LD_LIBRARY_PATH=$b/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} # (Google Benchmark)
export SLOPE_CUDA_STATS=1

# 1. slopec on the GPU: the seed example (54, [[4, 6], [8, 10]]), auto, a gradient check.
step slopec-cuda 90 "$b/slopec" eval samples/autograd_intro.slope --fn bowl 'x=[[1,2],[3,4]]' \
  --device cuda
step slopec-auto 60 "$b/slopec" eval samples/autograd_intro.slope --fn quadratic x=2 --device auto
step slopec-check 120 "$b/slopec" check samples/autograd_intro.slope --device cuda

# 2. The GPU tests, sharded over 8 processes (one GPU; each process its own context).
step gpu-tests 240 bash "$0" --shards "$b/tests/slope_unit_tests" 8 \
  'CudaDevice.*:Offload.*:Ops/JitVsInterp.OnCudaDevice/*:Api.InterpreterOptionGivesTheSameNumbers'
[ "${GPU_CHECK_PINNED:-1}" != 0 ] &&
  SLOPE_CUDA_MEMORY=pinned step gpu-tests-pinned 90 bash "$0" --shards "$b/tests/slope_unit_tests" 4 \
    'Offload.KernelsRunAndFailAsOnTheCpu:Offload.AdbenchGmm:Ops/JitVsInterp.OnCudaDevice/*sum*'

# 3. Slope's GPU benchmarks (the bowl in f32 over 2^28 elements, the GMM at two sizes, the
# compile time), then the same in pinned memory.
step slope-gpu-bench 150 "$b/bench/slope_bench" --benchmark_filter='Cuda' \
  --benchmark_min_time=${GPU_CHECK_MIN_TIME:-0.5} \
  --benchmark_out="$out/slope_gpu_bench.json" --benchmark_out_format=json
if [ "${GPU_CHECK_PINNED:-1}" != 0 ]; then
  SLOPE_CUDA_MEMORY=pinned step slope-gpu-bench-pinned 90 "$b/bench/slope_bench" \
    --benchmark_filter='Cuda_(Bowl|Gmm)' --benchmark_min_time=0.1
fi

# 4. The peers on this GPU (PyTorch and JAX); GPU_CHECK_ANCHORS=0 leaves them out.
py=/opt/torch/.venv/bin/python
anchors=$(ls "$b/gpu_anchors.py" ../shared/bench/gpu_anchors.py 2> /dev/null | head -1)
if [ "${GPU_CHECK_ANCHORS:-1}" = 0 ]; then
  log "== anchors: left out (GPU_CHECK_ANCHORS=0)"
elif [ -x "$py" ] && [ -n "$anchors" ]; then
  OUT=$out PYTHONUNBUFFERED=1 step anchors 200 "$py" "$anchors"
else
  log "== anchors: skipped (no $py or gpu_anchors.py)"
fi
log "== done"
gzip -9 "$logs" # (the device tool brings back files of 16 MiB at most)
