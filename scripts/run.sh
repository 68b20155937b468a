#!/usr/bin/env bash
# Run Berth on this machine: SQLite in ./berth.db, the local Docker engine, API on :8000.
# Arguments go to `berth serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/berth serve "$@"
