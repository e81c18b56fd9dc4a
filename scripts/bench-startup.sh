#!/bin/bash
# Startup cost of checking every Parquet file (issue #23): N events stored and flushed to Parquet,
# then the time from exec to /ready, three times with checksums and once decoding files in full
# (the path for files written before checksums). Port 3998 on loopback.
# Usage: scripts/bench-startup.sh [N]   (HUB_BIN or $CARGO_TARGET_DIR/release/analytics-hub)
set -e
B=${HUB_BIN:-${CARGO_TARGET_DIR:-/var/tmp/llm-analytics-hub-target}/release/analytics-hub}
N=${1:-1000000}
D=$(mktemp -d /var/tmp/hub-startup-XXXX)
$B generate --count $N > $D/events.ndjson
PGWIRE_ENABLED=false $B serve --port 3998 --data-dir $D/data 2>$D/log1 & P=$!
until curl -sf localhost:3998/ready >/dev/null; do sleep 0.1; done
split -l 10000 $D/events.ndjson $D/chunk.
for f in $D/chunk.*; do curl -sf localhost:3998/api/v1/events/batch -H 'content-type: application/x-ndjson' --data-binary @$f >/dev/null; done
kill -TERM $P; wait $P || true
du -sh $D/data/events; ls $D/data/events | head
for run in 1 2 3; do
start=$(date +%s.%N)
PGWIRE_ENABLED=false $B serve --port 3998 --data-dir $D/data 2>$D/log2 & P=$!
until curl -sf localhost:3998/ready >/dev/null; do sleep 0.02; done
end=$(date +%s.%N)
echo "run $run: ready after $(echo "$end - $start" | bc) s"
curl -s localhost:3998/api/v1/sql -H 'content-type: application/json' -d '{"sql":"SELECT count(*) AS n FROM events"}'; echo
kill -TERM $P; wait $P || true
done
# the same files without checksums (verified by decoding, the path for files written before)
rm $D/data/events/*.crc32
start=$(date +%s.%N)
PGWIRE_ENABLED=false $B serve --port 3998 --data-dir $D/data 2>$D/log3 & P=$!
until curl -sf localhost:3998/ready >/dev/null; do sleep 0.02; done
end=$(date +%s.%N)
echo "without checksums (full decode): ready after $(echo "$end - $start" | bc) s"
kill -TERM $P; wait $P || true
rm -rf $D
