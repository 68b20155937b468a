#!/usr/bin/env bash
# The OpenAPI document is one a client generator can use: dump it from the app (no server, no
# database: create_app().openapi()), generate a Python client from it with openapi-python-client
# (pinned in the dev extra) failing on any warning, then import every generated module, call one
# operation against an in-process app, and type-check the package with mypy.
#
#   scripts/check_openapi_client.sh            (after scripts/bootstrap.sh; needs no testbed)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d /tmp/berth-openapi-client.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Whatever create_app() reads from the environment stays inside the throwaway folder.
export BERTH_DATABASE_URL="sqlite:///$work/berth.db" BERTH_KEY_FILE="$work/berth.key"
export BERTH_REGISTER_LOCAL_HOST=false BERTH_LOG_LEVEL=WARNING
# The generator formats what it writes with ruff, found on PATH.
export PATH="$root/.venv/bin:$PATH"

.venv/bin/python - "$work/openapi.json" <<'EOF'
import json
import sys

from app.main import create_app

with open(sys.argv[1], "w") as out:
    json.dump(create_app(run_workers=False).openapi(), out, indent=1)
EOF

cd "$work"
# The audit export streams JSON Lines; the generator knows no such media type, and a generated
# client reads a stream as bytes anyway.
cat >config.yml <<'YAML'
content_type_overrides:
  application/x-ndjson: application/octet-stream
YAML
"$root/.venv/bin/openapi-python-client" generate --path openapi.json --meta none \
  --config config.yml --output-path berth_openapi_client --fail-on-warning

# Every module imports, and the client speaks to Berth: `getMe` against the app itself.
"$root/.venv/bin/berth" migrate >/dev/null
PYTHONPATH="$work:$root" "$root/.venv/bin/python" - <<'EOF'
import importlib
import pkgutil

import berth_openapi_client
from berth_openapi_client.api.identity import get_me
from berth_openapi_client.client import AuthenticatedClient
from fastapi.testclient import TestClient

from app.main import create_app

names = [m.name for m in pkgutil.walk_packages(berth_openapi_client.__path__, "berth_openapi_client.")]
for name in names:
    importlib.import_module(name)

with TestClient(create_app(run_workers=False)) as app:
    client = AuthenticatedClient(base_url="http://testserver", token="not-a-token")
    client.set_httpx_client(app)
    answer = get_me.sync_detailed(client=client)
    assert answer.status_code == 401, answer
print(f"check_openapi_client: {len(names)} generated modules import; getMe answers 401 unauthenticated")
EOF

# What the document shapes (models, operations) is checked strictly; client.py is the
# generator's own fixed template, whose __exit__ passes `*args: object` on to httpx's typed one.
cat >mypy.ini <<'INI'
[mypy]
strict = True
cache_dir = /dev/null
[mypy-berth_openapi_client.client]
ignore_errors = True
INI
"$root/.venv/bin/mypy" --config-file mypy.ini berth_openapi_client
