#!/usr/bin/env bash
# Load test of real-time notifications: CLIENTS idle SSE connections to one notifier, RATE
# assignments.created events a second published to JetStream for random connected users, for
# DURATION seconds. Reports the publish-to-push latency (p50/p99/max, measured by the client),
# the notifier's own event-to-push histogram, and the notifier's resident memory.
#
#   benches/notifier-load.sh                          # 1,000 clients, 200 events/s, 20 s
#   CLIENTS=10000 RATE=200 DURATION=30 benches/notifier-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CLIENTS=${CLIENTS:-1000} RATE=${RATE:-200} DURATION=${DURATION:-20}
DB=leadflow_notify_bench
PG=postgres://postgres@127.0.0.1:5432
export DATABASE_URL=$PG/$DB LEADFLOW_NAMESPACE=notifybench NOTIFIER_ADDR=127.0.0.1:18282
export NOTIFIER_URL=http://$NOTIFIER_ADDR
export JWT_SECRET=$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n')
# One socket per client on both sides: as many open files as this shell may have.
ulimit -n "$(ulimit -Hn)"

cargo build --release --locked -p leadflow -p leadflow-notifier --bins >&2
cargo build --release --locked -p leadflow-notifier --example notifier_load >&2
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
cleanup() {
  [ -n "${notifier_pid:-}" ] && kill "$notifier_pid" 2>/dev/null && wait "$notifier_pid" 2>/dev/null || true
  psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null
  rm -rf "$work"
}
# The `notifybench` namespace's streams stay on the NATS server between runs (7-day retention);
# its durable consumers continue from where the last run acked.
trap cleanup EXIT

psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null
"$bin/leadflow" migrate >/dev/null
RUST_LOG=warn DB_POOL_MAX=20 "$bin/notifier" >"$work/notifier.log" 2>&1 &
notifier_pid=$!
for _ in $(seq 1 100); do curl -sf "$NOTIFIER_URL/readyz" >/dev/null && break; sleep 0.2; done

rss() { awk '/VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$notifier_pid/status"; }
echo "notifier RSS before: $(rss)"
"$bin/examples/notifier_load" &
load_pid=$!
peak=0
while kill -0 "$load_pid" 2>/dev/null; do
  now=$(awk '/VmRSS/ {print $2}' "/proc/$notifier_pid/status")
  [ "$now" -gt "$peak" ] && peak=$now
  sleep 0.5
done
wait "$load_pid"
echo "notifier RSS peak: $((peak / 1024)) MiB, after: $(rss)"
curl -sf "$NOTIFIER_URL/metrics" | python3 -c '
import sys
buckets = []
for line in sys.stdin:
    if line.startswith("leadflow_notification_push_latency_seconds_bucket"):
        le = line.split("le=\"")[1].split("\"")[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
buckets.sort()
total = buckets[-1][1] if buckets else 0
def q(p):
    for le, n in buckets:
        if n >= p * total:
            return "<= %g ms" % (le * 1000) if le != float("inf") else "> 10 s"
print("notifier event-to-push histogram: p50 %s, p99 %s (%d pushes)" % (q(0.5), q(0.99), total))'

# The same run's ceiling: raw JetStream publishing and PostgreSQL batched inserts (BASELINE=0 skips).
if [ "${BASELINE:-1}" != 0 ]; then
  echo "== baseline on this machine, same run"
  benches/baseline.sh
fi
