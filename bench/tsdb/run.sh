#!/usr/bin/env bash
# run.sh -- corral's tsdb against VictoriaMetrics and Prometheus on the shared generator's data, in one
# invocation.
#
# VictoriaMetrics and corral go through ../shared/bench/tsdb/run_target.sh with the same dataset file:
# start, HTTP import of the whole Prometheus text file, flush, CPU and RSS, disk after background work
# settles (VictoriaMetrics also after its force_merge), then query_bench.py. Prometheus is loaded as
# ../shared/bench/tsdb/run_peers.sh does it: promtool tsdb create-blocks-from openmetrics (the
# OpenMetrics file is made from the Prometheus text one when missing: the same lines with second
# timestamps), a prometheus server on the blocks, its own compaction left to finish, then the same
# queries. report.py prints the table with each figure as a ratio to VictoriaMetrics and to Prometheus,
# and whether the answers agree. Data, server directories and results go to $PEERBENCH_DIR/tsdb
# (default ~/.cache/peerbench), never into the repository.
#
# QUERY_ONLY=1 loads nothing: every server starts on the directory an earlier KEEP=1 run kept, then the
# peers answer the queries one after the other within one hold of the bench lock (so they see the same
# machine), and the servers stop.
#
# Every timed part (ingest, queries) runs under flock $BENCH_LOCK; loading Prometheus' blocks (not
# timed) does not hold it.
#
# env: SERIES (1000) SAMPLES (8640) SEED (42) REPS (5) CORRAL_BIN (build/corral-aggregator)
#      PEERS ("vm prom corral") CPUS (taskset list for the servers, empty = none)
#      VM_PORT (18428) PROM_PORT (19090) CORRAL_PORT (18500) KEEP (1 = keep the servers' directories)
#      QUERY_ONLY (1 = only queries, on kept directories) PROM_SETTLE_S (300)
#      CORRAL_CACHE (corral's --tsdb-cache-bytes, 128Mi; 0 = no cache of decoded series)
#      BENCH_LOCK (/tmp/corral-bench.lock)
# SPDX-License-Identifier: Apache-2.0
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench/tsdb}
SERIES=${SERIES:-1000}; SAMPLES=${SAMPLES:-8640}; SEED=${SEED:-42}; REPS=${REPS:-5}
PEERS=${PEERS:-vm prom corral}; CPUS=${CPUS:-}; QUERY_ONLY=${QUERY_ONLY:-0}
VM_PORT=${VM_PORT:-18428}; PROM_PORT=${PROM_PORT:-19090}; CORRAL_PORT=${CORRAL_PORT:-18500}
PROM_SETTLE_S=${PROM_SETTLE_S:-300}; BENCH_LOCK=${BENCH_LOCK:-/tmp/corral-bench.lock}
CORRAL_BIN=${CORRAL_BIN:-$ROOT/build/corral-aggregator}
WORK=${PEERBENCH_DIR:-$HOME/.cache/peerbench}/tsdb
TAG=${SERIES}x${SAMPLES}-seed$SEED
DS=$WORK/dataset/$TAG
RES=$WORK/results/corral-$TAG
mkdir -p "$WORK/dataset" "$RES"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
locked() { flock "$BENCH_LOCK" "$@"; }
# timed NAME CMD...: CMD under the lock, with the load average at its start and end in versions.txt.
timed() {
  locked bash -c 'v=$1; shift; echo "load when $0 started: $(cut -d" " -f1-3 /proc/loadavg)" >> "$v"; "$@"; rc=$?
    echo "load when $0 ended: $(cut -d" " -f1-3 /proc/loadavg)" >> "$v"; exit $rc' "$1" "$RES/versions.txt" "${@:2}"
}
pin=""; [ -n "$CPUS" ] && pin="taskset -c $CPUS"

VM_CMD="victoria-metrics -storageDataPath={data} -httpListenAddr=127.0.0.1:{port} -retentionPeriod=100y -search.disableCache -loggerLevel=WARN"
# The bench token is not a secret: the server listens on loopback only, for this run.
CORRAL_CMD="env CORRAL_TOKEN=bench-token $CORRAL_BIN --data-dir {data} --listen 127.0.0.1:{port} --log-level warn --tsdb-cache-bytes ${CORRAL_CACHE:-128Mi}"
PROM_CMD="prometheus --config.file=$WORK/prometheus.yml --storage.tsdb.path={data} --storage.tsdb.retention.time=100y --web.listen-address=127.0.0.1:{port} --log.level=warn"

[ -x "$CORRAL_BIN" ] || { echo "run.sh: no $CORRAL_BIN (build first, or set CORRAL_BIN)" >&2; exit 1; }
for t in victoria-metrics prometheus promtool; do
  command -v $t > /dev/null || { echo "run.sh: no $t (apt-get install victoria-metrics prometheus)" >&2; exit 1; }
done
if [ ! -s "$DS.meta.json" ] || [ ! -s "$DS.prom" ]; then
  log "generating $TAG"
  "$SHARED/gen.py" --series "$SERIES" --samples "$SAMPLES" --seed "$SEED" --prom "$DS.prom" \
    --meta "$DS.meta.json"
fi
PART=$(python3 -c "import json,time;print(time.strftime('%Y_%m',time.gmtime(json.load(open('$DS.meta.json'))['start_ms']//1000)))")
{
  echo "date: $(date -u +%FT%TZ)"; echo "cpus: $(nproc)"; echo "dataset: $TAG"; echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "victoria-metrics: $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null)"
  echo "prometheus: $(dpkg-query -W -f='${Version}' prometheus 2>/dev/null)"
  echo "corral: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) + working tree"
  echo "mode: $([ "$QUERY_ONLY" = 1 ] && echo queries only || echo load and queries)"
} > "$RES/versions.txt"
printf 'global:\n  scrape_interval: 1h\n' > "$WORK/prometheus.yml"

# serve NAME CMD DIR PORT READY_PATH: starts CMD on DIR, waits until READY_PATH answers; sets SRV_PID.
SRV_PIDS=()
serve() {
  local cmd=${2//\{data\}/$3}
  cmd=${cmd//\{port\}/$4}
  bash -c "exec $pin $cmd" >> "$3.log" 2>&1 &
  SRV_PID=$!
  SRV_PIDS+=("$SRV_PID")
  until curl -fsS -o /dev/null "http://127.0.0.1:$4$5" 2>/dev/null; do
    kill -0 "$SRV_PID" 2>/dev/null || { log "$1 died, see $3.log"; exit 1; }
    sleep 0.2
  done
}
unserve() { kill "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; }
unserve_all() { for p in "${SRV_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap unserve_all EXIT

# queries NAME PORT: query_bench.py against the server, under the lock, into $RES/NAME.queries.json.
queries() {
  locked "$SHARED/query_bench.py" --url "http://127.0.0.1:$2" --meta "$DS.meta.json" --reps "$REPS" \
    --name "$1" --out "$RES/$1.queries.json" >&2
}

# Prometheus: blocks from the OpenMetrics file, then a server on them until its compaction settles.
prom_load() {
  if [ ! -s "$DS.om" ]; then
    log "OpenMetrics copy of $TAG (timestamps in seconds, '# EOF')"
    LC_ALL=C sed -e 's/000$//' "$DS.prom" > "$DS.om.tmp"
    echo '# EOF' >> "$DS.om.tmp"
    mv "$DS.om.tmp" "$DS.om"
  fi
  log "promtool tsdb create-blocks-from openmetrics"
  rm -rf "$WORK/prom-data" "$WORK/prom-data.log"
  mkdir -p "$WORK/prom-data"
  $pin promtool tsdb create-blocks-from openmetrics -q "$DS.om" "$WORK/prom-data" > /dev/null
  log "prometheus: waiting for its compaction"
  serve prometheus "$PROM_CMD" "$WORK/prom-data" "$PROM_PORT" /-/ready
  local el=0 prev=-1 stable=0 b
  while [ $el -lt "$PROM_SETTLE_S" ]; do
    b=$(curl -fsS "http://127.0.0.1:$PROM_PORT/metrics" | awk '$1=="prometheus_tsdb_blocks_loaded"{printf "%d", $2}')
    if [ "$b" = "$prev" ]; then stable=$((stable+5)); else stable=0; fi
    prev=$b
    [ $el -ge 75 ] && [ $stable -ge 30 ] && break
    sleep 5; el=$((el+5))
  done
  unserve
}

# peer NAME: loads and queries one peer.
peer() {
  case $1 in
  vm) NAME=victoria-metrics START_CMD="$VM_CMD" \
        META="$DS.meta.json" PROM_FILE="$DS.prom" DATA_DIR="$WORK/vm-data" PORT="$VM_PORT" \
        FLUSH_PATH=/internal/force_flush POST_SETTLE_PATH="/internal/force_merge?partition_prefix=$PART" \
        REPS="$REPS" CPUS="$CPUS" OUT_JSON="$RES/victoria-metrics.json" \
          timed victoria-metrics "$SHARED/run_target.sh" > /dev/null
        cp "$WORK/vm-data.queries.json" "$RES/victoria-metrics.queries.json";;
  prom) prom_load
      serve prometheus "$PROM_CMD" "$WORK/prom-data" "$PROM_PORT" /-/ready
      queries prometheus "$PROM_PORT"; unserve;;
  corral) NAME=corral START_CMD="$CORRAL_CMD" \
        AUTH_TOKEN=bench-token READY_PATH=/healthz FLUSH_PATH=/api/v1/admin/flush FLUSH_METHOD=POST \
        VERIFY=0 MIN_SETTLE_S=3 \
        META="$DS.meta.json" PROM_FILE="$DS.prom" DATA_DIR="$WORK/corral-data" PORT="$CORRAL_PORT" \
        REPS="$REPS" CPUS="$CPUS" OUT_JSON="$RES/corral.json" \
          timed corral "$SHARED/run_target.sh" > /dev/null
        cp "$WORK/corral-data.queries.json" "$RES/corral.queries.json";;
  *) echo "run.sh: unknown peer $1" >&2; exit 1;;
  esac
}

# Every server up on its kept directory, then all queries in one hold of the lock.
query_only() {
  local names=() ports=() i
  for p in $PEERS; do
    case $p in
    vm) serve victoria-metrics "$VM_CMD" "$WORK/vm-data" "$VM_PORT" /api/v1/labels
        names+=(victoria-metrics); ports+=("$VM_PORT");;
    prom) serve prometheus "$PROM_CMD" "$WORK/prom-data" "$PROM_PORT" /-/ready
        names+=(prometheus); ports+=("$PROM_PORT");;
    corral) serve corral "$CORRAL_CMD" "$WORK/corral-data" "$CORRAL_PORT" /healthz
        names+=(corral); ports+=("$CORRAL_PORT");;
    *) echo "run.sh: unknown peer $p" >&2; exit 1;;
    esac
  done
  exec 9> "$BENCH_LOCK"
  flock 9
  echo "load when the queries started: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$RES/versions.txt"
  for i in "${!names[@]}"; do
    log "${names[$i]}"
    "$SHARED/query_bench.py" --url "http://127.0.0.1:${ports[$i]}" --meta "$DS.meta.json" --reps "$REPS" \
      --name "${names[$i]}" --out "$RES/${names[$i]}.queries.json" >&2
  done
  echo "load when the queries ended: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$RES/versions.txt"
  flock -u 9
  unserve_all
}

if [ "$QUERY_ONLY" = 1 ]; then
  query_only
else
  for p in $PEERS; do
    log "$p"
    peer "$p"
  done
fi
if [ "${KEEP:-0}" != 1 ] && [ "$QUERY_ONLY" != 1 ]; then
  rm -rf "$WORK/vm-data" "$WORK/corral-data" "$WORK/prom-data"
fi
"$HERE/report.py" "$RES"
