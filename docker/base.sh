#!/usr/bin/env bash
# A local stand-in for the official python:3.11-slim base, for machines that reach no image
# registry (CI here): a minimal Debian with python3 and its venv module (what docker/Dockerfile
# needs from a base) and passwd (useradd), made with mmdebstrap from a Debian mirror. Prints
# the path of the root filesystem tarball, ready for `docker import`.
#
#   tar=$(docker/base.sh) && docker import "$tar" berth-base:local
#
# The tarball is cached under BERTH_CACHE_DIR (default ~/.cache/berth), keyed by everything
# that goes into it, so only the first run on a machine waits for the mirror. Must run as root.
set -euo pipefail

SUITE=bookworm # Debian 12's python3 is 3.11, as the official slim image's
MIRROR=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,passwd
CACHE=${BERTH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}

# Keyed by this script too: a changed recipe makes a new tarball.
key=$(cat "${BASH_SOURCE[0]}" - <<<"$MIRROR" | sha256sum | cut -c1-16)
tarball=$CACHE/base-$SUITE-$key.tar
if [[ ! -s $tarball ]]; then
  command -v mmdebstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
  }
  mkdir -p "$CACHE"
  # "essential" leaves out apt and everything else a runtime base does not need; the
  # packages' dependencies come with them. Written beside, then renamed: never half a tarball.
  mmdebstrap --quiet --variant=essential --include="$PACKAGES" --format=tar \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$SUITE" "$tarball.part" "$MIRROR" >&2
  mv "$tarball.part" "$tarball"
fi
echo "$tarball"
