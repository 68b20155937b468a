#!/usr/bin/env bash
# Berth as a user installs it, not as the checkout runs it: build the wheel, install it (plain,
# not editable) into a fresh virtualenv, and from a directory outside the checkout run
# `berth migrate` on SQLite and on the testbed's PostgreSQL (a database of its own, made and
# dropped here), `berth serve` until /readyz answers and `berth worker` until it runs. A file
# the wheel lacks (migrations, the Compose schema) fails here, not at a user's first start.
#
#   scripts/check_wheel.sh      (needs the testbed up: scripts/testbed.sh up)
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/testbed.sh env)"
PG_DB=berth_wheel_check
work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -z ${pg_admin:-} ]] || psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "check_wheel: $*" >&2; exit 1; }

scripts/wheelhouse.sh "$work/wheels"
.venv/bin/python -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --no-index --find-links "$work/wheels" berth
mkdir "$work/run"
cd "$work/run"
# Nothing of the checkout may leak in: Berth must come from the virtualenv alone.
unset PYTHONPATH
export PATH=$work/venv/bin:$PATH
where=$(python -c 'import app; print(app.__file__)')
[[ $where == "$work/venv/"* ]] || fail "app imported from $where, not from the installed wheel"

echo "check_wheel: berth migrate on SQLite" >&2
export BERTH_LOG_LEVEL=WARNING PGOPTIONS=--client-min-messages=warning
BERTH_DATABASE_URL=sqlite:///$work/run/migrate.db berth migrate

echo "check_wheel: berth migrate on PostgreSQL" >&2
pg_url=${BERTH_TEST_PG_URL/+psycopg/}
pg_admin=${pg_url%/*}/postgres
psql -q -v ON_ERROR_STOP=1 "$pg_admin" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" \
  -c "CREATE DATABASE $PG_DB"
BERTH_DATABASE_URL=${BERTH_TEST_PG_URL%/*}/$PG_DB berth migrate

# Runs COMMAND... in the background until CHECK (a shell snippet) succeeds, then stops it with
# SIGTERM and expects a clean exit.
run_until() { # WHAT TIMEOUT CHECK COMMAND...
  local what=$1 deadline=$((SECONDS + $2)) check=$3 pid status=0
  shift 3
  "$@" >"$work/$what.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  until eval "$check"; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/$what.log" >&2; fail "$what exited early"; }
    ((SECONDS < deadline)) || { cat "$work/$what.log" >&2; fail "$what not ready"; }
    sleep 0.2
  done
  kill -TERM "$pid"
  wait "$pid" || status=$?
  # uvicorn re-raises SIGTERM after its clean shutdown, so "killed by SIGTERM" is clean too.
  ((status == 0 || status == 143)) || { cat "$work/$what.log" >&2; fail "$what exited $status"; }
}

# INFO: the worker's "worker running" line is how it shows it started.
export BERTH_DATABASE_URL=sqlite:///$work/run/berth.db BERTH_REGISTER_LOCAL_HOST=false \
  BERTH_LOG_LEVEL=INFO
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
readyz="python -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1:$port/readyz\", timeout=2)' 2>/dev/null"
echo "check_wheel: berth serve until /readyz answers" >&2
run_until serve 60 "$readyz" berth serve --port "$port"
echo "check_wheel: berth worker" >&2
run_until worker 60 "grep -q 'worker running' '$work/worker.log'" berth worker
echo "check_wheel: the installed wheel migrates, serves and works" >&2
