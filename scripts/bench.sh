#!/usr/bin/env bash
# make bench: shoal side by side with NATS JetStream and PostgreSQL on one
# workload (256-byte events, 10,000 streams, 64 callers, exact expected
# version), each started on loopback in a throwaway directory. Writes
# docs/benchmarks.md, docs/benchmarks.png and the JSON reports in
# docs/benchmarks-results/. Bounded: about 12 runs of DURATION + WARMUP.
# BENCH_KEEP=1 keeps the servers' data directories and logs. R3_ARGS (words) are added to
# the flags of the three-node cluster's servers, e.g. R3_ARGS="--wal-commit-delay 2ms"; the
# commands in docs/benchmarks-results/commands.txt, and the report, show them.
set -euo pipefail
cd "$(dirname "$0")/.."
SHOAL=bin/shoal
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

DURATION=${BENCH_DURATION:-20s}
WARMUP=${BENCH_WARMUP:-3s}
whole_seconds BENCH_DURATION "$DURATION" >/dev/null
WARMUP_S=$(whole_seconds BENCH_WARMUP "$WARMUP")
RESULTS=docs/benchmarks-results
WORK=$(mktemp -d /tmp/shoal-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  # A PostgreSQL that peerbench started and could not stop (killed meanwhile): its postmaster
  # detached from peerbench. SIGINT is its fast shutdown. (NATS servers die with peerbench.)
  local pid
  for f in "$WORK"/pg*/pgdata/postmaster.pid; do
    [ -f "$f" ] && pid=$(head -1 "$f") && [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "${BENCH_KEEP:-}" ]; then
    echo "kept the servers' data and logs in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

(cd bench/peers && go build -o ../../bin/peerbench ./cmd/peerbench && go build -o ../../bin/benchreport ./cmd/benchreport)
rm -rf "$RESULTS" && mkdir -p "$RESULTS"
: > "$RESULTS/commands.txt"
: > "$RESULTS/skipped.txt"

WORKLOAD="--streams 10000 --event-size 256 --concurrency 64 --expected exact --duration $DURATION --warmup $WARMUP"

record() { echo "$*" >> "$RESULTS/commands.txt"; }

start_shoal() { # name zone grpc gossip http [join [extra-words]]
  local args=(server --data "$WORK/$1" --node "$1" --zone "$2" --listen "$3" --gossip "$4" --http "$5")
  [ -n "${6:-}" ] && args+=(--join "$6")
  # shellcheck disable=SC2206 # words, as documented
  [ -n "${7:-}" ] && args+=($7)
  record "bin/shoal ${args[*]}"
  bin/shoal "${args[@]}" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
}

stop_all() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

run_shoal_bench() { # out server extra...
  local out=$1 server=$2; shift 2
  # Each run writes its own streams, so exact expected versions start from empty streams.
  record "bin/shoal bench append --server $server $WORKLOAD --stream-prefix $out- $* --json $RESULTS/$out.json"
  bin/shoal bench append --server "$server" $WORKLOAD --stream-prefix "$out-" "$@" --json "$RESULTS/$out.json"
}

echo "== shoal, one node"
start_shoal single z1 127.0.0.1:17400 127.0.0.1:17401 127.0.0.1:17480
wait_ready 127.0.0.1:17480
# A CPU profile of the server during the measured part of the first run.
( sleep "$WARMUP_S"; curl -fsS -o "$WORK/cpu.pprof" "http://127.0.0.1:17480/debug/pprof/profile?seconds=10" ) &
run_shoal_bench 01-shoal 127.0.0.1:17400
wait $! 2>/dev/null || true
run_shoal_bench 02-shoal-batch100 127.0.0.1:17400 --batch 100
stop_all
if [ -s "$WORK/cpu.pprof" ]; then
  go tool pprof -top -nodecount=30 bin/shoal "$WORK/cpu.pprof" 2>/dev/null | head -40 > "$RESULTS/profile.txt" || true
fi

# A new cluster in empty data directories, as NATS R3 gets: not the one-node run's data, which
# the two new nodes would first receive as snapshots and compact during the measurement.
echo "== shoal, three nodes, replication 3"
start_shoal n1 z1 127.0.0.1:17400 127.0.0.1:17401 127.0.0.1:17480 "" "${R3_ARGS:-}"
wait_ready 127.0.0.1:17480
start_shoal n2 z2 127.0.0.1:17410 127.0.0.1:17411 127.0.0.1:17481 127.0.0.1:17401 "${R3_ARGS:-}"
start_shoal n3 z3 127.0.0.1:17420 127.0.0.1:17421 127.0.0.1:17482 127.0.0.1:17401 "${R3_ARGS:-}"
wait_ready 127.0.0.1:17481
wait_ready 127.0.0.1:17482
wait_placed 127.0.0.1:17400
run_shoal_bench 03-shoal-r3 127.0.0.1:17400
run_shoal_bench 04-shoal-r3-batch100 127.0.0.1:17400 --batch 100
# The issue's other reference point: NATS R3 with 400 publishes in flight (row 10).
run_shoal_bench 05-shoal-r3-400-callers 127.0.0.1:17400 --concurrency 400
stop_all

peer() { # out args...
  local out=$1; shift
  # The row's own flags come last, so that they override the common workload's.
  record "bin/peerbench $WORKLOAD $* --json $RESULTS/$out.json"
  # tee -i: ^C reaches peerbench, which stops its servers, and tee shows it doing so.
  bin/peerbench $WORKLOAD "$@" --json "$RESULTS/$out.json" | tee -i "$WORK/$out.txt"
  if grep -q '^skipped' "$WORK/$out.txt"; then
    echo "$out: $(grep '^skipped' "$WORK/$out.txt")" >> "$RESULTS/skipped.txt"
  fi
}

# Every NATS server runs in a process of its own, as every shoal node does, with the load
# generator in another.
echo "== NATS JetStream"
peer 06-nats-always --system nats --processes --sync always --dir "$WORK/nats1"
peer 07-nats-always-batch100 --system nats --processes --sync always --batch 100 --dir "$WORK/nats2"
peer 08-nats-default --system nats --processes --sync default --dir "$WORK/nats3"
peer 09-nats-r3-always --system nats --processes --sync always --replicas 3 --dir "$WORK/nats4"
peer 10-nats-r3-always-400-callers --system nats --processes --sync always --replicas 3 --dir "$WORK/nats5" --concurrency 400

echo "== PostgreSQL"
peer 11-postgres --system postgres --dir "$WORK/pg1"
peer 12-postgres-batch100 --system postgres --batch 100 --dir "$WORK/pg2"

bin/benchreport --results "$RESULTS" --out docs/benchmarks.md --chart docs/benchmarks.png
# The hand-kept analysis (targets, where the time goes) follows the generated tables.
[ -f docs/benchmarks-notes.md ] && cat docs/benchmarks-notes.md >> docs/benchmarks.md
echo "wrote docs/benchmarks.md and docs/benchmarks.png"
