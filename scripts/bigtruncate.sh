#!/usr/bin/env bash
# scripts/bigtruncate.sh: how long one large truncation takes. Starts one `shoal server` on
# loopback in a throwaway directory, appends EVENTS events (default 400,000, 256 bytes, batches
# of 1,000) to one stream, runs `shoal truncate --before all`, and prints the time it took and
# the event IDs the shard forgot (shard format 7 forgets every removed event's ID; the leader
# proposes a truncation of more than 65,536 events in steps). Bounded: the appends, then the
# truncation.
#
#   make build && scripts/bigtruncate.sh
#   BIN=/tmp/shoal-old EVENTS=1000000 scripts/bigtruncate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SHOAL=${BIN:-bin/shoal}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
EVENTS=${EVENTS:-400000}
WORK=$(mktemp -d /tmp/shoal-bigtruncate.XXXXXX)
"$SHOAL" server --data "$WORK" --listen 127.0.0.1:17600 --gossip 127.0.0.1:17601 --http 127.0.0.1:17680 >"$WORK/log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
wait_ready 127.0.0.1:17680
"$SHOAL" bench append --server 127.0.0.1:17600 --streams 1 --batch 1000 --count $((EVENTS / 1000)) \
  --concurrency 1 --warmup 0s --stream-prefix big- >/dev/null
t0=$(date +%s.%N)
"$SHOAL" truncate big-0 --before all --server 127.0.0.1:17600
echo "truncate took $(echo "$(date +%s.%N) - $t0" | bc) s"
curl -fsS http://127.0.0.1:17680/metrics |
  awk '$1 ~ /^shoal_shard_event_ids_forgotten_total/ {s+=$2} END{print "event IDs forgotten: " s+0}'
