#!/usr/bin/env bash
# scripts/addreplicas.sh: what adding replicas costs writers. Starts four `shoal server`
# processes on loopback (zones z1 z2 z3 z1, 32 shards, replication 3) in a throwaway directory,
# fills them for 15 s, lowers the replication factor to 2 and, once placement has removed a
# replica of every shard, starts a writer of 300 appends/s and raises the factor to 3 again:
# every shard's leader adds a replica, most of them on nodes that held one before, each brought
# up by a raft snapshot. Prints the writer's latencies, the leaders that stepped down, and the
# snapshot installs that overlapped Pebble's memtables (each waited for a flush, its shard's
# group paused meanwhile: docs/architecture.md, "Snapshots"). Bounded: about three minutes.
#
#   make build && scripts/addreplicas.sh
#   BIN=/tmp/shoal-old scripts/addreplicas.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SHOAL=${BIN:-bin/shoal}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
WORK=$(mktemp -d /tmp/shoal-addreplicas.XXXXXX)
PIDS=()
cleanup() {
  stop_nodes
  rm -rf "$WORK"
}
trap cleanup EXIT

SERVER=127.0.0.1:17910
SERVER_ARGS="--replication 3"
start_node n1 z1 127.0.0.1:17900 127.0.0.1:17901 127.0.0.1:17980 32
wait_ready 127.0.0.1:17980
start_node n2 z2 127.0.0.1:17910 127.0.0.1:17911 127.0.0.1:17981 32 127.0.0.1:17901
start_node n3 z3 127.0.0.1:17920 127.0.0.1:17921 127.0.0.1:17982 32 127.0.0.1:17901
start_node n4 z1 127.0.0.1:17930 127.0.0.1:17931 127.0.0.1:17983 32 127.0.0.1:17901
for h in 17981 17982 17983; do wait_ready 127.0.0.1:$h; done

wait_replicated "$SERVER" 4 180
"$SHOAL" bench append --server "$SERVER" --duration 15s --warmup 0 --concurrency 32 --streams 2000 >/dev/null
"$SHOAL" cluster set-replication 2 --server "$SERVER" >/dev/null
wait_replicated "$SERVER" 4 180
sleep 8
"$SHOAL" bench append --server "$SERVER" --duration 30s --warmup 0 --rate 300 --concurrency 16 \
  --streams 2000 --stream-prefix w- >"$WORK/writer.out" 2>&1 &
writer=$!
sleep 8
start=$(date +%s.%N)
"$SHOAL" cluster set-replication 3 --server "$SERVER" >/dev/null
wait_replicated "$SERVER" 4 180
took=$(echo "$(date +%s.%N) - $start" | bc)
wait "$writer" || true

printf 'replication 2 -> 3: every shard had three voters after %.1f s\n' "$took"
grep -E '^(events|latency|errors)' "$WORK/writer.out"
logs=("$WORK"/n?.log)
echo "leaders that stepped down: $(cat "${logs[@]}" | grep -c 'stepped down' || true)"
installs=$(cat "${logs[@]}" | grep 'snapshot installed' || true)
overlap="$(grep -c 'memtable_overlap=[1-9]' <<<"$installs" || true)"
grep -q 'memtable_overlap=' <<<"$installs" || overlap="not logged by this build"
echo "snapshot installs: $(grep -c . <<<"$installs" || true), over memtable keys: $overlap"
echo "slowest ingests: $(grep -o 'ingest=[^ ]*' <<<"$installs" | sed 's/ingest=//' | sort -h | tail -3 | tr '\n' ' ')"
