#!/usr/bin/env bash
# Hostile-input suite: schemathesis fuzzes the gateway through its own /openapi.json, once per
# role (admin, manager, sales rep), with every check it has (no 5xx, response schemas, documented
# status codes, content types, response headers, auth, ...). Part of the long suite, not .ci/run.
#
# It starts `leadflow up` on free loopback ports with its own database and NATS namespace, creates
# one user per role, runs schemathesis for each, tears everything down (database dropped, streams
# deleted) and exits non-zero when any role had a failure.
#
#   tests/schemathesis/run.sh                 # debug build, 100 examples per operation
#   MAX_EXAMPLES=300 ROLES="rep" tests/schemathesis/run.sh
#
# Environment: LEADFLOW_BIN (default: target/debug/leadflow, built if missing), MAX_EXAMPLES,
# ROLES (any of "admin manager rep"), SEED, ST_VENV (where schemathesis is installed, default
# target/schemathesis-venv), REPORT_DIR (default target/schemathesis-report), PGHOST_URL
# (PostgreSQL server, default postgres://postgres@127.0.0.1:5432), NATS_URL.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

target_dir=${CARGO_TARGET_DIR:-$root/target}
bin=${LEADFLOW_BIN:-$target_dir/debug/leadflow}
max_examples=${MAX_EXAMPLES:-100}
roles=${ROLES:-admin manager rep}
seed=${SEED:-$RANDOM}
venv=${ST_VENV:-$target_dir/schemathesis-venv}
report_dir=${REPORT_DIR:-$target_dir/schemathesis-report}
pg_server=${PGHOST_URL:-postgres://postgres@127.0.0.1:5432}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
# Pinned so a new schemathesis release cannot turn the suite red (or green) by itself.
schemathesis_version=4.32.5

run_id="st_$$_$(date +%s)"
database="leadflow_${run_id}"
work=$(mktemp -d)
pid=""

log() { printf '==> %s\n' "$*" >&2; }

cleanup() {
  local status=$?
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  psql "$pg_server/postgres" -qAtc "drop database if exists \"$database\" with (force)" >/dev/null 2>&1 || true
  "$venv/bin/python" - "$run_id" <<'PY' >/dev/null 2>&1 || true
import asyncio, os, sys
import nats

async def main(ns):
    nc = await nats.connect(os.environ["NATS_URL"])
    js = nc.jetstream()
    for stream in ("ENGAGEMENT", "DOMAIN", "DEADLETTER"):
        try:
            await js.delete_stream(f"{ns}_{stream}")
        except Exception:
            pass
    await nc.close()

asyncio.run(main(sys.argv[1]))
PY
  if [[ $status -ne 0 && -f $work/leadflow.log ]]; then
    log "last lines of the service log ($work/leadflow.log):"
    tail -n 40 "$work/leadflow.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ---------------------------------------------------------------------------------
if [[ ! -x $venv/bin/schemathesis ]] || ! "$venv/bin/schemathesis" --version | grep -q "$schemathesis_version"; then
  log "installing schemathesis $schemathesis_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$schemathesis_version" nats-py
fi
if [[ ! -x $bin ]]; then
  log "building leadflow"
  cargo build --bin leadflow
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gateway_port=$(free_port); scorer_port=$(free_port); notifier_port=$(free_port)
base="http://127.0.0.1:$gateway_port"

# --- the stack -------------------------------------------------------------------------------
export DATABASE_URL="$pg_server/$database"
export LEADFLOW_NAMESPACE=$run_id
export GATEWAY_ADDR=127.0.0.1:$gateway_port
export SCORER_ADDR=127.0.0.1:$scorer_port
export NOTIFIER_ADDR=127.0.0.1:$notifier_port
export LEADFLOW_STATE_DIR=$work/state
JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(48))')
export JWT_SECRET
export RUST_LOG=${RUST_LOG:-warn}
# The fuzzer sends thousands of requests from one address and one token a minute; the limits are
# tested elsewhere (tests/api), here they would only turn answers into 429s.
export LOGIN_RATE_PER_IP=100000/1m LOGIN_RATE_PER_ACCOUNT=100000/1m API_RATE_PER_TOKEN=1000000/1m

admin_password=$(python3 -c 'import secrets; print("St-" + secrets.token_urlsafe(18))')
log "database $database, namespace $run_id, gateway $base"
"$bin" migrate >/dev/null
LEADFLOW_ADMIN_PASSWORD=$admin_password "$bin" admin create --email admin@schemathesis.test --name "Fuzz Admin" >/dev/null

"$bin" up >"$work/leadflow.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { log "leadflow up exited"; exit 1; }
  sleep 0.5
done
curl -fsS "$base/readyz" >/dev/null

# --- one user per role -----------------------------------------------------------------------
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
login() {
  curl -fsS "$base/api/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"$2\"}" | json access_token
}
admin_token=$(login admin@schemathesis.test "$admin_password")
create_user() {
  curl -fsS "$base/api/users" -H 'content-type: application/json' -H "authorization: Bearer $admin_token" \
    -d "{\"email\":\"$1\",\"name\":\"$2\",\"password\":\"$admin_password\",\"role\":\"$3\"}" >/dev/null
}
create_user manager@schemathesis.test "Fuzz Manager" manager
create_user rep@schemathesis.test "Fuzz Rep" sales_rep
declare -A tokens=(
  [admin]=$admin_token
  [manager]=$(login manager@schemathesis.test "$admin_password")
  [rep]=$(login rep@schemathesis.test "$admin_password")
)
# Something for the generated requests to find: a lead the rep owns.
rep_id=$(curl -fsS "$base/api/auth/me" -H "authorization: Bearer ${tokens[rep]}" | json id)
curl -fsS "$base/api/leads" -H 'content-type: application/json' -H "authorization: Bearer $admin_token" \
  -d "{\"first_name\":\"Ada\",\"last_name\":\"Lovelace\",\"email\":\"ada@example.com\",\"owner_id\":\"$rep_id\"}" >/dev/null

# --- schemathesis ----------------------------------------------------------------------------
mkdir -p "$report_dir"
failed=()
for role in $roles; do
  log "schemathesis as $role (max $max_examples examples per operation, seed $seed)"
  if ! "$venv/bin/schemathesis" --config-file tests/schemathesis/schemathesis.toml \
      run "$base/openapi.json" \
      --checks all \
      --max-examples "$max_examples" \
      --seed "$seed" \
      --workers 2 \
      --request-timeout 20 \
      --header "Authorization: Bearer ${tokens[$role]}" \
      --suppress-health-check too_slow,filter_too_much \
      --report junit --report-junit-path "$report_dir/$role.xml" \
      ; then
    failed+=("$role")
  fi
done

if ((${#failed[@]})); then
  log "schemathesis failed for: ${failed[*]} (reports in $report_dir)"
  exit 1
fi
log "schemathesis passed for: $roles"
