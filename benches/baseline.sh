#!/usr/bin/env bash
# The hardware's own figures, for reading leadflow's as a fraction of them: raw JetStream publishing
# and raw PostgreSQL batched inserts on this machine (examples/baseline.rs says what exactly).
#
#   benches/baseline.sh
#   MESSAGES=500000 ROWS=500000 BASELINE_BATCH=500 benches/baseline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DB=leadflow_baseline
PG=postgres://postgres@127.0.0.1:5432
cargo build --release --locked --example baseline >&2
psql "$PG/postgres" -qc "drop database if exists $DB with (force)" -c "create database $DB" >/dev/null
trap 'psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null' EXIT
# Its own batch size: the load scripts that call it export BATCH for wrk.
DATABASE_URL=$PG/$DB BATCH=${BASELINE_BATCH:-500} target/release/examples/baseline
