#!/usr/bin/env bash
# Drift check, retraind vs scipy's ks_2samp loop (and Evidently's DataDriftPreset with
# --evidently), on the same Parquet files, timed in the same run. Prints the ratios.
#
#   benches/drift_vs_peers.sh [ROWS] [FEATURES] [--evidently]
#
# Peers are installed into a throwaway venv outside the repo (see docs/benchmarks.md).
# Not run by CI: benchmarks are for people, on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-1000000}"
features="${2:-20}"
evidently="no"
[[ " $* " == *" --evidently "* ]] && evidently="yes"

work="${BENCH_DIR:-/tmp/retraind-bench}"
venv="$work/venv"
mkdir -p "$work"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy scipy "pandas<3" pyarrow
fi
if [ "$evidently" = yes ]; then
  "$venv/bin/pip" install -q evidently "pandas<3" >/dev/null
fi

ref="$work/reference-$rows-$features.parquet"
cur="$work/current-$rows-$features.parquet"
if [ ! -f "$cur" ]; then
  "$venv/bin/python" - "$rows" "$features" "$ref" "$cur" <<'PY'
import sys, numpy as np, pandas as pd
rows, features, ref, cur = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
rng = np.random.default_rng(7)
cols = [f"f{i}" for i in range(features)]
pd.DataFrame(rng.normal(size=(rows, features)), columns=cols).to_parquet(ref)
shift = np.zeros(features); shift[0] = 0.25  # one drifted feature
pd.DataFrame(rng.normal(size=(rows, features)) + shift, columns=cols).to_parquet(cur)
PY
fi

cargo bench --bench drift --no-run --quiet
# Peak RSS of the benchmark process (ru_maxrss of waited-for children: the largest of cargo
# and the bench binary).
"$venv/bin/python" - "$ref" "$cur" > "$work/retraind.json" <<'PY'
import json, resource, subprocess, sys
out = subprocess.run(["cargo", "bench", "--bench", "drift", "--quiet", "--", *sys.argv[1:3]],
                     check=True, capture_output=True, text=True).stdout
r = json.loads(out.strip().splitlines()[-1])
r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(r))
PY
"$venv/bin/python" - "$ref" "$cur" > "$work/scipy.json" <<'PY'
import sys, time, json
t0 = time.perf_counter()
import pandas as pd
from scipy.stats import ks_2samp
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
drifted = sum(ks_2samp(ref[c], cur[c]).pvalue < 0.05 for c in ref.columns)
print(json.dumps({"tool": "scipy", "total_s": time.perf_counter() - t0, "drifted": int(drifted)}))
PY
if [ "$evidently" = yes ]; then
  "$venv/bin/python" - "$ref" "$cur" > "$work/evidently.json" <<'PY'
import sys, time, json
t0 = time.perf_counter()
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur)
print(json.dumps({"tool": "evidently", "total_s": time.perf_counter() - t0}))
PY
fi

"$venv/bin/python" - "$work" "$evidently" <<'PY'
import json, sys, os
work, evidently = sys.argv[1], sys.argv[2] == "yes"
ours = json.load(open(os.path.join(work, "retraind.json")))
scipy = json.load(open(os.path.join(work, "scipy.json")))
print(f"rows {ours['reference_rows']} x {ours['current_rows']}, {ours['features']} features")
data_mb = 2 * ours['reference_rows'] * ours['features'] * 8 / 2**20
print(f"retraind  {ours['total_s']:8.2f} s  (load {ours['load_s']:.2f} s, tests {ours['test_s']:.2f} s), drifted {ours['drifted']}")
print(f"memory    peak {ours['peak_rss_mb']:.0f} MiB for {data_mb:.0f} MiB of data (two windows as f64): {ours['peak_rss_mb'] / data_mb:.2f}x")
print(f"scipy     {scipy['total_s']:8.2f} s  ratio {scipy['total_s'] / ours['total_s']:.1f}x, drifted (naive p<0.05) {scipy['drifted']}")
if evidently:
    ev = json.load(open(os.path.join(work, "evidently.json")))
    print(f"evidently {ev['total_s']:8.2f} s  ratio {ev['total_s'] / ours['total_s']:.1f}x")
PY
