# shellcheck shell=bash
# Helpers that scripts/bench.sh and scripts/cost.sh source. $SHOAL is the shoal binary.

# whole_seconds NAME VALUE: VALUE ("20s", "2m") in whole seconds, or an error naming NAME: the
# scripts sleep, profile and divide by these, which a "500ms" would make 500 minutes.
whole_seconds() {
  case "$2" in
    *[!0-9]*s | *[!0-9]*m | s | m | "") ;;
    *s) echo $((10#${2%s})); return 0 ;;
    *m) echo $((10#${2%m} * 60)); return 0 ;;
  esac
  echo "$1=$2: give whole seconds or minutes (e.g. 20s, 2m)" >&2
  return 1
}

# wait_ready HTTP-ADDR: until the server's /readyz answers 200 (at most 60 s).
wait_ready() {
  for _ in $(seq 1 300); do
    curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server at $1 never became ready" >&2
  return 1
}

# wait_replicated GRPC-ADDR [NODES] [SECONDS]: until every shard has as many voters as the
# replication factor (none under-replicated or unavailable) and, with NODES, that many nodes
# report (at most SECONDS, default 120).
wait_replicated() {
  local status
  for _ in $(seq 1 "${3:-120}"); do
    if status=$("$SHOAL" cluster status --server "$1" --json 2>/dev/null) &&
      ! grep -qE '"state": "(under-replicated|unavailable)"' <<<"$status" &&
      { [ -z "${2:-}" ] || [ "$(grep -c '"leads"' <<<"$status")" = "$2" ]; }; then
      return 0
    fi
    sleep 1
  done
  echo "the cluster at $1 did not reach full replication within ${3:-120} s" >&2
  return 1
}

# wait_placed GRPC-ADDR [SHARDS]: until every shard of a three-node cluster has three voters,
# then until the placement loop has balanced the leaders (every node leads at least 9/32 of the
# SHARDS, default 32): before that, leadership transfers would land inside a measurement.
wait_placed() {
  local status leads want=$(( ${2:-32} * 9 / 32 ))
  wait_replicated "$1" || return 1
  for _ in $(seq 1 60); do
    status=$("$SHOAL" cluster status --server "$1" --json 2>/dev/null || true)
    leads=$(grep -oE '"leads": [0-9]+' <<<"$status" | grep -oE '[0-9]+' | sort -n | head -1 || true)
    [ "$(grep -c '"leads"' <<<"$status")" = 3 ] && [ "${leads:-0}" -ge "$want" ] && return 0
    sleep 1
  done
  echo "the leaders of the cluster at $1 were not balanced within 60 s (fewest led: ${leads:-?}, want $want)" >&2
  return 1
}

# The three-node cluster of scripts/cost.sh and scripts/idle.sh. The caller sets WORK (a
# directory for the data and logs) and PIDS=(); stop_nodes in its EXIT trap stops the servers.

# start_node NAME ZONE GRPC GOSSIP HTTP SHARDS [JOIN]: a server in $WORK/NAME, its log in
# $WORK/NAME.log, with SERVER_ARGS (words) added to its flags; its PID goes to PIDS.
start_node() {
  local args=(server --data "$WORK/$1" --node "$1" --zone "$2" --listen "$3" --gossip "$4" --http "$5" --shards "$6")
  [ -n "${7:-}" ] && args+=(--join "$7")
  # shellcheck disable=SC2206 # words, as documented
  [ -n "${SERVER_ARGS:-}" ] && args+=($SERVER_ARGS)
  "$SHOAL" "${args[@]}" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
}

# start_cluster SHARDS: n1, n2, n3 in zones z1..z3 (gRPC 127.0.0.1:17400/17410/17420, gossip
# one port above, HTTP 17480..17482), created with SHARDS shards; returns once every shard has
# three voters and the leaders are balanced (wait_placed).
start_cluster() {
  start_node n1 z1 127.0.0.1:17400 127.0.0.1:17401 127.0.0.1:17480 "$1"
  wait_ready 127.0.0.1:17480
  start_node n2 z2 127.0.0.1:17410 127.0.0.1:17411 127.0.0.1:17481 "$1" 127.0.0.1:17401
  start_node n3 z3 127.0.0.1:17420 127.0.0.1:17421 127.0.0.1:17482 "$1" 127.0.0.1:17401
  wait_ready 127.0.0.1:17481
  wait_ready 127.0.0.1:17482
  wait_placed 127.0.0.1:17400 "$1"
}

# stop_nodes: SIGTERM to every server in PIDS, then waits until each has exited (so that the
# next run can bind the same ports); one still running after 30 s is killed.
stop_nodes() {
  local p i
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do
    i=0
    while [ -n "$p" ] && kill -0 "$p" 2>/dev/null; do
      if [ $((i += 1)) -gt 300 ]; then
        echo "server $p still running 30 s after SIGTERM: killed" >&2
        kill -9 "$p" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
  done
}
