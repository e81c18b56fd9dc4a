#!/usr/bin/env bash
# Measures how long a cluster without PostgreSQL (static cluster.peers, manifest catalog in a
# moto S3 server) takes to drop a member killed with kill -9: two instances on loopback, default
# cluster settings (catalog_refresh_ms 1000, member_timeout_ms 5000). Prints one line per run.
#   BIN=path/to/analytics-hub RUNS=3 scripts/peers-drop.sh
# Needs moto_server (pip install "moto[server]"), curl, python3. Ports 24555, 24561-24562.
set -euo pipefail
BIN="${BIN:-${CARGO_TARGET_DIR:-/var/tmp/llm-analytics-hub-target}/debug/analytics-hub}"
RUNS="${RUNS:-3}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
moto_server -p 24555 > "$WORK/moto.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:24555/ && break; sleep 0.1; done
curl -s -X PUT http://127.0.0.1:24555/hub-shared > /dev/null
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL=http://127.0.0.1:24555 AWS_ALLOW_HTTP=true PGWIRE_ENABLED=false
members() {
  curl -s http://127.0.0.1:24561/ready | python3 -c \
    'import sys,json; print(len(json.load(sys.stdin)["components"][0]["detail"]["shared"]["members"]))' 2>/dev/null || echo x
}
for run in $(seq 1 "$RUNS"); do
  for n in a b; do
    printf '[postgres]\ninstance_id = "%s"\n[cluster]\nremote = "s3://hub-shared/history-%s/"\nsecret = "peers-drop-secret-0123"\npeers = ["http://127.0.0.1:24561", "http://127.0.0.1:24562"]\n' \
      "$n" "$run" > "$WORK/$n.toml"
  done
  "$BIN" --config "$WORK/a.toml" serve --host 127.0.0.1 --port 24561 --data-dir "$WORK/a$run" > "$WORK/a$run.log" 2>&1 & A=$!; PIDS+=($A)
  "$BIN" --config "$WORK/b.toml" serve --host 127.0.0.1 --port 24562 --data-dir "$WORK/b$run" > "$WORK/b$run.log" 2>&1 & B=$!; PIDS+=($B)
  for _ in $(seq 1 600); do [ "$(members)" = "1" ] && break; sleep 0.1; done
  [ "$(members)" = "1" ] || { echo "run $run: the instances did not find each other" >&2; exit 1; }
  kill -9 "$B"; wait "$B" 2>/dev/null || true
  t0=$(date +%s%N)
  for _ in $(seq 1 400); do [ "$(members)" = "0" ] && break; sleep 0.05; done
  t1=$(date +%s%N)
  echo "run $run: the killed member left the other's list after $(( (t1 - t0) / 1000000 )) ms"
  kill "$A"; wait "$A" 2>/dev/null || true
done
