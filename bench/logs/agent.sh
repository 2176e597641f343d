#!/bin/sh
# agent.sh -- container logs end to end: a gen.py CRI tree through the real corral-agent (--log-root) and
# corral-aggregator over HTTP on loopback, against `cat` of the same files.
#
#   BUILD=build-lp ./bench/logs/agent.sh                    500 k lines, 10 files
#   LINES=5000000 FILES=50 BUILD=build-lp ./bench/logs/agent.sh
#
# Makes the tree once under $PEERBENCH_DIR/logs (default ~/.cache/peerbench), then REPS times: `cat` of
# every file to /dev/null (the I/O floor, warm cache), and a fresh aggregator + agent (e2e.py's Stack)
# that ship the whole tree; a run ends when the aggregator's corral_log_entries_appended_total reaches
# the records of meta.json, and /loki/api/v1/index/stats must then count exactly that many. Prints medians of
# records/s, the agent's and the aggregator's CPU us per record (utime + stime from /proc) and VmHWM, and
# the wall time as a ratio to cat's. The agent runs at INTERVAL (default 10s, its default): its logs
# passes follow each other while a backlog lasts, so the interval no longer bounds throughput.
#
# Then steady (STEADY_S seconds, default 30; 0 = skip): gen.py append writes STEADY_RATE lines/s
# (default 20000) into a fresh empty tree of FILES files under a running agent + aggregator; prints the
# agent's CPU over the writing time as a share of one core, its VmHWM, and how long after the last
# write the aggregator had every record.
#
# PERF=<file> / PERF_AGG=<file>: the agent / aggregator runs under `perf record -g` (its CPU and VmHWM
# columns are then perf's own). The load average is printed: the machine may be shared.
# SPDX-License-Identifier: Apache-2.0
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
shared=$(cd "$root/../shared/bench/logs" && pwd)
BUILD=${BUILD:-build}
LINES=${LINES:-500000}
FILES=${FILES:-10}
REPS=${REPS:-3}
INTERVAL=${INTERVAL:-10s}
STEADY_S=${STEADY_S:-30}
STEADY_RATE=${STEADY_RATE:-20000}
D=${PEERBENCH_DIR:-$HOME/.cache/peerbench}/logs
tree=$D/tree-$FILES-$LINES
mkdir -p "$D"
[ -f "$tree/meta.json" ] || python3 "$shared/gen.py" tree --out "$tree" --files "$FILES" --lines "$LINES"
export BUILD
exec python3 - "$here" "$tree" "$D/agent-run-$$" "$REPS" "$INTERVAL" "$shared" "$STEADY_S" "$STEADY_RATE" \
	"$FILES" <<'PY'
import json, os, shutil, statistics, subprocess, sys, time
here, tree, work, reps, interval = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
shared, steady_s, steady_rate, nfiles = sys.argv[6], float(sys.argv[7]), float(sys.argv[8]), int(sys.argv[9])
sys.path.insert(0, here)
import e2e
meta = json.load(open(os.path.join(tree, "meta.json")))
records = meta["records"]
tick = os.sysconf("SC_CLK_TCK")

def files():
    for d, _, fs in os.walk(os.path.join(tree, "var/log/pods")):
        for f in fs:
            yield os.path.join(d, f)

def run_cat():
    t = time.monotonic()
    for f in files():
        subprocess.run(["cat", f], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - t

def proc_stats(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    cpu = (int(f[11]) + int(f[12])) / tick
    hwm = [l for l in open("/proc/%d/status" % pid) if l.startswith("VmHWM")][0].split()[1]
    return cpu, int(hwm)

def start(root):
    """A fresh aggregator and agent tailing root (e2e.py's Stack), each under perf record if asked."""
    pre = lambda env: ["perf", "record", "-g", "-q", "-o", os.environ[env], "--"] if os.environ.get(env) else []
    return e2e.Stack(root, work, interval, pre("PERF_AGG"), pre("PERF"))

def stop(st, want):
    # index/stats decompresses every block under the store's lock: asked once, at the end (the wait
    # polls the aggregator's appended counter, which is cheap)
    n = st.stored()
    st.stop()
    if n != want:
        sys.exit("stored %d of %d records (daemon logs in %s)" % (n, want, work))
    shutil.rmtree(work, ignore_errors=True)

def run_agent():
    st = start(tree)
    t = time.monotonic()
    st.wait_appended(records, t + 600)
    wall = time.monotonic() - t
    cpu, hwm = proc_stats(st.agent.pid)
    acpu, ahwm = proc_stats(st.agg.pid)
    stop(st, records)
    return wall, cpu, hwm, acpu, ahwm

def run_steady():
    root = work + "-steady"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([sys.executable, os.path.join(shared, "gen.py"), "tree", "--out", root, "--files", str(nfiles),
                    "--lines", "0"], stdout=subprocess.DEVNULL, check=True)
    st = start(root)
    time.sleep(1)
    c0, _ = proc_stats(st.agent.pid)
    out = subprocess.run([sys.executable, os.path.join(shared, "gen.py"), "append", "--out", root, "--rate",
                          str(steady_rate), "--duration", str(steady_s)], stdout=subprocess.PIPE, check=True)
    a = json.loads(out.stdout.decode().strip().splitlines()[-1])
    t = time.monotonic()
    st.wait_appended(a["records"], t + 120)
    lag = time.monotonic() - t
    cpu, hwm = proc_stats(st.agent.pid)
    stop(st, a["records"])
    shutil.rmtree(root, ignore_errors=True)
    return a, cpu - c0, hwm, lag

rows = []
for _ in range(reps):
    c = run_cat()
    w, cpu, hwm, acpu, ahwm = run_agent()
    rows.append((c, w, cpu, hwm, acpu, ahwm))
med = lambda i: statistics.median(r[i] for r in rows)
print("tree: %d lines, %d records, %.1f MB, %d files; agent --interval %s; %d reps, medians" %
      (meta["lines"], records, meta["bytes"] / 1e6, meta["files_count"], interval, reps))
print("| run | wall s | records/s | agent CPU us/record | agent VmHWM MiB | aggregator CPU us/record | aggregator VmHWM MiB | wall / cat |")
print("|---|---|---|---|---|---|---|---|")
print("| cat | %.3f | %.0f | - | - | - | - | 1.00 |" % (med(0), records / med(0)))
print("| agent -> aggregator | %.3f | %.0f | %.3f | %.1f | %.3f | %.1f | %.1f |" % (med(1), records / med(1),
      med(2) * 1e6 / records, med(3) / 1024, med(4) * 1e6 / records, med(5) / 1024, med(1) / med(0)))
print("load average after the runs: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
if steady_s > 0:
    a, cpu, hwm, lag = run_steady()
    print("steady: %d lines (%d records) in %.1f s at --interval %s: agent CPU %.2f %% of a core (%.3f us per record), "
          "VmHWM %.1f MiB; every record stored %.1f s after the last write" %
          (a["lines"], a["records"], a["t"], interval, 100 * cpu / a["t"], cpu * 1e6 / max(a["records"], 1),
           hwm / 1024, lag))
PY
