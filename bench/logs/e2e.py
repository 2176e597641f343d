#!/usr/bin/env python3
"""e2e.py -- every record of a gen.py tree through the real agent and aggregator, exactly once, with kills.

  BUILD=build bench/logs/e2e.py [clean] [aggregator] [agent]      (default: all three runs)
  LINES=500000 FILES=10 bench/logs/e2e.py clean                   a quicker tree

Uses the tree of ../shared/bench/logs/gen.py under $PEERBENCH_DIR/logs (default ~/.cache/peerbench; made
once, by default the generator's full size: 5 M lines, 50 files). Each run starts a fresh corral-aggregator
and corral-agent (--log-root on the tree, --state-dir, a disk spool) on loopback ports, and:

  clean       ships the whole tree;
  aggregator  SIGKILLs the aggregator when it has appended 25 % of the records, restarts it on the same
              data directory, SIGKILLs it again when the new process has appended another 30 %, restarts it;
  agent       SIGKILLs the agent at 40 %, restarts it on the same --state-dir.

A run has shipped everything when the aggregator's appended counter stays still for SETTLE_S seconds
(default 8) and /loki/api/v1/index/stats counts at least the tree's records. Then every stream is read
back through GET /loki/api/v1/query_range (one stream per query, forward, time windows narrowed until a
window holds fewer than the 5,000 limit: no paging at equal timestamps) and compared with the tree,
which is re-read: its bytes must hash to meta.json's sha256 (the generator's content hash), and its CRI
lines, P pieces joined to F, give the expected (timestamp, message) records of each (file, stream).
Printed per run: records queried / meta.json's records, whether the tree hash and the records hash
(sha256 over every stream's sorted records, both sides) match, lost, duplicated (an expected record
delivered more than once), split (a delivered record that is no record of the tree: a piece or a join of
the wrong pieces), extra streams, the shipping time, the aggregator's VmHWM (the last process's, with
kills) and the load average at the end of shipping. Exit 1 if any run is off. Each run holds the
machine-wide benchmark lock (flock /tmp/corral-bench.lock) while it ships, not while it verifies.
SPDX-License-Identifier: Apache-2.0
"""
import calendar
import collections
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "bench", "logs")
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
LINES, FILES = int(os.environ.get("LINES", "5000000")), int(os.environ.get("FILES", "50"))
SETTLE_S = float(os.environ.get("SETTLE_S", "8"))
LIMIT = 5000
LOCK = "/tmp/corral-bench.lock"
NODE = "bench"


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url, timeout=120):
    try:
        return urllib.request.urlopen(url, timeout=timeout).read()
    except urllib.error.HTTPError as e:
        raise SystemExit("%s: %d %s" % (url, e.code, e.read().decode(errors="replace")))


class Stack:
    """An aggregator and an agent on one work directory; each can be killed and restarted in place.
    agg_pre / agent_pre go before each command (e.g. perf record); bench/logs/agent.sh uses this too."""

    def __init__(self, tree, work, interval="10s", agg_pre=(), agent_pre=()):
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        self.work, self.log = work, open(os.path.join(work, "daemons.log"), "w")
        tok = os.path.join(work, "token")
        open(tok, "w").write("e2e-token\n")
        ap = port()
        self.url = "http://127.0.0.1:%d" % ap
        data = os.path.join(ROOT, "tests", "data")
        self.agg_cmd = list(agg_pre) + [
            os.path.join(BUILD, "corral-aggregator"), "--listen", "127.0.0.1:%d" % ap, "--data-dir",
            os.path.join(work, "agg"), "--token-file", tok, "--dns-listen", "off"]
        self.agent_cmd = list(agent_pre) + [
            os.path.join(BUILD, "corral-agent"), "--node", NODE, "--aggregator", self.url, "--token-file", tok,
            "--interval", interval, "--listen", "127.0.0.1:%d" % port(), "--cgroup-root",
            os.path.join(data, "cgroup-v2"), "--proc-root", os.path.join(data, "proc"), "--state-dir",
            os.path.join(work, "state"), "--log-root", tree]
        self.agg = self.agent = None
        self.start_agg()
        self.start_agent()

    def start_agg(self):
        self.agg = subprocess.Popen(self.agg_cmd, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while self.appended() < 0:
            if time.monotonic() > deadline or self.agg.poll() is not None:
                sys.exit("the aggregator did not come up (logs in %s)" % self.work)
            time.sleep(0.05)

    def start_agent(self):
        self.agent = subprocess.Popen(self.agent_cmd, stdout=self.log, stderr=self.log)

    def kill(self, which):
        p = getattr(self, which)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def appended(self):
        try:
            for l in get(self.url + "/metrics", 10).decode().splitlines():
                if l.startswith("corral_log_entries_appended_total "):
                    return int(float(l.split()[1]))
        except OSError:
            pass
        return -1

    def stored(self):
        q = urllib.parse.quote('{node="%s"}' % NODE)
        u = "%s/loki/api/v1/index/stats?query=%s&start=0&end=%d" % (self.url, q, (int(time.time()) + 86400) * 10**9)
        return json.loads(get(u, 600)).get("entries", 0)

    def wait_appended(self, n, deadline):
        while self.appended() < n:
            if time.monotonic() > deadline:
                sys.exit("the aggregator appended %d of %d records in time (logs in %s)" % (self.appended(), n, self.work))
            time.sleep(0.02)

    def settle(self, want, deadline):
        last, since = -2, time.monotonic()
        while time.monotonic() < deadline:
            a = self.appended()
            if a != last:
                last, since = a, time.monotonic()
            elif time.monotonic() - since >= SETTLE_S and self.stored() >= want:
                return since
            time.sleep(0.2)
        return since

    def stop(self):
        for p in (self.agent, self.agg):
            p.send_signal(signal.SIGTERM)
            p.wait(60)


# ---- the tree: expected records -------------------------------------------------------------------------

_secs = {}


def ts_ns(t):
    """RFC 3339 with an optional fraction of up to 9 digits, UTC."""
    t = t.decode()
    base, _, frac = t[:-1].partition(".")
    s = _secs.get(base)
    if s is None:
        s = _secs[base] = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return s * 10**9 + int((frac + "000000000")[:9])


def expected(path, hasher):
    """{"stdout"|"stderr": [(ts_ns, message)]} of one CRI file, P pieces joined to their F."""
    data = open(path, "rb").read()
    hasher.update(data)
    out = {"stdout": [], "stderr": []}
    open_piece = {}
    for line in data.split(b"\n")[:-1]:
        t, stream, tag, msg = line.split(b" ", 3) if line.count(b" ") >= 3 else line.split(b" ", 2) + [b""]
        stream = stream.decode()
        if tag == b"P":
            ts, acc = open_piece.get(stream, (None, []))
            open_piece[stream] = (ts if ts is not None else ts_ns(t), acc + [msg])
            continue
        if stream in open_piece:
            ts, acc = open_piece.pop(stream)
            out[stream].append((ts, b"".join(acc) + msg))
        else:
            out[stream].append((ts_ns(t), msg))
    return out


# ---- the aggregator: delivered records --------------------------------------------------------------------

def selector(f, stream):
    return '{node="%s", namespace="%s", pod="%s", container="%s", stream="%s"}' % (
        NODE, f["namespace"], f["pod"], f["container"], stream)


def query(url, sel, start, end):
    u = "%s/loki/api/v1/query_range?%s" % (url, urllib.parse.urlencode(
        dict(query=sel, start=start, end=end, limit=LIMIT, direction="forward")))
    vals = []
    for s in json.loads(get(u))["data"]["result"]:
        vals += s["values"]
    return vals


def delivered(url, sel, lo, hi, width):
    """Every (ts_ns, message) of one stream in [lo, hi], from windows of width ns at first, halved while one
    holds the limit and doubled while they hold few."""
    out, start = [], lo
    while start <= hi:
        end = min(hi, start + width - 1)
        vals = query(url, sel, start, end)
        if len(vals) >= LIMIT and end > start:
            width = max(1, width // 2)
            continue
        if len(vals) >= LIMIT:
            sys.exit("%s: %d or more records at one nanosecond %d" % (sel, LIMIT, start))
        out += [(int(t), l.encode()) for t, l in vals]
        start = end + 1
        if len(vals) < LIMIT // 4:
            width *= 2
    return out


def verify(url, tree, meta):
    tree_hash = hashlib.sha256()
    h_exp, h_got = hashlib.sha256(), hashlib.sha256()
    res = collections.Counter()
    streams = set()
    for f in meta["files"]:
        exp = expected(os.path.join(tree, f["real_path"]), tree_hash)
        for stream in ("stdout", "stderr"):
            want = sorted(exp[stream])
            sel = selector(f, stream)
            streams.add(sel)
            width = max(1, (want[-1][0] - want[0][0]) * 2000 // len(want)) if want else 2**40
            # from 10^10 ns: the API reads a number of at most 10 digits as seconds
            got = sorted(delivered(url, sel, 10**10, 2**62, width))
            for h, recs in ((h_exp, want), (h_got, got)):
                h.update(sel.encode() + b"\0")
                for t, m in recs:
                    h.update(b"%d %d " % (t, len(m)) + m)
            res["records"] += len(got)
            w, g = collections.Counter(want), collections.Counter(got)
            res["lost"] += sum((w - g).values())
            extra = g - w
            res["duplicated"] += sum(v for k, v in extra.items() if k in w)
            res["split"] += sum(v for k, v in extra.items() if k not in w)
    n = json.loads(get("%s/loki/api/v1/series?%s" % (url, urllib.parse.urlencode(
        {"match[]": '{node="%s"}' % NODE, "start": 0, "end": 2**62}))))["data"]
    res["extra_streams"] = max(0, len(n) - sum(1 for _ in streams))
    res["tree_hash_ok"] = tree_hash.hexdigest() == meta["sha256"]
    res["records_hash_ok"] = h_exp.digest() == h_got.digest()
    return res


def run(kind, tree, meta, work):
    lock = open(LOCK, "a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # the machine-wide benchmark lock, held while shipping
    t0 = time.monotonic()
    st = Stack(tree, work)
    try:
        return ship_and_verify(st, kind, tree, meta, work, t0, lock)
    finally:
        lock.close()
        for p in (st.agent, st.agg):
            if p.poll() is None:
                p.kill()
                p.wait()


def ship_and_verify(st, kind, tree, meta, work, t0, lock):
    R = meta["records"]
    deadline = t0 + 1800
    if kind == "aggregator":
        for frac in (0.25, 0.30):
            st.wait_appended(int(R * frac), deadline)
            st.kill("agg")
            time.sleep(0.5)
            st.start_agg()
    elif kind == "agent":
        st.wait_appended(int(R * 0.40), deadline)
        st.kill("agent")
        time.sleep(0.5)
        st.start_agent()
    wall = st.settle(R, deadline) - t0
    hwm = int([l for l in open("/proc/%d/status" % st.agg.pid) if l.startswith("VmHWM")][0].split()[1])
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    fcntl.flock(lock, fcntl.LOCK_UN)
    t1 = time.monotonic()
    res = verify(st.url, tree, meta)
    st.stop()
    ok = (res["records"] == R and res["tree_hash_ok"] and res["records_hash_ok"] and not res["lost"]
          and not res["duplicated"] and not res["split"] and not res["extra_streams"])
    print("| %s | %d / %d | %s | %s | %d | %d | %d | %d | %.1f | %.0f | %.1f | %s | %s |" % (
        kind, res["records"], R, "yes" if res["tree_hash_ok"] else "NO", "yes" if res["records_hash_ok"] else "NO",
        res["lost"], res["duplicated"], res["split"], res["extra_streams"], wall, hwm / 1024, time.monotonic() - t1, load,
        "ok" if ok else "FAIL"), flush=True)
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    return ok


def main():
    d = os.path.join(os.environ.get("PEERBENCH_DIR", os.path.expanduser("~/.cache/peerbench")), "logs")
    tree = os.path.join(d, "tree-%d-%d" % (FILES, LINES))
    if not os.path.exists(os.path.join(tree, "meta.json")):
        subprocess.run([sys.executable, os.path.join(SHARED, "gen.py"), "tree", "--out", tree, "--files", str(FILES),
                        "--lines", str(LINES)], check=True)
    meta = json.load(open(os.path.join(tree, "meta.json")))
    kinds = sys.argv[1:] or ["clean", "aggregator", "agent"]
    print("tree: %d lines, %d records, %.2f GB, %d files (ship s: until the last record was appended)" % (
        meta["lines"], meta["records"], meta["bytes"] / 1e9, meta["files_count"]))
    print("| run | records queried / meta | tree sha256 = meta | records hash = tree's | lost | duplicated | split "
          "| extra streams | ship s | aggregator VmHWM MiB | verify s | load avg | |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ok = all([run(k, tree, meta, os.path.join(d, "e2e-%d-%s" % (os.getpid(), k))) for k in kinds])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
