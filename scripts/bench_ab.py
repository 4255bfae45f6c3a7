#!/usr/bin/env python3
"""Paired timing of two slope_bench binaries on a noisy machine.

Usage: bench_ab.py A B FILTER [--rounds N] [--repetitions R]

Each round runs both binaries (A then B, then B then A in the next round, and so on) with
--benchmark_filter=FILTER and R repetitions, takes each benchmark's median, and records the
ratio B/A. A VM whose speed drifts by tens of percent from one minute to the next moves both
runs of a round about alike, so the median of the per-round ratios says more than medians of
separate runs. Prints, per benchmark, the medians over rounds of A's and B's times and of B/A,
and every round's B/A.
"""
import argparse
import collections
import json
import statistics
import subprocess

UNIT_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


def medians(binary, pattern, repetitions):
    out = subprocess.run(
        [binary, "--benchmark_filter=" + pattern, "--benchmark_repetitions=%d" % repetitions,
         "--benchmark_report_aggregates_only=true", "--benchmark_format=json"],
        capture_output=True, text=True, check=True).stdout
    return {b["run_name"]: b["real_time"] * UNIT_MS[b["time_unit"]]
            for b in json.loads(out)["benchmarks"] if b.get("aggregate_name") == "median"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("filter")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--repetitions", type=int, default=3)
    args = ap.parse_args()
    ta, tb, ratio = (collections.defaultdict(list) for _ in range(3))
    for r in range(args.rounds):
        if r % 2 == 0:
            a = medians(args.a, args.filter, args.repetitions)
            b = medians(args.b, args.filter, args.repetitions)
        else:
            b = medians(args.b, args.filter, args.repetitions)
            a = medians(args.a, args.filter, args.repetitions)
        for name in a.keys() & b.keys():
            ta[name].append(a[name])
            tb[name].append(b[name])
            ratio[name].append(b[name] / a[name])
    for name in sorted(ratio):
        print("%-60s A %9.3f ms  B %9.3f ms  B/A %.3f  (%s)" % (
            name, statistics.median(ta[name]), statistics.median(tb[name]),
            statistics.median(ratio[name]), " ".join("%.2f" % x for x in ratio[name])))


if __name__ == "__main__":
    main()
