#!/usr/bin/env bash
# Load test of the gateway against 100,000 leads: GET /api/leads/{id}, a filtered and searched
# list page, and POST /api/leads. Needs wrk (Debian package `wrk`), PostgreSQL and NATS.
#
#   benches/gateway-load.sh                 # 20 s per scenario, 64 connections
#   DURATION=60s CONNECTIONS=128 benches/gateway-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
LEADS=${LEADS:-100000}
PORT=${PORT:-18080}
DB=leadflow_bench
PG=postgres://postgres@127.0.0.1:5432
export DATABASE_URL=$PG/$DB

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked -p leadflow-gateway -p leadflow --bins >&2
work=$(mktemp -d)
cleanup() {
  [ -n "${gateway_pid:-}" ] && kill "$gateway_pid" 2>/dev/null && wait "$gateway_pid" 2>/dev/null || true
  [ -z "${KEEP:-}" ] && psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null
target/release/leadflow migrate >/dev/null
echo "seeding $LEADS leads" >&2
psql "$DATABASE_URL" -q <<SQL
insert into leads (first_name, last_name, email, company, status, budget, tags, score, tier, created_at)
select (array['Ann','Bob','Cara','Dev','Eli','Fay','Gus','Hana','Ivo','Jae','Lee','Mara','Ali','Bert'])[1 + i % 14],
       (array['Johnson','Lee','Marsh','Anderson','Berg','Ng','Ortiz','Tanaka','Ali','Larsen'])[1 + i % 10] || i,
       'lead' || i || '@example.com',
       (array['Acme','Globex','Initech','Umbrella','Hooli','Tech Mart','Stark','Wayne','Wonka','Tyrell'])[1 + i % 10] || ' ' || (i % 97),
       (array['new','contacted','qualified','won','lost'])[1 + i % 5],
       (i % 50) * 1000, array[(array['ev','suv','sedan','truck'])[1 + i % 4]],
       i % 101, (array['cold','warm','hot'])[1 + (i % 101) / 40],
       now() - (i || ' minutes')::interval
from generate_series(1, $LEADS) as i;
analyze leads;
SQL
target/release/leadflow admin create --email bench@example.com --password bench-password-123 >/dev/null
psql "$DATABASE_URL" -tAc "select id from leads order by random() limit 10000" > "$work/ids"

JWT_SECRET=$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n') \
GATEWAY_ADDR=127.0.0.1:$PORT LEADFLOW_NAMESPACE=bench API_RATE_PER_TOKEN=1000000000/1m \
LOGIN_RATE_PER_IP=1000000000/1m LOGIN_RATE_PER_ACCOUNT=1000000000/1m \
DB_POOL_MAX=${DB_POOL_MAX:-16} RUST_LOG=warn target/release/gateway >"$work/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
TOKEN=$(curl -sf "http://127.0.0.1:$PORT/api/auth/login" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"bench-password-123"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
export TOKEN LEAD_IDS="$work/ids"

run() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "benches/wrk/$1.lua" "http://127.0.0.1:$PORT" \
    | grep -E "Requests/sec|Non-2xx|Socket errors|^ +(50|75|90|99)%|Latency "
}
for scenario in get_lead list_leads search_leads create_lead; do
  echo "== $scenario: $THREADS threads, $CONNECTIONS connections, $DURATION"
  run "$scenario"
done
# Sign-ins are slow on purpose (argon2); they must not starve everything else.
echo "== get_lead while 16 connections sign in continuously"
wrk -t1 -c16 -d"$DURATION" -s benches/wrk/login.lua "http://127.0.0.1:$PORT/api/auth/login" > "$work/login.txt" &
login_pid=$!
run get_lead
wait "$login_pid"
echo "   logins meanwhile: $(grep -E "Requests/sec|Non-2xx" "$work/login.txt" | tr -s " " | tr "\n" " ")"

# The same run's ceiling: raw JetStream publishing and PostgreSQL batched inserts (BASELINE=0 skips).
if [ "${BASELINE:-1}" != 0 ]; then
  echo "== baseline on this machine, same run"
  benches/baseline.sh
fi
