#!/usr/bin/env bash
# The memory-bounded drift check, measured. Four parts, one run:
#
#  1. ROWS x FEATURES doubles per side in Parquet (default 50M x 20: 16 GB as f64 in all),
#     features f0..f2 shifted by 0.25, 0.05 and 0.01 sd; `retraind check --memory-budget
#     BUDGET` (default 1GiB): wall time, throughput, peak RSS (/usr/bin/time), swap pages
#     written during the run (/proc/vmstat pswpout), the verdicts.
#  2. CASES seeded cases (default 20) of 5M rows a side with one feature per shift (0, 0.01,
#     0.05, 0.25 sd): the check exact (16 GiB budget) and sketched (64 MiB budget), with the
#     default effect gate and with --min-effect 0 (the KS p-value alone): verdicts compared
#     feature by feature.
#  3. A reference profile of 1M x FEATURES (`retraind profile`): its size against the
#     Parquet file's; and the daily check with the stored profile of part 1's reference
#     against the check that reads the reference's rows: time and bytes of files read.
#  4. The sketched KS test's error rates (benches/sketch_ks.rs): 200 quiet days and 200
#     days shifted by 0.05 sd at 10M rows, epsilon 0.001.
#
#   benches/drift_bounded.sh [ROWS] [FEATURES] [BUDGET] [CASES]
#
# Needs ~2 x ROWS x FEATURES x 8 bytes of disk under BENCH_DIR (default /tmp/retraind-bench).
# Not run by CI: benchmarks are for people, on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-50000000}"
features="${2:-20}"
budget="${3:-1GiB}"
cases="${4:-20}"

# shellcheck source=benches/venv.sh
source benches/venv.sh

# gen.py ROWS FEATURES SEED OUT SHIFT... : normal doubles, one row group per million rows,
# written a row group at a time (never the whole table in memory).
gen="$work/gen_bounded.py"
cat > "$gen" <<'PY'
import sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
rows, features, seed, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
shift = np.zeros(features)
for i, s in enumerate(sys.argv[5:]):
    shift[i] = float(s)
rng = np.random.default_rng(seed)
names = [f"f{i}" for i in range(features)]
schema = pa.schema([(n, pa.float64()) for n in names])
with pq.ParquetWriter(out, schema, compression="snappy") as w:
    left = rows
    while left > 0:
        n = min(left, 1_000_000)
        block = rng.normal(size=(n, features)) + shift
        w.write_table(pa.Table.from_arrays([pa.array(block[:, i]) for i in range(features)], schema=schema))
        left -= n
PY

cargo build --release --quiet
cargo bench --bench sketch_ks --no-run --quiet 2>/dev/null
bin=target/release/retraind

# run LABEL ARGS...: the check under /usr/bin/time; prints "label seconds peak_mib swapped_pages"
# and keeps the JSON report in $work/LABEL.json.
run() {
  local label="$1"; shift
  local before after secs kib
  before=$(awk '/^pswpout/ {print $2}' /proc/vmstat)
  /usr/bin/time -f "%e %M" -o "$work/$label.time" "$bin" check --format json "$@" \
    > "$work/$label.json" || true
  after=$(awk '/^pswpout/ {print $2}' /proc/vmstat)
  read -r secs kib < <(tail -n 1 "$work/$label.time")
  echo "$label $secs $((kib / 1024)) $((after - before))"
}

verdicts() {
  "$venv/bin/python" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(" ".join("%s=%d" % (f["name"], f["drifted"]) for f in r["features"]))' "$1"
}

echo "== 1. ${rows} x ${features} per side, --memory-budget ${budget}"
ref="$work/bounded-ref-$rows-$features.parquet"
cur="$work/bounded-cur-$rows-$features.parquet"
[ -f "$ref" ] || "$venv/bin/python" "$gen" "$rows" "$features" 1 "$ref"
[ -f "$cur" ] || "$venv/bin/python" "$gen" "$rows" "$features" 2 "$cur" 0.25 0.05 0.01
bytes=$(( $(stat -c %s "$ref") + $(stat -c %s "$cur") ))
read -r _ secs mib swapped < <(run big --reference "$ref" --current "$cur" --memory-budget "$budget" --correction none)
doubles_gb=$(awk -v r="$rows" -v f="$features" 'BEGIN {printf "%.1f", 2 * r * f * 8 / 1e9}')
echo "data: ${doubles_gb} GB as f64 (${bytes} bytes of Parquet); time ${secs} s; peak RSS ${mib} MiB; swap pages written ${swapped} ($(swapon --noheadings --show 2>/dev/null | wc -l) swap devices)"
awk -v r="$rows" -v f="$features" -v s="$secs" -v b="$bytes" \
  'BEGIN {printf "throughput: %.2f M rows/s (both sides), %.0f M values/s, %.0f MB/s of Parquet\n", 2*r/s/1e6, 2*r*f/s/1e6, b/s/1e6}'
echo "verdicts: $(verdicts "$work/big.json")"
"$venv/bin/python" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("rank errors:", sorted({f.get("rank_error") for f in r["features"]}, key=str))' "$work/big.json"

echo
echo "== 2. ${cases} cases of 5M rows, shifts 0 / 0.01 / 0.05 / 0.25 sd: exact vs sketched"
same=0; differ=0
for seed in $(seq 1 "$cases"); do
  cref="$work/case-ref.parquet"; ccur="$work/case-cur.parquet"
  "$venv/bin/python" "$gen" 5000000 4 "$((seed * 2 + 100))" "$cref"
  "$venv/bin/python" "$gen" 5000000 4 "$((seed * 2 + 101))" "$ccur" 0 0.01 0.05 0.25
  for effect in 0.1 0; do
    run exact --reference "$cref" --current "$ccur" --memory-budget 16GiB --correction none --min-effect "$effect" > /dev/null
    run sketched --reference "$cref" --current "$ccur" --memory-budget 64MiB --correction none --min-effect "$effect" > /dev/null
    e=$(verdicts "$work/exact.json"); s=$(verdicts "$work/sketched.json")
    if [ "$e" = "$s" ]; then same=$((same + 1)); else differ=$((differ + 1)); echo "case $seed min-effect $effect: exact [$e] sketched [$s]"; fi
    [ "$seed" = 1 ] && echo "case 1 min-effect $effect: exact [$e] sketched [$s]"
  done
done
rm -f "$work/case-ref.parquet" "$work/case-cur.parquet"
echo "verdict sets equal: ${same} of $((same + differ)) (cases x effect gates), $((4 * (same + differ))) feature verdicts"

echo
echo "== 3. stored reference profiles"
small="$work/bounded-ref-1000000-$features.parquet"
[ -f "$small" ] || "$venv/bin/python" "$gen" 1000000 "$features" 3 "$small"
"$bin" profile --input "$small" --output "$work/small.profile" > /dev/null
ps=$(stat -c %s "$work/small.profile"); ds=$(stat -c %s "$small")
awk -v p="$ps" -v d="$ds" 'BEGIN {printf "profile of 1M x %d: %d bytes, %.2f%% of the Parquet file (%d bytes)\n", '"$features"', p, 100*p/d, d}'
start=$(date +%s.%N)
"$bin" profile --input "$ref" --output "$work/big.profile" --memory-budget "$budget" > /dev/null
echo "profiling part 1's reference once: $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e-s}') s"
read -r _ psecs pmib _ < <(run with-profile --reference "$work/big.profile" --current "$cur" --memory-budget "$budget" --correction none)
pbytes=$(( $(stat -c %s "$work/big.profile") + $(stat -c %s "$cur") ))
echo "daily check reading the reference's rows: ${secs} s, ${bytes} bytes of files read, peak ${mib} MiB"
echo "daily check with the stored profile:      ${psecs} s, ${pbytes} bytes of files read, peak ${pmib} MiB"
echo "verdicts with the profile: $(verdicts "$work/with-profile.json")"

echo
echo "== 4. sketched KS error rates"
cargo bench --bench sketch_ks --quiet -- 10000000 200 0.05 0.001
