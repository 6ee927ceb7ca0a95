#!/usr/bin/env bash
# Soak: tracking and CRUD load together for DURATION, through `leadflow up` (release build) on a
# scratch database. Every INTERVAL it prints the process's resident memory, each load's p99 over
# that interval and the scorer's lag; at the end, memory growth, the worst p99 and how long the
# scorer took to drain. Not part of the quick test run.
#
#   benches/soak.sh                               # 30 minutes, a row a minute
#   DURATION=5m INTERVAL=30 RATE=2000 CRUD_RATE=200 benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30m}
INTERVAL=${INTERVAL:-60}                 # seconds, or 30s, 5m like DURATION
export RATE=${RATE:-1000}                # tracking events/s
export CRUD_RATE=${CRUD_RATE:-100}       # CRUD requests/s
export CONNECTIONS=${CONNECTIONS:-8} CRUD_CONNECTIONS=${CRUD_CONNECTIONS:-8} BATCH=${BATCH:-20}
export WRK_THREADS=${WRK_THREADS:-1}  # wrk threads; the pacing divides the rates over them
LEADS=${LEADS:-10000}
DB=leadflow_soak
PG=postgres://postgres@127.0.0.1:5432
export DATABASE_URL=$PG/$DB LEADFLOW_NAMESPACE=soak
export GATEWAY_ADDR=127.0.0.1:18280 SCORER_ADDR=127.0.0.1:18281 NOTIFIER_ADDR=127.0.0.1:18282
G=http://$GATEWAY_ADDR S=http://$SCORER_ADDR

seconds() { # 30m, 90s, 2h or plain seconds
  case "$1" in *h) echo $(( ${1%h} * 3600 ));; *m) echo $(( ${1%m} * 60 ));; *s) echo "${1%s}";; *) echo "$1";; esac
}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked -p leadflow --bins >&2
work=$(mktemp -d)
cleanup() {
  [ -n "${up_pid:-}" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null
target/release/leadflow migrate >/dev/null
psql "$DATABASE_URL" -qc "insert into leads (first_name, email) select 'Lead', 'l' || i || '@example.com' from generate_series(1, $LEADS) i; analyze leads"
psql "$DATABASE_URL" -tAc "select id from leads" > "$work/ids"
target/release/leadflow admin create --email soak@example.com --password soak-password-123 >/dev/null
JWT_SECRET=$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n') RUST_LOG=warn LEADFLOW_STATE_DIR="$work" \
  HEALTH_PROBE_INTERVAL=1s API_RATE_PER_TOKEN=1000000000/1m \
  target/release/leadflow up >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 100); do curl -sf "$G/readyz" >/dev/null && curl -sf "$S/readyz" >/dev/null && break; sleep 0.2; done
login() {
  curl -sf "$G/api/auth/login" -H 'content-type: application/json' \
    -d '{"email":"soak@example.com","password":"soak-password-123"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
WRITE_KEY=$(curl -sf "$G/api/tracking-keys" -H "authorization: Bearer $(login)" -H 'content-type: application/json' \
  -d '{"name":"soak"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
export WRITE_KEY LEAD_IDS="$work/ids"

rss_mib() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$up_pid/status"; }
lag() {
  curl -sf "$S/health.json" | python3 -c '
import json, sys
c = [x for x in json.load(sys.stdin)["consumers"] if x["name"].endswith("scorer_engagement")][0]
print(c["pending"] + c["ack_pending"])'
}
p99() { awk '$1 == "99%" {print $2}' "$1"; }
errors() { grep -E "Non-2xx|Socket errors" "$1" | tr -s ' ' | tr '\n' ' ' || true; }

total=$(seconds "$DURATION")
INTERVAL=$(seconds "$INTERVAL")
rounds=$(( (total + INTERVAL - 1) / INTERVAL ))
echo "soak: $DURATION, tracking $RATE events/s in batches of $BATCH, CRUD $CRUD_RATE requests/s, $LEADS leads"
printf '%8s %9s %14s %12s %12s  %s\n' elapsed "rss MiB" "tracking p99" "crud p99" "scorer lag" notes
first_rss=$(rss_mib)
printf '%8s %9s %14s %12s %12s\n' 0s "$first_rss" - - "$(lag)"
for round in $(seq 1 "$rounds"); do
  TOKEN=$(login) # access tokens expire; each interval's wrk gets a fresh one
  export TOKEN
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${INTERVAL}s" --latency -s benches/wrk/track_batch.lua "$G" > "$work/track.txt" &
  track=$!
  wrk -t"$WRK_THREADS" -c"$CRUD_CONNECTIONS" -d"${INTERVAL}s" --latency -s benches/wrk/crud_mix.lua "$G" > "$work/crud.txt"
  wait "$track"
  printf '%8s %9s %14s %12s %12s  %s\n' "$(( round * INTERVAL ))s" "$(rss_mib)" "$(p99 "$work/track.txt")" \
    "$(p99 "$work/crud.txt")" "$(lag)" "$(errors "$work/track.txt")$(errors "$work/crud.txt")"
done
start=$(date +%s)
until [ "$(lag)" = 0 ]; do sleep 1; done
echo "scorer drained $(( $(date +%s) - start )) s after the load stopped; memory ${first_rss} -> $(rss_mib) MiB"

if [ "${BASELINE:-1}" != 0 ]; then
  echo "== baseline on this machine, same run"
  benches/baseline.sh
fi
