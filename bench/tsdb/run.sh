#!/usr/bin/env bash
# run.sh -- corral's tsdb against VictoriaMetrics on the shared generator's data, in one invocation.
#
# Both servers go through ../shared/bench/tsdb/run_target.sh with the same dataset file: start, HTTP
# import of the whole Prometheus text file, flush, CPU and RSS, disk after background work settles
# (VictoriaMetrics also after its force_merge), then query_bench.py. report.py prints the table with
# each figure as a ratio to VictoriaMetrics. Data, server directories and results go to
# $PEERBENCH_DIR/tsdb (default ~/.cache/peerbench), never into the repository.
#
# env: SERIES (1000) SAMPLES (8640) SEED (42) REPS (5) CORRAL_BIN (build/corral-aggregator)
#      PEERS ("vm corral") CPUS (taskset list for the servers, empty = none)
#      VM_PORT (18428) CORRAL_PORT (18500) KEEP (1 = keep corral's data dir for inspection)
# SPDX-License-Identifier: Apache-2.0
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench/tsdb}
SERIES=${SERIES:-1000}; SAMPLES=${SAMPLES:-8640}; SEED=${SEED:-42}; REPS=${REPS:-5}
PEERS=${PEERS:-vm corral}; CPUS=${CPUS:-}
VM_PORT=${VM_PORT:-18428}; CORRAL_PORT=${CORRAL_PORT:-18500}
CORRAL_BIN=${CORRAL_BIN:-$ROOT/build/corral-aggregator}
WORK=${PEERBENCH_DIR:-$HOME/.cache/peerbench}/tsdb
TAG=${SERIES}x${SAMPLES}-seed$SEED
DS=$WORK/dataset/$TAG
RES=$WORK/results/corral-$TAG
mkdir -p "$WORK/dataset" "$RES"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

[ -x "$CORRAL_BIN" ] || { echo "run.sh: no $CORRAL_BIN (build first, or set CORRAL_BIN)" >&2; exit 1; }
command -v victoria-metrics > /dev/null || { echo "run.sh: apt-get install victoria-metrics" >&2; exit 1; }
if [ ! -s "$DS.meta.json" ] || [ ! -s "$DS.prom" ]; then
  log "generating $TAG"
  "$SHARED/gen.py" --series "$SERIES" --samples "$SAMPLES" --seed "$SEED" --prom "$DS.prom" \
    --meta "$DS.meta.json"
fi
PART=$(python3 -c "import json,time;print(time.strftime('%Y_%m',time.gmtime(json.load(open('$DS.meta.json'))['start_ms']//1000)))")
{
  echo "date: $(date -u +%FT%TZ)"; echo "cpus: $(nproc)"; echo "dataset: $TAG"
  echo "victoria-metrics: $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null)"
  echo "corral: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) + working tree"
} > "$RES/versions.txt"

if [[ " $PEERS " == *" vm "* ]]; then
  log "VictoriaMetrics"
  NAME=victoria-metrics \
  START_CMD="victoria-metrics -storageDataPath={data} -httpListenAddr=127.0.0.1:{port} -retentionPeriod=100y -search.disableCache -loggerLevel=WARN" \
  META="$DS.meta.json" PROM_FILE="$DS.prom" DATA_DIR="$WORK/vm-data" PORT="$VM_PORT" \
  FLUSH_PATH=/internal/force_flush POST_SETTLE_PATH="/internal/force_merge?partition_prefix=$PART" \
  REPS="$REPS" CPUS="$CPUS" OUT_JSON="$RES/victoria-metrics.json" \
    "$SHARED/run_target.sh" > /dev/null
  rm -rf "$WORK/vm-data"
fi

if [[ " $PEERS " == *" corral "* ]]; then
  log "corral-aggregator"
  # The bench token is not a secret: the server listens on loopback only, for this run.
  NAME=corral START_CMD="env CORRAL_TOKEN=bench-token $CORRAL_BIN --data-dir {data} --listen 127.0.0.1:{port} --log-level warn" \
  AUTH_TOKEN=bench-token READY_PATH=/healthz FLUSH_PATH=/api/v1/admin/flush FLUSH_METHOD=POST \
  VERIFY=0 MIN_SETTLE_S=3 \
  META="$DS.meta.json" PROM_FILE="$DS.prom" DATA_DIR="$WORK/corral-data" PORT="$CORRAL_PORT" \
  REPS="$REPS" CPUS="$CPUS" OUT_JSON="$RES/corral.json" \
    "$SHARED/run_target.sh" > /dev/null
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK/corral-data"
fi

"$HERE/report.py" "$RES"
