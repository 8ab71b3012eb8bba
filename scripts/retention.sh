#!/usr/bin/env bash
# scripts/retention.sh: how long the shards' leaders take to apply a retention policy. Starts
# three `shoal server` processes (replication 3, --retention-interval 10s) on loopback in a
# throwaway directory, appends COUNT events of 256 bytes to STREAMS streams, sets the policy
# `--prefix bench- --keep-last 1`, and prints the truncations and events the loop has removed
# every 2 s until a pass adds none, then the time taken, the servers' CPU and each node's round
# duration. Bounded: the appends, then at most 10 minutes.
#
#   make build && scripts/retention.sh                    # 100,000 streams, 300,000 events
#   STREAMS=40000 COUNT=120000 scripts/retention.sh
#   ONCE=1 scripts/retention.sh    # instead, time `shoal retain --prefix bench- --keep-last 1`
set -euo pipefail
cd "$(dirname "$0")/.."

SHOAL=${BIN:-bin/shoal}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
WORK=$(mktemp -d /tmp/shoal-retention.XXXXXX)
PIDS=()
trap 'stop_nodes; rm -rf "$WORK"' EXIT
# --retention-min-age -1s: the events just appended may go at once.
SERVER_ARGS="--retention-interval 10s --retention-min-age -1s" start_cluster 32

"$SHOAL" bench append --server 127.0.0.1:17400 --streams "${STREAMS:-100000}" --count "${COUNT:-300000}" \
  --warmup 0s --concurrency 64 --event-size 256 >/dev/null
metric() { # name -> the sum over the three servers
  for p in 17480 17481 17482; do curl -fsS "http://127.0.0.1:$p/metrics"; done | awk -v m="$1" '$1==m {s+=$2} END{print s+0}'
}
ticks() { for p in "${PIDS[@]}"; do cut -d' ' -f14,15 "/proc/$p/stat"; done | awk '{s+=$1+$2} END{print s}'; }
c0=$(ticks)
t0=$(date +%s.%N)
if [ -n "${ONCE:-}" ]; then
  "$SHOAL" retain --server 127.0.0.1:17400 --prefix bench- --keep-last 1 | tail -1
  echo "retain took $(echo "$(date +%s.%N) - $t0" | bc) s; server CPU $(( ($(ticks) - c0) / $(getconf CLK_TCK) )) s"
  exit 0
fi
"$SHOAL" retention set --server 127.0.0.1:17400 --prefix bench- --keep-last 1
prev=-1
for _ in $(seq 1 300); do
  ok=$(metric 'shoal_retention_truncations_total{result="ok"}')
  echo "$(date +%T) streams truncated $ok, events removed $(metric shoal_retention_events_removed_total)"
  [ "$ok" = "$prev" ] && [ "$ok" != 0 ] && break
  prev=$ok
  sleep 2
done
echo "done within $(echo "$(date +%s.%N) - $t0" | bc) s of the policy; server CPU $(( ($(ticks) - c0) / $(getconf CLK_TCK) )) s"
for p in 17480 17481 17482; do
  curl -fsS "http://127.0.0.1:$p/metrics" | grep -E '^shoal_retention_(round_duration_seconds_(sum|count)|truncations_total)' | tr '\n' ' '
  echo
done
for p in 17480 17481 17482; do curl -fsS "http://127.0.0.1:$p/metrics"; done |
  awk '$1 ~ /^shoal_shard_event_ids_forgotten_total/ {s+=$2} END{print "event IDs forgotten, all replicas: " s+0}'
