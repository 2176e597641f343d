#!/bin/sh
# run.sh -- logship against the I/O limit on a gen.py CRI tree (../shared/bench/logs/gen.py).
#
#   BUILD=build-ls ./bench/logs/run.sh            full size: 5 M lines, 50 files (1.08 GB)
#   LINES=500000 FILES=10 ./bench/logs/run.sh     quick
#
# Builds bench/logs/ls_bench.c against $BUILD's libls/libcm, makes the tree once under
# $PEERBENCH_DIR/logs (default ~/.cache/peerbench), then runs, REPS times each, as separate processes:
# cat (read every file: the I/O limit), tail (tailer alone), store (tailer into the log store with
# fsync per batch). Prints medians and each one's ratio to cat, checks the record count and message
# bytes against meta.json, and runs check_records.py on the stored records. Then steady: 20 k lines/s
# for 30 s written by gen.py append while the tailer wakes as the agent would.
# ZSTD_LEVEL=<n> sets the store's zstd level (default: the store's own, 1).
# Fluent Bit (the peer) has no Debian package: with $FLUENT_BIT set, ../shared/bench/logs/run_peers.sh
# runs it on the same tree; otherwise its figures from ../shared/bench/README.md are the bar.
# SPDX-License-Identifier: Apache-2.0
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
shared=$(cd "$root/../shared/bench/logs" && pwd)
BUILD=${BUILD:-build}
LINES=${LINES:-5000000}
FILES=${FILES:-50}
REPS=${REPS:-3}
D=${PEERBENCH_DIR:-$HOME/.cache/peerbench}/logs
tree=$D/tree-$FILES-$LINES
mkdir -p "$D"
bin=$D/ls_bench
cc -O2 -g -std=c11 -D_GNU_SOURCE -I"$root/logship" -I"$root/common" "$here/ls_bench.c" \
	"$root/$BUILD/logship/libls.a" "$root/$BUILD/common/libcm.a" \
	$(pkg-config --libs sqlite3 libzstd libprotobuf-c) -lpthread -lm -o "$bin"
[ -f "$tree/meta.json" ] || python3 "$shared/gen.py" tree --out "$tree" --files "$FILES" --lines "$LINES"
records=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['records'])" "$tree/meta.json")
sync
out=$D/results.jsonl
: > "$out"
for i in $(seq "$REPS"); do
	"$bin" cat "$tree" >> "$out"
	"$bin" tail "$tree" "$records" >> "$out"
	rm -rf "$D/store"
	"$bin" store "$tree" "$records" "$D/store" "$D/store.jsonl" >> "$out"
done
python3 - "$out" "$tree/meta.json" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
meta = json.load(open(sys.argv[2]))
med = lambda mode, k: statistics.median(r[k] for r in rows if r["mode"] == mode)
cat_wall = med("cat", "wall_s")
print("tree: %d lines, %d records, %.2f GB, %d files" % (meta["lines"], meta["records"], meta["bytes"] / 1e9, meta["files_count"]))
print("| run | records/s | CPU us/record | VmHWM MiB | wall s | wall / cat |")
print("|---|---|---|---|---|---|")
for mode in ("cat", "tail", "store"):
    n = meta["lines"] if mode == "cat" else meta["records"]
    print("| %s | %.0f | %.3f | %.0f | %.2f | %.2f |" % (mode, n / med(mode, "wall_s"), med(mode, "cpu_s") * 1e6 / n,
          med(mode, "vmhwm_kib") / 1024, med(mode, "wall_s"), med(mode, "wall_s") / cat_wall))
st = [r for r in rows if r["mode"] == "store"][-1]
print("store: %d entries (meta %d), %d message bytes (meta msg_bytes %d), %.2f disk bytes per record" %
      (st["store_entries"], meta["records"], st["store_bytes"], meta["msg_bytes"], st["disk_bytes_per_record"]))
ok = st["store_entries"] == meta["records"] and st["store_bytes"] == meta["msg_bytes"]
print("count and bytes:", "exact" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
PY
python3 "$shared/check_records.py" "$tree" "$D/store.jsonl" | tail -8

# steady: 20 k lines/s for 30 s into an empty tree of the same shape, the tailer waking as the agent
# would; it stops once it has every record gen.py wrote (or after 60 s). The share of a core is its
# whole CPU time over the 30 s of writing.
steady=$D/steady-$FILES
rm -rf "$steady" "$D/append.json"
python3 "$shared/gen.py" tree --out "$steady" --files "$FILES" --lines 0 > /dev/null
"$bin" steady "$steady" 60 "$D/append.json" > "$D/steady.json" &
spid=$!
python3 "$shared/gen.py" append --out "$steady" --rate 20000 --duration 30 | tail -1 > "$D/append.json.tmp"
mv "$D/append.json.tmp" "$D/append.json"
wait "$spid" || echo "steady: not every record arrived within 60 s"
python3 - "$D/steady.json" "$D/append.json" <<'PY'
import json, sys
r, a = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print("steady: %d of %d records, %.2f %% of a core over the %.0f s of writing (%.3f us CPU per record), VmHWM %.0f MiB" %
      (r["records"], a["records"], 100 * r["cpu_s"] / a["t"], a["t"], r["cpu_us_per_record"], r["vmhwm_kib"] / 1024))
PY
