#!/usr/bin/env bash
# scripts/cost.sh: what one durable append costs a three-node cluster. Starts three `shoal
# server` processes (replication 3) on loopback in a throwaway directory, waits for balanced
# leaders, runs one `shoal bench append` (the make bench workload: 256-byte events, 10,000
# streams, 64 callers, exact expected version), and prints, per server, the CPU time (user and
# system), system calls and voluntary context switches per append, and the first node's raft,
# transport and WAL rates from /metrics. Bounded: about a minute.
#
#   make build && scripts/cost.sh                  # 10 s, 64 callers
#   DURATION=20s CONCURRENCY=128 scripts/cost.sh
#   PROFILE=/tmp/n2.pprof scripts/cost.sh         # also a CPU profile of the second node
#   SHARDS=1024 scripts/cost.sh                   # a cluster created with 1024 shards (default 32)
#   WARMUP=90s scripts/cost.sh                    # a longer warm-up run (default 3s), past memtable flushes
#   KEEP_LOGS=/tmp/logs scripts/cost.sh           # copy the servers' logs there before cleaning up
#   SERVER_ARGS="--wal-commit-delay 2ms" scripts/cost.sh   # flags added to every server's
#   STRACE=/tmp/n2.strace scripts/cost.sh         # also count the second node's system calls (strace -c; slows it,
#                                                 # and its own CPU lands in the client's figure)
#
# The WAL rates include shoal_pebble_wal_fsync_seconds_total: divided by the fsyncs per second,
# it is the mean fsync latency.
#
# Extra arguments go to `shoal bench append`. Linux only (it reads /proc).
set -euo pipefail
cd "$(dirname "$0")/.."

SHOAL=${BIN:-bin/shoal}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
DURATION=${DURATION:-10s}
SECONDS_RUN=$(whole_seconds DURATION "$DURATION")
if [ "$SECONDS_RUN" -eq 0 ]; then echo "DURATION=$DURATION: give at least 1s" >&2; exit 2; fi
whole_seconds WARMUP "${WARMUP:-3s}" >/dev/null
CONCURRENCY=${CONCURRENCY:-64}
SHARDS=${SHARDS:-32}
WORK=$(mktemp -d /tmp/shoal-cost.XXXXXX)
PIDS=()
cleanup() {
  stop_nodes
  [ -n "${KEEP_LOGS:-}" ] && cp "$WORK"/*.log "$KEEP_LOGS"/ 2>/dev/null; rm -rf "$WORK"
}
trap cleanup EXIT

start_cluster "$SHARDS"

WORKLOAD=(--streams 10000 --event-size 256 --concurrency "$CONCURRENCY" --expected exact)
"$SHOAL" bench append --server 127.0.0.1:17400 "${WORKLOAD[@]}" --duration "${WARMUP:-3s}" --warmup 1s --stream-prefix warm- >/dev/null

counters() { # pid -> user-ticks system-ticks read-syscalls write-syscalls voluntary-switches minor-faults
  local stat
  read -r -a stat < <(cut -d' ' -f10,14,15 "/proc/$1/stat")
  echo "${stat[1]} ${stat[2]} $(awk '/^syscr/{r=$2} /^syscw/{w=$2} END{print r, w}' "/proc/$1/io")" \
    "$(cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/{s+=$2} END{print s}') ${stat[0]}"
}
metrics() {
  curl -fsS http://127.0.0.1:17480/metrics |
    grep -E '^(shoal_transport_batches_sent_total|shoal_transport_messages_sent_total|shoal_replica_entries_per_sync_count|shoal_replica_proposals_total|shoal_replica_apply_seconds_count|shoal_pebble_wal_fsyncs_total|shoal_pebble_wal_fsync_seconds_total|shoal_pebble_wal_bytes_written_total|shoal_pebble_flushed_bytes_total|shoal_pebble_compacted_bytes_total|shoal_replica_snapshots_sent_total|shoal_append_pipeline_batch_items_(sum|count))' |
    awk '{split($1, a, "{"); s[a[1]] += $2} END{for (k in s) print k, s[k]}' | sort
}

declare -A before
for p in "${PIDS[@]}"; do before[$p]=$(counters "$p"); done
metrics >"$WORK/m0"
profiler=
if [ -n "${PROFILE:-}" ]; then
  curl -fsS -o "$PROFILE" "http://127.0.0.1:17481/debug/pprof/profile?seconds=$SECONDS_RUN" &
  profiler=$!
fi
tracer=
if [ -n "${STRACE:-}" ]; then
  timeout -s INT "$SECONDS_RUN" strace -c -f -o "$STRACE" -p "${PIDS[1]}" 2>/dev/null &
  tracer=$!
fi
TIMEFORMAT='%U %S'
{ time "$SHOAL" bench append --server 127.0.0.1:17400 "${WORKLOAD[@]}" --duration "$DURATION" --warmup 0s \
  --stream-prefix run- --json "$WORK/run.json" "$@" | tail -4; } 2>"$WORK/client.time"
metrics >"$WORK/m1"
if [ -n "$profiler" ] && ! wait "$profiler"; then echo "the CPU profile failed (curl)" >&2; fi
# timeout ends strace when the run ends, and so exits 124.
if [ -n "$tracer" ]; then wait "$tracer" || true; fi
appends=$(grep -oE '"ops": *[0-9]+' "$WORK/run.json" | head -1 | grep -oE '[0-9]+') # appends, not events (--batch)
tick=$(getconf CLK_TCK)
echo
echo "per append (of $appends):"
i=1
for p in "${PIDS[@]}"; do
  read -r -a a < <(counters "$p")
  read -r -a b <<<"${before[$p]}"
  awk -v n="$appends" -v t="$tick" -v name="n$i" -v u=$((a[0] - b[0])) -v s=$((a[1] - b[1])) \
    -v r=$((a[2] - b[2])) -v w=$((a[3] - b[3])) -v v=$((a[4] - b[4])) -v f=$((a[5] - b[5])) 'BEGIN {
      printf "  %s: %.0f µs CPU (%.0f user, %.0f system), %.2f read and %.2f write syscalls, %.2f voluntary switches, %.2f page faults\n",
        name, (u + s) * 1e6 / t / n, u * 1e6 / t / n, s * 1e6 / t / n, r / n, w / n, v / n, f / n }'
  i=$((i + 1))
done
read -r cu cs < <(tail -1 "$WORK/client.time")
awk -v n="$appends" -v u="$cu" -v s="$cs" 'BEGIN {
  printf "  client (shoal bench): %.0f µs CPU (%.0f user, %.0f system)\n", (u + s) * 1e6 / n, u * 1e6 / n, s * 1e6 / n }'
echo "n1 per second:"
join "$WORK/m0" "$WORK/m1" | awk -v d="$SECONDS_RUN" '{printf "  %s %.4g\n", $1, ($3 - $2) / d}'
