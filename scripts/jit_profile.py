#!/usr/bin/env python3
"""Where a JIT-compiled function spends its time, instruction by instruction.

Slope's JIT code lives in anonymous memory, so neither perf nor callgrind can show its
instructions on their own. Run the program with

    SLOPE_PERF_MAP=1 SLOPE_JIT_DUMP=/tmp/jd/x

and the JIT writes /tmp/perf-PID.map (each function's address and size) and
/tmp/jd/x.object.K.o (each object it links). This script joins a profile with those: it finds
the function in the map, its code in the objects (by name and size), and prints the
function's disassembly with a count on every instruction, then its straight-line runs of
instructions with the same count (basic blocks, near enough), heaviest first.

    # samples (perf): the instruction a sample fell on; skid moves samples one or two
    # instructions past a slow one
    SLOPE_PERF_MAP=1 SLOPE_JIT_DUMP=/tmp/jd/x perf record -F 4000 -o /tmp/perf.data \\
        build/bench/slope_bench --benchmark_filter=... --benchmark_min_time=1
    perf script -i /tmp/perf.data -F ip,sym > /tmp/samples.txt
    scripts/jit_profile.py --perf /tmp/samples.txt --map /tmp/perf-PID.map \\
        --objects '/tmp/jd/x.object.*.o' --function gmm.0.chunk6

    # executed instructions (callgrind; valgrind runs AVX2 code, not AVX-512)
    SLOPE_PERF_MAP=1 SLOPE_JIT_DUMP=/tmp/jd/x SLOPE_NUM_THREADS=1 valgrind --tool=callgrind \\
        --instr-atstart=no --dump-instr=yes --callgrind-out-file=/tmp/cg.out \\
        build/bench/slope_instructions gmm-objective 1000:64:25
    scripts/jit_profile.py --callgrind /tmp/cg.out --map /tmp/perf-PID.map \\
        --objects '/tmp/jd/x.object.*.o' --function gmm.0.chunk6

docs/benchmarks.md shows what it found.
"""
import argparse
import bisect
import collections
import glob
import re
import subprocess
import sys


def map_entry(path, function):
    """(start, size) of `function` in a perf map file."""
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == function:
                return int(parts[0], 16), int(parts[1], 16)
    sys.exit(f"{function} is not in {path}")


def object_symbol(pattern, function, size):
    """(object file, address in it) of `function` with this size."""
    for path in sorted(glob.glob(pattern)):
        out = subprocess.run(["nm", "-S", path], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[3] == function and int(parts[1], 16) == size:
                return path, int(parts[0], 16)
    sys.exit(f"no object in {pattern} has {function} of size {size:#x}")


def perf_counts(path, function, start, size):
    """Samples per address (relative to the function's start) from `perf script -F ip,sym`."""
    counts = collections.Counter()
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1] == function:
                ip = int(parts[0], 16)
                if start <= ip < start + size:
                    counts[ip - start] += 1
    return counts


def callgrind_counts(path, start, size):
    """Executed instructions per address (relative to start) from a callgrind file written
    with --dump-instr=yes (positions: instr line)."""
    counts = collections.Counter()
    address = 0
    skip_call_cost = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line[0].isalpha():
                # calls= is followed by one line of the call's inclusive cost: not this
                # function's own instructions
                skip_call_cost = skip_call_cost or line.startswith("calls=")
                continue
            parts = line.split()
            pos = parts[0]
            if pos.startswith("0x"):
                address = int(pos, 16)
            elif pos[0] in "+-":
                step = int(pos[1:], 0)
                address += step if pos[0] == "+" else -step
            elif pos != "*":
                continue
            if skip_call_cost:
                skip_call_cost = False
                continue
            if len(parts) > 2 and start <= address < start + size:
                counts[address - start] += int(parts[2])
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--perf", help="output of perf script -F ip,sym")
    src.add_argument("--callgrind", help="callgrind output written with --dump-instr=yes")
    ap.add_argument("--map", required=True, help="the /tmp/perf-PID.map of the profiled run")
    ap.add_argument("--objects", required=True, help="glob of the SLOPE_JIT_DUMP objects")
    ap.add_argument("--function", required=True, help="e.g. gmm.0.chunk6")
    ap.add_argument("--top", type=int, default=20, help="blocks to list (default 20)")
    ap.add_argument("--listing", action="store_true", help="print the annotated disassembly")
    args = ap.parse_args()

    start, size = map_entry(args.map, args.function)
    obj, base = object_symbol(args.objects, args.function, size)
    if args.perf:
        counts = perf_counts(args.perf, args.function, start, size)
    else:
        counts = callgrind_counts(args.callgrind, start, size)
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", obj, "--disassemble=" + args.function],
        capture_output=True, text=True).stdout
    instrs = []
    for line in listing.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s*(.*)", line)
        if m:
            instrs.append((int(m.group(1), 16) - base, m.group(2).strip()))
    # A sample between two instruction starts belongs to the one before it.
    offsets = [o for o, _ in instrs]
    per = collections.Counter()
    for off, n in counts.items():
        per[max(bisect.bisect_right(offsets, off) - 1, 0)] += n
    total = sum(per.values())
    if not total:
        sys.exit("no counts fell in the function")
    unit = "samples" if args.perf else "instructions"
    print(f"{args.function}: {total} {unit} ({obj} at {base:#x})")
    if args.listing:
        for k, (off, text) in enumerate(instrs):
            print(f"{per.get(k, 0):>10} {base + off:8x}: {text}")
    # Runs of consecutive instructions with one count: for callgrind, a basic block.
    runs = []
    for k, (off, text) in enumerate(instrs):
        n = per.get(k, 0)
        if args.perf or not runs or runs[-1]["count"] != n:
            runs.append({"count": n, "first": base + off, "last": base + off, "size": 0, "weight": 0})
        run = runs[-1]
        run["last"] = base + off
        run["size"] += 1
        run["weight"] += n
    print(f"\n{'share':>6} {'weight':>12} {'per instr':>10} {'instrs':>6}  range")
    for run in sorted(runs, key=lambda r: -r["weight"])[: args.top]:
        if run["weight"] == 0:
            break
        print(f"{100 * run['weight'] / total:5.1f}% {run['weight']:>12} {run['count']:>10} "
              f"{run['size']:>6}  {run['first']:x}-{run['last']:x}")


if __name__ == "__main__":
    main()
