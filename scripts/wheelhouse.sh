#!/usr/bin/env bash
# Berth and every dependency it needs at run time as wheels in one directory, for installs that
# reach no package index: the fresh virtualenv of scripts/check_wheel.sh and the image build
# (docker/Dockerfile, whose build has no network).
#
#   scripts/wheelhouse.sh DIR      (e.g. scripts/wheelhouse.sh docker/wheelhouse)
#
# Berth's wheel is built every time, from the files git would commit (tracked and untracked,
# not ignored), never from a stale build/ directory. The dependencies are pinned to the versions
# of the bootstrapped .venv (those the test suite runs with), built once per set of versions and
# cached under BERTH_CACHE_DIR (default ~/.cache/berth): later runs need no index at all.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# == 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
out=$1

scripts/bootstrap.sh
cache=${BERTH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/src"
git ls-files -z --cached --others --exclude-standard |
  tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$work/src"
.venv/bin/pip wheel --quiet --no-deps --wheel-dir "$work/berth" "$work/src"
berth_wheel=$(echo "$work"/berth/berth-*.whl)

.venv/bin/pip freeze --exclude-editable >"$work/pins.txt"
key=$({ cat "$work/pins.txt"; .venv/bin/python -c 'import sys; print(sys.version)'; } |
  sha256sum | cut -c1-16)
deps=$cache/wheelhouse-$key
if [[ ! -d $deps ]]; then
  # Written beside and renamed when complete, so an interrupted run leaves no half wheelhouse.
  rm -rf "$deps.part"
  .venv/bin/pip wheel --quiet --wheel-dir "$deps.part" --constraint "$work/pins.txt" "$berth_wheel"
  rm -f "$deps.part"/berth-*.whl
  mv "$deps.part" "$deps"
fi

mkdir -p "$out"
rm -f "$out"/*.whl
cp "$deps"/*.whl "$berth_wheel" "$out"/
