#!/bin/sh
# agent.sh -- container logs end to end: a gen.py CRI tree through the real corral-agent (--log-root) and
# corral-aggregator over HTTP on loopback, against `cat` of the same files.
#
#   BUILD=build-lg ./bench/logs/agent.sh                    500 k lines, 10 files
#   LINES=2000000 FILES=20 INTERVAL=100ms ./bench/logs/agent.sh
#
# Makes the tree once under $PEERBENCH_DIR/logs (default ~/.cache/peerbench), then REPS times: `cat` of
# every file to /dev/null (the I/O floor, warm cache), and a fresh aggregator + agent that ship the whole
# tree; the run ends when the aggregator's /loki/api/v1/index/stats counts every record of meta.json.
# Prints medians of records/s, the agent's CPU us per record (utime + stime from /proc), its VmHWM, and
# the wall time as a ratio to cat's. The agent reads at most 8 MiB per collection pass, so --interval
# bounds its throughput (INTERVAL, default 100ms, the smallest the agent takes).
# SPDX-License-Identifier: Apache-2.0
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
shared=$(cd "$root/../shared/bench/logs" && pwd)
BUILD=${BUILD:-build}
LINES=${LINES:-500000}
FILES=${FILES:-10}
REPS=${REPS:-3}
INTERVAL=${INTERVAL:-100ms}
D=${PEERBENCH_DIR:-$HOME/.cache/peerbench}/logs
tree=$D/tree-$FILES-$LINES
mkdir -p "$D"
[ -f "$tree/meta.json" ] || python3 "$shared/gen.py" tree --out "$tree" --files "$FILES" --lines "$LINES"
exec python3 - "$root/$BUILD" "$tree" "$D/agent-run" "$REPS" "$INTERVAL" "$root/tests/data" <<'PY'
import json, os, shutil, signal, socket, statistics, subprocess, sys, time, urllib.parse, urllib.request
build, tree, work, reps, interval, data = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
meta = json.load(open(os.path.join(tree, "meta.json")))
records = meta["records"]
tick = os.sysconf("SC_CLK_TCK")

def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def files():
    for d, _, fs in os.walk(os.path.join(tree, "var/log/pods")):
        for f in fs:
            yield os.path.join(d, f)

def run_cat():
    t = time.monotonic()
    for f in files():
        subprocess.run(["cat", f], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - t

def stored(url):
    q = urllib.parse.quote('{node="bench"}')
    u = "%s/loki/api/v1/index/stats?query=%s&start=0&end=%d" % (url, q, (int(time.time()) + 86400) * 10**9)
    try:
        return json.load(urllib.request.urlopen(u, timeout=10)).get("entries", 0)
    except Exception:
        return -1

def proc_stats(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    cpu = (int(f[11]) + int(f[12])) / tick
    hwm = [l for l in open("/proc/%d/status" % pid) if l.startswith("VmHWM")][0].split()[1]
    return cpu, int(hwm)

def run_agent():
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tok = os.path.join(work, "token"); open(tok, "w").write("bench-token\n")
    ap, np = port(), port()
    url = "http://127.0.0.1:%d" % ap
    log = open(os.path.join(work, "daemons.log"), "w")
    agg = subprocess.Popen([os.path.join(build, "corral-aggregator"), "--listen", "127.0.0.1:%d" % ap, "--data-dir",
                            os.path.join(work, "agg"), "--token-file", tok, "--dns-listen", "off"], stdout=log, stderr=log)
    for _ in range(100):
        if stored(url) >= 0: break
        time.sleep(0.1)
    t = time.monotonic()
    agent = subprocess.Popen([os.path.join(build, "corral-agent"), "--node", "bench", "--aggregator", url, "--token-file",
                              tok, "--interval", interval, "--listen", "127.0.0.1:%d" % np, "--cgroup-root",
                              os.path.join(data, "cgroup-v2"), "--proc-root", os.path.join(data, "proc"),
                              "--state-dir", os.path.join(work, "state"), "--log-root", tree], stdout=log, stderr=log)
    deadline = t + 600
    while stored(url) < records and time.monotonic() < deadline:
        time.sleep(0.05)
    wall = time.monotonic() - t
    cpu, hwm = proc_stats(agent.pid)
    n = stored(url)
    for p in (agent, agg):
        p.send_signal(signal.SIGTERM); p.wait(30)
    if n != records:
        sys.exit("stored %d of %d records" % (n, records))
    return wall, cpu, hwm

rows = []
for _ in range(reps):
    c = run_cat()
    w, cpu, hwm = run_agent()
    rows.append((c, w, cpu, hwm))
med = lambda i: statistics.median(r[i] for r in rows)
print("tree: %d lines, %d records, %.1f MB, %d files; agent --interval %s; %d reps, medians" %
      (meta["lines"], records, meta["bytes"] / 1e6, meta["files_count"], interval, reps))
print("| run | wall s | records/s | agent CPU us/record | agent VmHWM MiB | wall / cat |")
print("|---|---|---|---|---|---|")
print("| cat | %.3f | %.0f | - | - | 1.00 |" % (med(0), records / med(0)))
print("| agent -> aggregator | %.3f | %.0f | %.3f | %.1f | %.1f |" % (med(1), records / med(1), med(2) * 1e6 / records,
      med(3) / 1024, med(1) / med(0)))
PY
