#!/usr/bin/env bash
# scripts/stalled.sh: what readers that stop taking pages cost a node. Starts three `shoal
# server` processes (replication 3) on loopback in a throwaway directory, appends EVENTS events
# of 32 KiB to each of four streams through the first node, reads them back once through the
# second, then opens STALL subscriptions and STALL plain reads through the second node that never
# receive (the shards it leads are served there, the others relayed to their leaders), and prints
# the second node's heap in use per call (docs/operations.md, "What clients can make a node
# hold"). Bounded: about two minutes.
#
#   make build && scripts/stalled.sh
#   EVENTS=4000 STALL=200 scripts/stalled.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SHOAL=${BIN:-bin/shoal}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
EVENTS=${EVENTS:-2000}
STALL=${STALL:-100}
WORK=$(mktemp -d /tmp/shoal-stalled.XXXXXX)
PIDS=()
cleanup() {
  stop_nodes
  rm -rf "$WORK"
}
trap cleanup EXIT

go build -o "$WORK/stalled" ./scripts/stalled
start_cluster 32
"$WORK/stalled" -addr 127.0.0.1:17400 -http 127.0.0.1:17480 -fill "$EVENTS"
"$WORK/stalled" -addr 127.0.0.1:17410 -http 127.0.0.1:17481 -readall
"$WORK/stalled" -addr 127.0.0.1:17410 -http 127.0.0.1:17481 -stall "$STALL"
"$WORK/stalled" -addr 127.0.0.1:17410 -http 127.0.0.1:17481 -stall "$STALL" -follow=false
