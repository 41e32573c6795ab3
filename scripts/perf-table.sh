#!/usr/bin/env bash
# Runs each PERF.md scenario RUNS times (default 3) with the release build and prints the
# median of every figure. Usage: scripts/perf-table.sh [RUNS] [scenario...]
# Scenarios: g1 g1-prewarm g1-sink g2 g2-disk g3 g4-leader g4-all lz4 zstd mem
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
shift || true
BIN=target/release/qwire
cargo build --release --quiet
declare -A ARGS=(
  [g1]="--records 5000000 --record-size 100 --acks leader"
  [g1-prewarm]="--records 5000000 --record-size 100 --acks leader --prewarm-mib 2048"
  [g1-sink]="--records 5000000 --record-size 100 --acks leader --sink"
  [g2]="--records 1000000 --record-size 1024 --acks leader --sink --compare-raw"
  [g2-disk]="--records 1000000 --record-size 1024 --acks leader --prewarm-mib 2048 --compare-raw"
  [g3]="--duration 20 --rate 10000 --linger-ms 0 --record-size 1024 --acks leader --compare-raw"
  [g4-leader]="--records 2000000 --record-size 100 --acks leader --batch-size 65536 --prewarm-mib 1024"
  [g4-all]="--records 2000000 --record-size 100 --acks all --batch-size 65536 --prewarm-mib 1024"
  [lz4]="--records 3000000 --record-size 100 --payload json --compression lz4"
  [zstd]="--records 3000000 --record-size 100 --payload json --compression zstd"
  [mem]="--records 10000000 --record-size 100 --acks leader --sink"
)
SCEN=("$@")
[ ${#SCEN[@]} -eq 0 ] && SCEN=(g1 g1-prewarm g1-sink g2 g2-disk g3 g4-leader g4-all lz4 zstd)
for s in "${SCEN[@]}"; do
  out=$(mktemp)
  for i in $(seq "$RUNS"); do
    $BIN bench ${ARGS[$s]} --warmup 2 --json 2>/dev/null | tail -1 >> "$out"
  done
  python3 - "$s" "$out" "${ARGS[$s]}" <<'PY'
import json, statistics, sys
name, path, args = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(path) if l.strip()]
def med(f):
    vals = [f(r) for r in rows if f(r) is not None]
    return statistics.median(vals) if vals else None
fields = {
    "records/s": lambda r: r["records_per_sec"],
    "MB/s": lambda r: r["mb_per_sec"],
    "p50 ms": lambda r: r["latency_ms"]["p50"],
    "p99 ms": lambda r: r["latency_ms"]["p99"],
    "p99.9 ms": lambda r: r["latency_ms"]["p999"],
    "raw MB/s": lambda r: r.get("raw_mb_per_sec"),
    "ratio": lambda r: r.get("ratio"),
    "raw rtt p99 µs": lambda r: (r.get("raw_rtt_us") or {}).get("p99"),
    "paced raw rtt p99 µs": lambda r: (r.get("raw_rtt_paced_us") or {}).get("p99"),
    "peak RSS MiB": lambda r: r["peak_rss_mib"],
    "failed": lambda r: r["failed"],
}
parts = []
for k, f in fields.items():
    v = med(f)
    if v is not None:
        parts.append(f"{k}={v:.3f}" if isinstance(v, float) and v < 100 else f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}")
print(f"{name} (median of {len(rows)}; qwire bench {args}): " + ", ".join(parts))
PY
  rm -f "$out"
done
