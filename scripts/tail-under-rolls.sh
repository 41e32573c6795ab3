#!/usr/bin/env bash
# Issue 9 item 3: the acks=leader tail latency while the broker rolls segments, and the
# 1000 B throughput. Built only from `qwire` subcommands that exist before and after the
# change, so the same script measures an old binary and a new one:
#
#   scripts/tail-under-rolls.sh [BIN] [SECONDS]
#     BIN      the qwire binary (default target/release/qwire; built when it is that path)
#     SECONDS  length of the latency run (default 20)
#   SEGMENT_BYTES (default 8 MiB), ROLL_RECORD_KIB (default 512), SKIP_THROUGHPUT=1
#
# Phase 1: one `qwire broker` (single-threaded runtime, the default) with small
# segment_bytes. In the background, `qwire produce` writes ROLL_RECORD_KIB records to topic
# `rolls` as fast as it can (a segment roll every few records) and `qwire consume --follow`
# reads `rolls` from the start. Meanwhile `qwire bench --broker` sends 10 000 records/s of
# 1 KiB to topic `lat` with linger 0 and acks=leader and reports p50/p99/p99.9 per record.
# Phase 2: the 1000 B throughput with an embedded broker (default 256 MiB segments), with
# the disk log and with --sink.
#
# Run it on a quiet machine, once with the old build and once with the new one, e.g.
#   git worktree add /tmp/qwire-old <old-commit> && (cd /tmp/qwire-old && cargo build --release)
#   scripts/tail-under-rolls.sh /tmp/qwire-old/target/release/qwire 20
#   scripts/tail-under-rolls.sh target/release/qwire 20
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/qwire}
SECS=${2:-20}
SEGMENT_BYTES=${SEGMENT_BYTES:-8388608}
ROLL_RECORD_KIB=${ROLL_RECORD_KIB:-512}
if [ "$BIN" = target/release/qwire ]; then
  cargo build --release --quiet -p qwire-cli
fi
BIN=$(realpath "$BIN")

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADDR=127.0.0.1:$PORT
"$BIN" certs --out "$WORK/certs" --client alice >/dev/null
cat >"$WORK/broker.toml" <<EOF
segment_bytes = $SEGMENT_BYTES
EOF
"$BIN" broker --listen "$ADDR" --data-dir "$WORK/data" --certs "$WORK/certs" --config "$WORK/broker.toml" \
  >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
CLIENT=(-s "$ADDR" --certs "$WORK/certs" --client alice)
for _ in $(seq 100); do
  if "$BIN" produce "${CLIENT[@]}" -t lat -m warm-up -c 1 --acks leader -q >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"$BIN" produce "${CLIENT[@]}" -t rolls -m warm-up -c 1 --acks leader -q >/dev/null

head -c $((ROLL_RECORD_KIB * 1024)) /dev/urandom >"$WORK/big"
(
  trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM
  while true; do
    "$BIN" produce "${CLIENT[@]}" -t rolls --file "$WORK/big" -c 1000000 --acks leader \
      --max-record-size $((ROLL_RECORD_KIB * 1024 + 4096)) -q 2>>"$WORK/roller.log" &
    wait $! || sleep 0.2
  done
) &
PIDS+=($!)
"$BIN" consume "${CLIENT[@]}" -t rolls --from earliest --follow --format json >/dev/null 2>"$WORK/consumer.log" &
PIDS+=($!)
sleep 2

echo "== tail latency under rolls: $BIN, segment_bytes=$SEGMENT_BYTES, roll records ${ROLL_RECORD_KIB} KiB, ${SECS} s"
"$BIN" bench --broker "$ADDR" --certs "$WORK/certs" --client alice --topic lat \
  --rate 10000 --linger-ms 0 --record-size 1024 --acks leader --duration "$SECS" --json 2>/dev/null | tail -1 >"$WORK/lat.json"
SEGMENTS=$(find "$WORK/data/topics/rolls" -name '*.log' | wc -l)
python3 - "$WORK/lat.json" "$SEGMENTS" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read())
l = r["latency_ms"]
print(f"records/s {r['records_per_sec']:.0f}  p50 {l['p50']:.3f} ms  p99 {l['p99']:.3f} ms  "
      f"p99.9 {l['p999']:.3f} ms  failed {r['failed']}  (topic rolls: {sys.argv[2]} segments written)")
PY
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()
if grep -qiE "error|panicked" "$WORK/consumer.log"; then
  echo "consumer reported:"; tail -3 "$WORK/consumer.log"
fi

if [ "${SKIP_THROUGHPUT:-0}" != 1 ]; then
  RECORDS=${THROUGHPUT_RECORDS:-2000000}
  for extra in "" "--sink"; do
    echo "== 1000 B throughput, acks=leader, embedded broker ${extra:-with the disk log}"
    "$BIN" bench --records "$RECORDS" --record-size 1000 --acks leader $extra --warmup 2 --json 2>/dev/null \
      | tail -1 >"$WORK/tp.json"
    python3 - "$WORK/tp.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read())
print(f"records/s {r['records_per_sec']:.0f}  MB/s {r['mb_per_sec']:.1f}  p99 {r['latency_ms']['p99']:.3f} ms")
PY
  done
fi
