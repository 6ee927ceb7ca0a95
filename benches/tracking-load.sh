#!/usr/bin/env bash
# Load test of the scoring pipeline: tracking events into the gateway, through JetStream, stored
# and scored by the scorer. Reports events accepted/s, events stored and scored/s (from a run's
# start to its last event's storing) and the event-to-score latency from the scorer's Prometheus
# histogram.
#
#   benches/tracking-load.sh                  # batches of 100 over 10,000 leads, then pixels,
#                                             # each flat out and then paced at RATE events/s
#   DURATION=30s CONNECTIONS=32 RATE=5000 benches/tracking-load.sh  # flat out on 32 (default 64)
#   PACED_CONNECTIONS=32 benches/tracking-load.sh  # connections of the paced runs (default 64)
#   KEEP=1 benches/tracking-load.sh          # keep the database leadflow_track_bench and the streams afterwards
#   DRAIN_ONLY=1 benches/tracking-load.sh    # the scorer alone: batches are posted with it stopped,
#                                             # then it is started and timed to the last event stored
#   PACED_ONLY=1 benches/tracking-load.sh    # the paced runs alone, on fresh leads: nearly every
#                                             # event moves a score (after the flat-out runs most
#                                             # leads' signals are at their caps)
#   BARE=1 benches/tracking-load.sh          # the same load on the bare pipeline #4 names as its
#                                             # yardstick (examples/bare_pipeline.rs) instead of
#                                             # leadflow: run both, and compare on the same machine
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15s}
# 64 connections: each waits for its answer, and on 16 the flat-out pixels were bound by those
# round trips (the machine 12% idle, 8,500-9,600 pixels/s) rather than by the stack (session 13).
export CONNECTIONS=${CONNECTIONS:-64} WRK_THREADS=${WRK_THREADS:-2}
RATE_PACED=${RATE:-5000}
unset RATE
LEADS=${LEADS:-10000}
export BATCH=${BATCH:-100}
DB=leadflow_track_bench
PG=postgres://postgres@127.0.0.1:5432
export DATABASE_URL=$PG/$DB LEADFLOW_NAMESPACE=trackbench
export GATEWAY_ADDR=127.0.0.1:18180 SCORER_ADDR=127.0.0.1:18181 NOTIFIER_ADDR=127.0.0.1:18182
G=http://$GATEWAY_ADDR S=http://$SCORER_ADDR

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -z "${BARE:-}" ] || [ -z "${DRAIN_ONLY:-}" ] || { echo "BARE and DRAIN_ONLY do not go together" >&2; exit 1; }
cargo build --release --locked -p leadflow -p leadflow-gateway -p leadflow-scorer --bins --example drop_streams --example bare_pipeline >&2
work=$(mktemp -d)
cleanup() {
  [ -n "${up_pid:-}" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then
    psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null
    target/release/examples/drop_streams "$LEADFLOW_NAMESPACE"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# Each run starts from empty streams: millions of messages left by earlier runs (7-day retention)
# slowed later runs down.
target/release/examples/drop_streams "$LEADFLOW_NAMESPACE"

psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null
if [ -n "${BARE:-}" ]; then
  psql "$PG/postgres" -qc "create database $DB"
  psql "$DATABASE_URL" -tAc "select gen_random_uuid() from generate_series(1, $LEADS)" > "$work/ids"
  target/release/examples/bare_pipeline >"$work/up.log" 2>&1 &
  up_pid=$!
  # One process serves the tracking routes and the scorer's metrics.
  S=$G
  until curl -sf "$G/readyz" >/dev/null; do
    kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.log" >&2; exit 1; }
    sleep 0.2
  done
  export WRITE_KEY=unused LEAD_IDS="$work/ids"
else
  target/release/leadflow migrate >/dev/null
  psql "$DATABASE_URL" -qc "insert into leads (first_name, email) select 'Lead', 'l' || i || '@example.com' from generate_series(1, $LEADS) i"
  psql "$DATABASE_URL" -qc "analyze leads"
  psql "$DATABASE_URL" -tAc "select id from leads" > "$work/ids"
  target/release/leadflow admin create --email bench@example.com --password bench-password-123 >/dev/null
  # Health (and so the drain check below) refreshes consumer lag every 500 ms.
  export JWT_SECRET=$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n') RUST_LOG=warn LEADFLOW_STATE_DIR="$work" HEALTH_PROBE_INTERVAL=500ms
  if [ -n "${DRAIN_ONLY:-}" ]; then
    target/release/gateway >"$work/up.log" 2>&1 &
  else
    target/release/leadflow up >"$work/up.log" 2>&1 &
  fi
  up_pid=$!
  for _ in $(seq 1 100); do
    curl -sf "$G/readyz" >/dev/null && { [ -n "${DRAIN_ONLY:-}" ] || curl -sf "$S/readyz" >/dev/null; } && break
    sleep 0.2
  done
  TOKEN=$(curl -sf "$G/api/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"bench-password-123"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  WRITE_KEY=$(curl -sf "$G/api/tracking-keys" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  export WRITE_KEY LEAD_IDS="$work/ids"
fi

# Events stored since $1 (epoch seconds), and how many seconds after it the last of them was: its
# transaction's start (`received_at`), not the moment the drain check below noticed, which polls
# and confirms and so added up to 2 s to every run.
stored_since() {
  psql "$DATABASE_URL" -tAF' ' -c "select count(*), coalesce(extract(epoch from max(received_at)) - $1, 0)
    from lead_engagement_events where received_at >= to_timestamp($1)"
}
# From the scorer's lag gauges with curl and awk: a Python interpreter started twice a second took
# a tenth of the machine from the services being measured.
drained() {
  curl -sf "$S/metrics" | awk '/^leadflow_consumer_(ack_)?pending_messages\{.*scorer_engagement"/ {
    seen++; if ($NF != 0) busy = 1 } END { print (seen == 2 && !busy) ? "yes" : "no" }'
}
# Histogram buckets from the scorer's metrics: event-to-score, and the engagement consumer's
# batch duration (transaction to ack), which tells time in the pipeline from time in the database.
histogram() {
  curl -sf "$S/metrics" | grep -E '^leadflow_event_to_score_seconds_bucket|^leadflow_consumer_batch_duration_seconds_bucket.*scorer_engagement"' || true
}
latency() { # the histograms before the run, as `histogram` printed them
  histogram | python3 -c '
import sys
def read(lines, name):
    out = {}
    for line in lines:
        if not line.startswith(name):
            continue
        le = line.split("le=\"")[1].split("\"")[0]
        out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out
before = open(sys.argv[1]).read().splitlines()
after = sys.stdin.read().splitlines()
def report(name, label):
    b, a = read(before, name), read(after, name)
    buckets = sorted((le, n - b.get(le, 0)) for le, n in a.items())
    total = buckets[-1][1] if buckets else 0
    if not total:
        print("%s: none" % label)
        return
    def q(p):
        for le, n in buckets:
            if n >= p * total:
                return "<= %g ms" % (le * 1000) if le != float("inf") else "> %g s" % buckets[-2][0]
    print("%s p50 %s, p99 %s (%d)" % (label, q(0.5), q(0.99), total))
report("leadflow_event_to_score_seconds", "event-to-score")
report("leadflow_consumer_batch_duration_seconds", "scorer batch, transaction to ack")' "$1"
}

run() { # scenario script label
  local start
  # Every run starts just after a checkpoint. A flat-out batch run writes a gigabyte or more of WAL,
  # and the checkpoints it sets off (20-50 s each with the default max_wal_size) otherwise ran
  # into whichever run came next, by an amount that differed between the builds compared.
  psql "$PG/postgres" -qc checkpoint
  histogram > "$work/histogram"
  start=$(date +%s.%N)
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "benches/wrk/$1.lua" "$G" > "$work/$1.txt"
  local rps; rps=$(grep Requests/sec "$work/$1.txt" | awk '{print $2}')
  # Drained: no lag in two readings a second apart, taken after the health data refreshed.
  sleep 1
  for _ in $(seq 1 1200); do
    [ "$(drained)" = yes ] && sleep 1 && [ "$(drained)" = yes ] && break
    sleep 0.5
  done
  local count seconds; read -r count seconds < <(stored_since "$start")
  echo "== $2"
  grep -E "Requests/sec|Non-2xx|^ +(50|99)%" "$work/$1.txt"
  python3 -c "print('events accepted/s: %.0f' % ($rps * $3))"
  python3 -c "print('events stored and scored/s (until the last was stored): %.0f  (%d events in %.1f s)' % ($count/max($seconds, 0.001), $count, $seconds))"
  latency "$work/histogram"
}
if [ -n "${DRAIN_ONLY:-}" ]; then
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" -s benches/wrk/track_batch.lua "$G" > "$work/track_batch.txt"
  kill "$up_pid" && wait "$up_pid" || true
  start=$(date +%s.%N)
  target/release/scorer >"$work/scorer.log" 2>&1 &
  up_pid=$!
  # Its lag gauges read 0 until its first health probe.
  until curl -sf "$S/readyz" >/dev/null; do sleep 0.1; done
  sleep 1.5
  until [ "$(drained)" = yes ] && sleep 1 && [ "$(drained)" = yes ]; do sleep 0.5; done
  read -r count seconds < <(stored_since "$start")
  echo "== the scorer alone, draining batches of $BATCH posted on $CONNECTIONS connections for $DURATION"
  python3 -c "print('events stored and scored/s: %.0f  (%d events in %.1f s, from its start to the last stored)' % ($count/max($seconds, 0.001), $count, $seconds))"
  exit 0
fi
if [ -z "${PACED_ONLY:-}" ]; then
  run track_batch "batches of $BATCH to /t/events, $CONNECTIONS connections, $DURATION" "$BATCH"
  run pixel "single pixels, $CONNECTIONS connections, $DURATION" 1
fi
# The rate is the schedule's (benches/wrk/pace.lua), not the connections'. They only need to be
# enough for it: a connection is busy for an answer's latency, so on 16 connections pixels paced
# towards 5,200/s were sent at 4,350/s once answers took 3.5 ms.
export RATE=$RATE_PACED CONNECTIONS=${PACED_CONNECTIONS:-64}
run track_batch "batches of $BATCH paced towards $RATE events/s, $CONNECTIONS connections, $DURATION" "$BATCH"
run pixel "single pixels paced towards $RATE events/s, $CONNECTIONS connections, $DURATION" 1

# The same run's ceiling: raw JetStream publishing and PostgreSQL batched inserts (BASELINE=0 skips).
if [ "${BASELINE:-1}" != 0 ]; then
  echo "== baseline on this machine, same run"
  benches/baseline.sh
fi
