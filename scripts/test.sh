#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up the testbed (real engines, registries,
# PostgreSQL), then run every test on SQLite and the ones that use the database again on
# PostgreSQL.
#
#   scripts/test.sh [pytest args...]      e.g. scripts/test.sh -k hosts -x
#   BERTH_TEST_BACKENDS=sqlite scripts/test.sh   (one backend only, for a quick local run)
#   BERTH_KEEP_TESTBED=1 scripts/test.sh         (leave engines running afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
scripts/testbed.sh up
if [[ ${BERTH_KEEP_TESTBED:-} != 1 ]]; then
  trap 'scripts/testbed.sh down' EXIT
fi
eval "$(scripts/testbed.sh env)"

status=0
only=0  # after the first backend, only the tests that use the database (tests/conftest.py)
for backend in ${BERTH_TEST_BACKENDS:-sqlite postgresql}; do
  echo "=== tests on $backend ==="
  BERTH_TEST_DATABASE=$backend BERTH_TEST_DATABASE_ONLY=$only .venv/bin/pytest "$@" || status=$?
  only=1
done
exit $status
