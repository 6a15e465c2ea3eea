#!/usr/bin/env bash
# Installs the system tools the tests use (the openssl CLI checks our certificates), if missing.
set -euo pipefail
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]} (install them, or run as root so this script can)" >&2
    exit 1
  fi
  echo "installing ${need[*]} from Debian packages..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
