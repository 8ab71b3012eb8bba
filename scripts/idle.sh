#!/usr/bin/env bash
# scripts/idle.sh: what an idle three-node cluster costs. Starts three `shoal server` processes
# (replication 3, $SHARDS shards, default 32) on loopback in a throwaway directory, waits until
# every shard has three voters and the leaders are balanced, lets it idle for $SETTLE seconds
# (default 20), then prints the CPU the three servers used over 10 s, as a share of one core,
# and how many groups each node has quiesced. Bounded: about a minute.
#
#   make build && scripts/idle.sh
#   SHARDS=1024 scripts/idle.sh
#
# Linux only (it reads /proc).
set -euo pipefail
cd "$(dirname "$0")/.."

SHOAL=${BIN:-bin/shoal}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
SHARDS=${SHARDS:-32}
SETTLE=${SETTLE:-20}
WORK=$(mktemp -d /tmp/shoal-idle.XXXXXX)
PIDS=()
cleanup() {
  stop_nodes
  rm -rf "$WORK"
}
trap cleanup EXIT

start_cluster "$SHARDS"
sleep "$SETTLE"

ticks() { for p in "${PIDS[@]}"; do cut -d' ' -f14,15 "/proc/$p/stat"; done | awk '{s += $1 + $2} END {print s}'; }
a=$(ticks)
t0=$(date +%s%N)
sleep 10
b=$(ticks)
t1=$(date +%s%N)
awk -v n="$SHARDS" -v d=$((b - a)) -v ns=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
  'BEGIN {printf "%d shards, three idle nodes: %.1f%% of one core\n", n, d / hz / (ns / 1e9) * 100}'
for port in 17480 17481 17482; do
  curl -fsS "http://127.0.0.1:$port/metrics" | awk -v p="$port" '/^shoal_replica_(quiesced_groups|groups) /{v[$1] = $2}
    END {printf "  node at :%s: %d of %d groups quiesced\n", p, v["shoal_replica_quiesced_groups"], v["shoal_replica_groups"]}'
done
