#!/usr/bin/env bash
# Reruns PERF.md's figures with the release build and prints medians.
#
#   scripts/perf-table.sh [RUNS]               issue 15's goal table (default RUNS=3)
#   scripts/perf-table.sh [RUNS] SCENARIO...   one median line per scenario (below)
#
# The goal table: every row of issue 15's table, each run RUNS times in interleaved
# rounds (round 1 runs every row once, then round 2, ...), so a drift in the machine's
# speed hits every row alike. Ratios are taken within one run (qwire against the raw quinn
# stream measured right after it, `--compare-raw`), or within one round for acks=all ÷
# acks=leader; the table shows their median and the raw quinn figures beside each row,
# with the producer's and the broker's CPU time per record.
#
# Environment:
#   BIN=path   the qwire binary (default target/release/qwire, built first when it is that)
#   SMOKE=1    tiny record counts and durations: proves the script runs, measures nothing
#   KEEP=dir   keep every run's JSON line in dir (ROW.jsonl)
#
# Scenarios: g1 g1-prewarm g1-sink g2 g2-disk g3 g4-leader g4-all lz4 zstd mem
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
shift || true
BIN=${BIN:-target/release/qwire}
if [ "$BIN" = target/release/qwire ]; then
  cargo build --release --quiet -p qwire-cli
fi
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
  # Issue 15's goal rows (every one with --compare-raw, for the raw figures beside it).
  [i15-100b]="--records 5000000 --record-size 100 --acks leader --compare-raw"
  [i15-1k-sink]="--records 1000000 --record-size 1024 --acks leader --sink --compare-raw"
  [i15-1k-disk]="--records 1000000 --record-size 1024 --acks leader --prewarm-mib 2048 --compare-raw"
  [i15-latency]="--duration 20 --rate 10000 --linger-ms 0 --record-size 1024 --acks leader --compare-raw"
  [i15-acks-leader]="--records 2000000 --record-size 100 --acks leader --batch-size 65536 --prewarm-mib 1024 --compare-raw"
  [i15-acks-all]="--records 2000000 --record-size 100 --acks all --batch-size 65536 --prewarm-mib 1024 --compare-raw"
)
GOAL_ROWS=(i15-100b i15-1k-sink i15-1k-disk i15-latency i15-acks-leader i15-acks-all)

# The arguments of a row, shrunk with SMOKE=1 (a debug build cannot keep 10 000 records/s).
args_of() {
  local a=${ARGS[$1]}
  if [ "${SMOKE:-0}" = 1 ]; then
    a=$(sed -E -e 's/--records [0-9]+/--records 20000/' -e 's/--duration [0-9]+/--duration 2/' \
      -e 's/--rate [0-9]+/--rate 2000/' -e 's/--prewarm-mib [0-9]+/--prewarm-mib 16/' <<<"$a")
  fi
  echo "$a"
}

DIR=${KEEP:-$(mktemp -d)}
mkdir -p "$DIR"
[ -z "${KEEP:-}" ] && trap 'rm -rf "$DIR"' EXIT
WARMUP=2
[ "${SMOKE:-0}" = 1 ] && WARMUP=0.5

run_row() { # row -> appends one JSON line to $DIR/row.jsonl
  # shellcheck disable=SC2046
  "$BIN" bench $(args_of "$1") --warmup "$WARMUP" --json 2>/dev/null | tail -1 >>"$DIR/$1.jsonl" || true
}

if [ $# -eq 0 ]; then
  for round in $(seq "$RUNS"); do
    for row in "${GOAL_ROWS[@]}"; do
      echo "round $round/$RUNS: $row" >&2
      run_row "$row"
    done
  done
  declare -A SHOWN
  for row in "${GOAL_ROWS[@]}"; do SHOWN[$row]=$(args_of "$row"); done
  python3 - "$DIR" "$RUNS" "$BIN" "${SMOKE:-0}" "$WARMUP" \
    "${SHOWN[i15-100b]}" "${SHOWN[i15-1k-sink]}" "${SHOWN[i15-1k-disk]}" "${SHOWN[i15-latency]}" \
    "${SHOWN[i15-acks-leader]}" "${SHOWN[i15-acks-all]}" <<'PY'
import json, os, platform, statistics, subprocess, sys
d, runs, binary, smoke, warmup = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", sys.argv[5]
cmd = dict(zip(["i15-100b", "i15-1k-sink", "i15-1k-disk", "i15-latency", "i15-acks-leader", "i15-acks-all"], sys.argv[6:]))

def load(row):
    path = os.path.join(d, row + ".jsonl")
    out = []
    for line in open(path) if os.path.exists(path) else []:
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append(None)  # a failed run keeps its round's slot
    return out

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def f(v, spec):
    return "—" if v is None else format(v, spec)

def cpu(rs):
    p = med([r["cpu"]["producer_ns_per_record"] for r in rs if r])
    b = med([r["cpu"].get("broker_ns_per_record") for r in rs if r])
    return f"{f(p, '.0f')} / {f(b, '.0f')}"

def verdict(v, goal, at_most=False):
    if v is None:
        return "no data"
    return "yes" if (v <= goal if at_most else v >= goal) else "**no**"

def rnd(v):
    return "—" if v is None else f"{v:.2f}"

rows = []
def throughput_row(name, row, goal):
    rs = load(row)
    ratios = [r and r.get("ratio") for r in rs]
    m = med(ratios)
    ok = [r for r in rs if r]
    rows.append((name, f"≥ {goal}", f"**{f(m, '.2f')}** ({', '.join(rnd(x) for x in ratios)})", verdict(m, goal),
                 f"{f(med([r['records_per_sec'] for r in ok]), ',.0f')} rec/s, {f(med([r['mb_per_sec'] for r in ok]), '.0f')} MB/s",
                 f"{f(med([r.get('raw_mb_per_sec') for r in ok]), '.0f')} MB/s", cpu(ok), cmd[row]))

throughput_row("100 B, acks=leader, disk: MB/s ÷ raw", "i15-100b", 0.5)
throughput_row("1 KiB, `--sink`: ÷ raw", "i15-1k-sink", 0.85)
throughput_row("1 KiB, disk, warm page cache: ÷ raw", "i15-1k-disk", 0.75)

lat = load("i15-latency")
ok = [r for r in lat if r]
def paced(r):
    return (r.get("raw_rtt_paced_us") or {}).get("p99")
for q, key, goal in (("p99", "p99", 2.0), ("p99.9", "p999", 4.0)):
    ratios = [r and paced(r) and r["latency_ms"][key] * 1000.0 / paced(r) for r in lat]
    m = med(ratios)
    rows.append((f"10 000 rec/s, linger 0, 1 KiB, acks=leader: {q} ÷ raw paced p99", f"≤ {goal:g} ×",
                 f"**{f(m, '.2f')} ×** ({', '.join(rnd(x) for x in ratios)})", verdict(m, goal, at_most=True),
                 f"p50 {f(med([r['latency_ms']['p50'] for r in ok]), '.3f')} / p99 {f(med([r['latency_ms']['p99'] for r in ok]), '.3f')} / p99.9 {f(med([r['latency_ms']['p999'] for r in ok]), '.3f')} ms",
                 f"paced p50 {f(med([(r.get('raw_rtt_paced_us') or {}).get('p50') for r in ok]), '.0f')} / p99 {f(med([paced(r) for r in ok]), '.0f')} µs; back to back p99 {f(med([(r.get('raw_rtt_us') or {}).get('p99') for r in ok]), '.0f')} µs",
                 cpu(ok), cmd["i15-latency"]))

leader, alls = load("i15-acks-leader"), load("i15-acks-all")
ratios = [a and l and a["records_per_sec"] / l["records_per_sec"] for a, l in zip(alls, leader)]
m = med(ratios)
okl, oka = [r for r in leader if r], [r for r in alls if r]
rows.append(("acks=all ÷ acks=leader, 64 KiB batches (records/s, same round)", "≥ 0.75",
             f"**{f(m, '.2f')}** ({', '.join(rnd(x) for x in ratios)})", verdict(m, 0.75),
             f"all {f(med([r['records_per_sec'] for r in oka]), ',.0f')}, leader {f(med([r['records_per_sec'] for r in okl]), ',.0f')} rec/s",
             f"{f(med([r.get('raw_mb_per_sec') for r in oka + okl]), '.0f')} MB/s",
             f"all {cpu(oka)}; leader {cpu(okl)}", cmd["i15-acks-all"] + " (and --acks leader)"))

try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = "?"
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"Issue 15 goal table: median of {runs} interleaved rounds, `{binary}` at {commit}, {os.cpu_count()} × {model}, Linux {platform.release()}."
      + (" SMOKE RUN: tiny counts, not a measurement." if smoke else ""))
print()
print("| figure | goal | median (per run) | met? | qwire | raw quinn, same run | CPU ns/record producer / broker | `qwire bench` … |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r[:7]) + f" | `{r[7]} --warmup {warmup}` |")
failed = sum(r["failed"] for row in cmd for r in load(row) if r)
missing = sum(1 for row in cmd for r in load(row) if r is None) + sum(max(0, runs - len(load(row))) for row in cmd)
if failed or missing:
    print(f"\nWARNING: {failed} records failed, {missing} runs gave no JSON.")
PY
  exit 0
fi

for s in "$@"; do
  for _ in $(seq "$RUNS"); do run_row "$s"; done
  python3 - "$s" "$DIR/$s.jsonl" "$(args_of "$s")" <<'PY'
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
    "producer CPU ns/record": lambda r: (r.get("cpu") or {}).get("producer_ns_per_record"),
    "broker CPU ns/record": lambda r: (r.get("cpu") or {}).get("broker_ns_per_record"),
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
done
