#!/usr/bin/env bash
# Runs the Hub standalone (local storage, in-process cache) with demo traffic on
# http://127.0.0.1:3000 and the Postgres wire endpoint on 127.0.0.1:5433 (demo login hub / hub:
#   psql "host=127.0.0.1 port=5433 user=hub password=hub dbname=hub sslmode=disable").
# Extra arguments go to `analytics-hub serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Build packages: C toolchain, pkg-config, and cmake + curl headers for the bundled librdkafka.
missing=()
for pkg in build-essential pkg-config cmake libcurl4-openssl-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# Demo account of the wire endpoint (loopback only); set your own to override.
export PGWIRE_USER="${PGWIRE_USER:-hub}" PGWIRE_PASSWORD="${PGWIRE_PASSWORD:-hub}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/llm-analytics-hub-target}"
echo "On loopback the API is open. Serving another address needs keys (docs/security.md):" >&2
echo "  $CARGO_TARGET_DIR/release/analytics-hub keys create --name ops --role admin" >&2
exec cargo run --release --locked --bin analytics-hub -- serve --demo "$@"
