# shellcheck shell=bash
# Helpers that scripts/bench.sh and scripts/cost.sh source. $SHOAL is the shoal binary.

# wait_ready HTTP-ADDR: until the server's /readyz answers 200 (at most 60 s).
wait_ready() {
  for _ in $(seq 1 300); do
    curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server at $1 never became ready" >&2
  return 1
}

# wait_placed GRPC-ADDR [SHARDS]: until every shard of a three-node cluster has three voters,
# then until the placement loop has balanced the leaders (every node leads at least 9/32 of the
# SHARDS, default 32): before that, leadership transfers would land inside a measurement.
wait_placed() {
  local status leads want=$(( ${2:-32} * 9 / 32 ))
  for _ in $(seq 1 120); do
    "$SHOAL" cluster status --server "$1" --json 2>/dev/null |
      grep -qE '"state": "(under-replicated|unavailable)"' || break
    sleep 1
  done
  for _ in $(seq 1 60); do
    status=$("$SHOAL" cluster status --server "$1" --json 2>/dev/null || true)
    leads=$(grep -oE '"leads": [0-9]+' <<<"$status" | grep -oE '[0-9]+' | sort -n | head -1 || true)
    [ "$(grep -c '"leads"' <<<"$status")" = 3 ] && [ "${leads:-0}" -ge "$want" ] && break
    sleep 1
  done
}
