#!/usr/bin/env python3
"""Plots ADBench GMM time against n from slope_bench's Google Benchmark JSON output.

    build/bench/slope_bench --benchmark_filter=Gmm --benchmark_repetitions=11 \\
        --benchmark_enable_random_interleaving=true \\
        --benchmark_out=gmm.json --benchmark_out_format=json
    python3 scripts/plot_gmm.py gmm.json docs/img/gmm_time.png
    python3 scripts/plot_gmm.py --table gmm.json     # a Markdown table of the medians instead

Reads the benchmarks named BM_Gmm_{Objective,Gradient}_{Slope,Hand}/n:N/d:D/K:K, with an
optional /threads:T (a Slope run on T threads; without it, 1 thread). Each point is the
median of the repetitions when the file has one, else the mean of its runs; real (wall-clock)
time, so runs on several threads show their speed-up. One panel for the objective, one for
the objective and gradient; a line per implementation and thread count, a marker per (d, K).

Needs matplotlib (Debian: python3-matplotlib, installed by scripts/setup.sh, for
/usr/bin/python3). Without it this says so and exits 3: nothing in the tests needs the plot.
"""

import json
import os
import re
import sys

NAME = re.compile(
    r"^BM_Gmm_(?P<kind>Objective|Gradient)_(?P<impl>Slope|Hand)"
    r"/n:(?P<n>\d+)/d:(?P<d>\d+)/K:(?P<K>\d+)(?:/threads:(?P<threads>\d+))?"
    r"(?:/[A-Za-z_]+(?::[0-9.]+)?)*$"
)
TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


def read_times(path, field="real_time"):
    """{(kind, impl, threads, n, d, K): milliseconds} from a Google Benchmark JSON file."""
    with open(path) as f:
        runs = json.load(f)["benchmarks"]
    medians, sums = {}, {}
    for r in runs:
        m = NAME.match(r.get("run_name", r["name"]))
        if not m or r.get("error_occurred"):
            continue
        key = (m["kind"], m["impl"], int(m["threads"] or r.get("threads", 1) or 1),
               int(m["n"]), int(m["d"]), int(m["K"]))
        ms = r.get(field, r["real_time"]) * TO_MS[r.get("time_unit", "ns")]
        if r.get("run_type") == "aggregate":
            if r.get("aggregate_name") == "median":
                medians[key] = ms
        else:
            total, count = sums.get(key, (0.0, 0))
            sums[key] = (total + ms, count + 1)
    times = {k: total / count for k, (total, count) in sums.items()}
    times.update(medians)
    return times


def label(impl, threads):
    if impl == "Hand":
        return "hand-written C++"
    return "Slope, %d thread%s" % (threads, "" if threads == 1 else "s")


def plot(times, out):
    try:
        import matplotlib
    except ImportError:
        # Debian's package lives in /usr/bin/python3's path, not in a pyenv or venv python.
        if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != \
                os.path.realpath("/usr/bin/python3") and not os.environ.get("PLOT_GMM_REEXEC"):
            os.environ["PLOT_GMM_REEXEC"] = "1"
            os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
        sys.stderr.write("plot_gmm.py: matplotlib is not installed "
                         "(Debian: apt-get install python3-matplotlib)\n")
        sys.exit(3)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = sorted({(impl, th) for (_, impl, th, _, _, _) in times},
                    key=lambda s: (s[0] != "Hand", s[1]))
    shapes = sorted({(d, K) for (_, _, _, _, d, K) in times})
    markers = "osD^vP*X"
    colours = {s: "C%d" % i for i, s in enumerate(series)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, kind, title in zip(axes, ("Objective", "Gradient"),
                               ("objective", "objective + gradient")):
        for s in series:
            for si, (d, K) in enumerate(shapes):
                pts = sorted((n, t) for (k, impl, th, n, dd, KK), t in times.items()
                             if k == kind and (impl, th) == s and (dd, KK) == (d, K))
                if not pts:
                    continue
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colours[s],
                        marker=markers[si % len(markers)], linestyle="-",
                        label=label(*s) if si == 0 else None)
        for si, (d, K) in enumerate(shapes):
            ax.plot([], [], color="grey", marker=markers[si % len(markers)], linestyle="none",
                    label="d = %d, K = %d" % (d, K) if kind == "Objective" else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (points)")
        ax.set_title("ADBench GMM: " + title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("time per call (ms, median)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("plot_gmm.py: wrote %s (%d points)" % (out, len(times)))


def table(path):
    """Per size: the hand-written and Slope medians and their ratios, as Markdown; each figure
    is real time, then CPU time in brackets (which a loaded machine disturbs less)."""
    real, cpu = read_times(path), read_times(path, "cpu_time")
    sizes = sorted({(n, d, K) for (_, _, _, n, d, K) in real}, key=lambda s: (s[1], s[0]))
    threads = sorted({th for (_, impl, th, _, _, _) in real if impl == "Slope"})

    def fmt(ms):
        return "%.0f" % ms if ms >= 100 else "%.1f" % ms if ms >= 10 else "%.2f" % ms

    def cell(key):
        if key not in real:
            return "-", None
        return "%s ms (%s)" % (fmt(real[key]), fmt(cpu[key])), key

    print("| GMM | hand obj | hand obj+grad | Slope obj | Slope obj+grad | Slope/hand obj "
          "| Slope/hand obj+grad | grad/obj hand | grad/obj Slope |")
    print("|---|---|---|---|---|---|---|---|---|")
    def ratio(a, b):
        if not a or not b:
            return "-"
        return "%.2fx (%.2fx)" % (real[a] / real[b], cpu[a] / cpu[b])
    for th in threads:
        for n, d, K in sizes:
            ho, hov = cell(("Objective", "Hand", 1, n, d, K))
            hg, hgv = cell(("Gradient", "Hand", 1, n, d, K))
            so, sov = cell(("Objective", "Slope", th, n, d, K))
            sg, sgv = cell(("Gradient", "Slope", th, n, d, K))
            name = "n %d, d %d, K %d%s" % (n, d, K, "" if th == 1 else ", %d threads" % th)
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" %
                  (name, ho, hg, so, sg, ratio(sov, hov), ratio(sgv, hgv), ratio(hgv, hov),
                   ratio(sgv, sov)))


def main(argv):
    if len(argv) == 3 and argv[1] == "--table":
        table(argv[2])
        return 0
    if len(argv) != 3:
        sys.stderr.write("usage: plot_gmm.py BENCHMARK_JSON OUT_PNG | --table BENCHMARK_JSON\n")
        return 2
    times = read_times(argv[1])
    if not times:
        sys.stderr.write("plot_gmm.py: no BM_Gmm_* results in %s\n" % argv[1])
        return 1
    plot(times, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
