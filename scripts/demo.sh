#!/usr/bin/env bash
# Runs the Hub standalone (local storage, in-process cache) with demo traffic on
# http://127.0.0.1:3000. Extra arguments go to `analytics-hub serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s build-essential >/dev/null 2>&1 || ! dpkg -s pkg-config >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq build-essential pkg-config
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/llm-analytics-hub-target}"
exec cargo run --release --locked --bin analytics-hub -- serve --demo "$@"
