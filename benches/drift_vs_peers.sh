#!/usr/bin/env bash
# Drift check, retraind vs scipy's ks_2samp loop (and Evidently's DataDriftPreset with
# --evidently), on the same Parquet files, in one run, like for like:
#
#  (a) whole processes from the shell under /usr/bin/time: `retraind check` vs
#      `python scipy_loop.py` (Python's start and `import pandas, scipy` count) vs Evidently;
#  (b) compute only: retraind's check code timed inside its process (benches/drift.rs) vs
#      the scipy loop timed after its imports (reading both files and testing every column);
#  retraind at one thread (pinned to one core, every pool at 1) and at all cores, beside the
#  single-threaded scipy loop (pinned to one core too); medians of RUNS (default 3);
#  and the per-feature KS p-values of retraind (`--correction none`) and scipy compared:
#  the largest relative difference is printed.
#
#   benches/drift_vs_peers.sh [ROWS] [FEATURES] [RUNS] [--evidently]
#
# The data: ROWS x FEATURES normal doubles per side (default 1M x 20), 13 features (or all,
# if fewer) shifted by 0.01 sd in the current file. Peers go into a throwaway venv under
# BENCH_DIR (default /tmp/retraind-bench). Not run by CI: benchmarks are for people, on a
# quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
positional=()
evidently="no"
for a in "$@"; do
  if [ "$a" = "--evidently" ]; then evidently="yes"; else positional+=("$a"); fi
done
rows="${positional[0]:-1000000}"
features="${positional[1]:-20}"
runs="${positional[2]:-3}"

# shellcheck source=benches/venv.sh
source benches/venv.sh
if [ "$evidently" = yes ]; then
  "$venv/bin/pip" install -q evidently "pandas<3" >/dev/null
fi

ref="$work/peers-ref-$rows-$features.parquet"
cur="$work/peers-cur-$rows-$features.parquet"
if [ ! -f "$cur" ]; then
  "$venv/bin/python" - "$rows" "$features" "$ref" "$cur" <<'PY'
import sys, numpy as np, pandas as pd
rows, features, ref, cur = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
rng = np.random.default_rng(7)
cols = [f"f{i}" for i in range(features)]
pd.DataFrame(rng.normal(size=(rows, features)), columns=cols).to_parquet(ref)
shift = np.zeros(features); shift[:13] = 0.01
pd.DataFrame(rng.normal(size=(rows, features)) + shift, columns=cols).to_parquet(cur)
PY
fi

cat > "$work/scipy_loop.py" <<'PY'
import sys, time, json
t0 = time.perf_counter()
import pandas as pd
from scipy.stats import ks_2samp
t1 = time.perf_counter()
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
p = {c: float(ks_2samp(ref[c], cur[c]).pvalue) for c in ref.columns}
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "compute_s": t2 - t1, "p": p}))
PY
cat > "$work/evidently_run.py" <<'PY'
import sys
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur)
PY

cargo build --release --quiet
cargo bench --bench drift --no-run --quiet 2>/dev/null
bin=target/release/retraind
cores=$(nproc)
one=(env RAYON_NUM_THREADS=1 POLARS_MAX_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c 0)
all=(env RAYON_NUM_THREADS="$cores" POLARS_MAX_THREADS="$cores")
args=(--reference "$ref" --current "$cur" --correction none)
tsv="$work/peers.tsv"
: > "$tsv"
# timed KIND TOOL THREADS CMD...: one whole-process run under /usr/bin/time; a line of the TSV
# (kind tool threads wall_s peak_mib cpu_s) and the command's stdout in $work/last.out.
timed() {
  local kind="$1" tool="$2" threads="$3"; shift 3
  /usr/bin/time -f "%e %M %U %S" -o "$work/time.txt" "$@" > "$work/last.out"
  read -r wall kib user sys < <(tail -n 1 "$work/time.txt")
  echo -e "$kind\t$tool\t$threads\t$wall\t$((kib / 1024))\t$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')" >> "$tsv"
}
for _ in $(seq 1 "$runs"); do
  timed whole retraind 1 "${one[@]}" "$bin" check "${args[@]}" --format json
  cp "$work/last.out" "$work/retraind-check.json"
  timed whole retraind "$cores" "${all[@]}" "$bin" check "${args[@]}" --format json
  timed whole scipy 1 "${one[@]}" "$venv/bin/python" "$work/scipy_loop.py" "$ref" "$cur"
  cp "$work/last.out" "$work/scipy.json"
  "$venv/bin/python" -c 'import json,sys; print("compute\tscipy\t1\t%s\t0\t0" % json.load(open(sys.argv[1]))["compute_s"])' "$work/scipy.json" >> "$tsv"
  for threads in 1 "$cores"; do
    if [ "$threads" = 1 ]; then pre=("${one[@]}"); else pre=("${all[@]}"); fi
    "${pre[@]}" cargo bench --bench drift --quiet -- "${args[@]}" > "$work/last.out"
    "$venv/bin/python" -c 'import json,sys; print("compute\tretraind\t%s\t%s\t0\t0" % (sys.argv[2], json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["compute_s"]))' "$work/last.out" "$threads" >> "$tsv"
  done
  if [ "$evidently" = yes ]; then
    timed whole evidently "$cores" "$venv/bin/python" "$work/evidently_run.py" "$ref" "$cur"
  fi
done

"$venv/bin/python" - "$tsv" "$work/retraind-check.json" "$work/scipy.json" "$rows" "$features" "$cores" <<'PY'
import json, statistics, sys
from collections import defaultdict
tsv, ours_json, scipy_json, rows, features, cores = sys.argv[1:]
runs = defaultdict(list)
for line in open(tsv):
    kind, tool, threads, wall, mib, cpu = line.split("\t")
    runs[(kind, tool, threads)].append((float(wall), int(mib), float(cpu)))
med = lambda k, i: statistics.median(r[i] for r in runs[k])
print(f"{rows} x {rows} rows x {features} features, {cores} cores; medians of {len(runs[('whole', 'scipy', '1')])} runs")
print("\n(a) whole processes (wall s, peak MiB, CPU s)")
s = ("whole", "scipy", "1")
print(f"  scipy loop, 1 thread     {med(s, 0):7.2f} s  {med(s, 1):5d} MiB  {med(s, 2):6.2f} s CPU")
for t in ["1", cores]:
    k = ("whole", "retraind", t)
    print(f"  retraind, {t} thread(s)    {med(k, 0):7.2f} s  {med(k, 1):5d} MiB  {med(k, 2):6.2f} s CPU   scipy / retraind: {med(s, 0) / med(k, 0):.1f}x")
e = ("whole", "evidently", cores)
if runs[e]:
    print(f"  Evidently                {med(e, 0):7.2f} s  {med(e, 1):5d} MiB   Evidently / retraind ({cores} threads): {med(e, 0) / med(('whole', 'retraind', cores), 0):.1f}x")
print("\n(b) compute after imports / start-up (s)")
c = ("compute", "scipy", "1")
print(f"  scipy loop, 1 thread     {med(c, 0):7.2f} s (read + ks_2samp per column)")
for t in ["1", cores]:
    k = ("compute", "retraind", t)
    print(f"  retraind, {t} thread(s)    {med(k, 0):7.2f} s   scipy / retraind: {med(c, 0) / med(k, 0):.1f}x")
ours = {f["name"]: f["p_value"] for f in json.load(open(ours_json))["features"]}
theirs = json.load(open(scipy_json))["p"]
worst, at = 0.0, None
for name, p in theirs.items():
    q = ours[name]
    rel = abs(q - p) / p if p > 0 else abs(q - p)
    if rel > worst:
        worst, at = rel, name
print(f"\np-values: {len(theirs)} features, largest relative difference retraind vs scipy {worst:.2e}" + (f" ({at}: {ours[at]:.6e} vs {theirs[at]:.6e})" if at else ""))
print("p-values below 0.05: retraind %d, scipy %d" % (sum(q < 0.05 for q in ours.values()), sum(p < 0.05 for p in theirs.values())))
PY
