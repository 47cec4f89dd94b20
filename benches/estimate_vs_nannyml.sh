#!/usr/bin/env bash
# Label-free performance estimation, `retraind estimate` vs NannyML 0.13.1's CBPE, on the same
# Parquet files, in the same run, like for like. Prints wall time and peak memory of each (as
# whole processes, from the shell), the ratios nannyml/retraind, and how far the two tools'
# estimates are apart.
#
#   benches/estimate_vs_nannyml.sh [ROWS]          (default 1000000)
#
# Data (numpy, seeded, made once and kept in $BENCH_DIR, default /tmp/retraind-bench): a binary
# classifier's scores on 4 features, columns x0..x3, y_pred_proba, y_pred, target.
#   reference  REF_ROWS rows (default ROWS), labelled.
#   analysis   ROWS rows without `target` (the label-free case being measured), cut into
#              CHUNKS chunks (default 10, chunk_size = ROWS / CHUNKS); x0 shifts from chunk 6
#              on (covariate shift, P(y|x) unchanged), so the estimates move. The labels are
#              kept apart (analysis-targets) and used only to print estimate vs realised.
#   The model's probabilities are miscalibrated on purpose, so both tools fit the isotonic
#   calibration (the expensive path).
# Each tool reads both files whole, fits CBPE on the reference (metrics roc_auc, f1, precision,
# recall, specificity, accuracy; thresholds from the reference cut into chunks of the same
# size), estimates every analysis chunk and writes the result as JSON.
#
# Measured per run with /usr/bin/time: elapsed wall seconds and peak RSS of the whole process
# (Python's start and `import nannyml` included); medians over RUNS runs (default 3). Both tools
# run under the same `nice -n $NICE` (default 10) and the same thread settings, for each entry
# of THREADS (default "1 all"):
#   1    taskset to one core, RAYON_NUM_THREADS=POLARS_MAX_THREADS=OMP_NUM_THREADS=
#        OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1 (pyarrow's pool follows OMP_NUM_THREADS).
#   all  every core; the same variables set to the number of cores.
#
# Environment overrides:
#   RETRAIND_BIN   the binary to time (default target/release/retraind, built with
#                  `cargo build --release --locked --bin retraind` when missing)
#   NANNYML_VENV   the venv of tests/fixtures/nannyml/generate.sh (default
#                  /var/cache/retraind/nannyml-venv); created with the same pins when missing
#   BENCH_DIR, REF_ROWS, CHUNKS, RUNS, THREADS, NICE   as above
#   NUMPY_SORT     native (default) | portable: portable runs NannyML with numpy's SIMD sorts
#                  disabled (NPY_DISABLE_CPU_FEATURES), the tie order retraind follows (see
#                  tests/fixtures/nannyml/SPEC.md §0); slower, only for checking the numbers.
#
# Not run by CI: benchmarks are for people, on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-1000000}"
ref_rows="${REF_ROWS:-$rows}"
chunks="${CHUNKS:-10}"
runs="${RUNS:-3}"
threads="${THREADS:-1 all}"
nice_level="${NICE:-10}"
numpy_sort="${NUMPY_SORT:-native}"
chunk_size=$((rows / chunks))
cores="$(nproc)"

work="${BENCH_DIR:-/tmp/retraind-bench}"
mkdir -p "$work"
export NML_DISABLE_USAGE_LOGGING=1   # NannyML phones home otherwise

[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }

# --- retraind -----------------------------------------------------------------------------
bin="${RETRAIND_BIN:-target/release/retraind}"
if [ ! -x "$bin" ]; then
  if [ -n "${RETRAIND_BIN:-}" ]; then echo "RETRAIND_BIN=$bin is not executable" >&2; exit 1; fi
  cargo build --release --locked --bin retraind
fi
case "$bin" in *debug*) echo "warning: $bin looks like a debug build; its times mean little" >&2 ;; esac

# --- NannyML venv: the same path and pins as tests/fixtures/nannyml/generate.sh ----------------
venv="${NANNYML_VENV:-/var/cache/retraind/nannyml-venv}"
PINS=(
  "nannyml==0.13.1" "pandas==2.3.3" "statsmodels==0.15.0" "pyarrow==26.0.1" "numpy==2.4.6"
  "scipy==1.17.1" "scikit-learn==1.9.1" "lightgbm==4.5.0" "category_encoders==2.11.2"
)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
fi
if ! "$venv/bin/python" - "${PINS[@]}" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
def have(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None
sys.exit(0 if all(have(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:]) else 1)
PY
then
  "$venv/bin/pip" install --quiet "${PINS[@]}"
fi
py="$venv/bin/python"

# --- data ---------------------------------------------------------------------------------
ref="$work/estimate-reference-$ref_rows.parquet"
ana="$work/estimate-analysis-$rows-$chunks.parquet"
tgt="$work/estimate-analysis-targets-$rows-$chunks.parquet"
if [ ! -f "$ref" ] || [ ! -f "$ana" ] || [ ! -f "$tgt" ]; then
  "$py" - "$ref_rows" "$rows" "$chunks" "$ref" "$ana" "$tgt" <<'PY'
import sys
import numpy as np, pandas as pd
ref_rows, rows, chunks = map(int, sys.argv[1:4])
ref, ana, tgt = sys.argv[4:7]

def make(n, shift, seed):
    rng = np.random.default_rng(seed)  # one seed per file: each depends on its own size only
    x = rng.normal(size=(n, 4))
    x[:, 0] += shift
    # P(y|x) is fixed; the model ignores the x2*x3 term and is under-confident and biased,
    # so it needs (and gets) calibration.
    truth = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3]
    p = 1 / (1 + np.exp(-(0.8 * (1.5 * x[:, 0] - 1.0 * x[:, 1]) + 0.3)))
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(4)])
    df["y_pred_proba"] = p
    df["y_pred"] = (p >= 0.5).astype("int64")
    df["target"] = (rng.random(n) < 1 / (1 + np.exp(-truth))).astype("int64")
    return df

make(ref_rows, 0.0, 11).to_parquet(ref, index=False)
# covariate shift: x0's mean moves by 0.2 per chunk from the 6th chunk on (0 ... 1.0)
per_row = np.repeat(np.maximum(0, np.arange(chunks) - 4) * 0.2, -(-rows // chunks))[:rows]
a = make(rows, per_row, 12)
a[["target"]].to_parquet(tgt, index=False)
a.drop(columns="target").to_parquet(ana, index=False)
PY
fi

# --- the NannyML side: what a user would write ------------------------------------------------
cat > "$work/nannyml_cbpe.py" <<'PY'
import json, logging, sys, time, warnings
t0 = time.perf_counter()
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import pandas as pd
import nannyml as nml
ref_path, ana_path, chunk_size, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t1 = time.perf_counter()
reference, analysis = pd.read_parquet(ref_path), pd.read_parquet(ana_path)
t2 = time.perf_counter()
metrics = ["roc_auc", "f1", "precision", "recall", "specificity", "accuracy"]
cbpe = nml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="target",
                problem_type="classification_binary", metrics=metrics, chunk_size=chunk_size)
cbpe.fit(reference)
t3 = time.perf_counter()
df = cbpe.estimate(analysis).data
t4 = time.perf_counter()
df = df[df[("chunk", "period")] == "analysis"]
num = lambda v: None if pd.isna(v) else float(v)
chunks = [{"key": r[("chunk", "key")],
           "metrics": {m: {"value": num(r[(m, "value")]), "sampling_error": num(r[(m, "sampling_error")]),
                           "lower": num(r[(m, "lower_confidence_boundary")]),
                           "upper": num(r[(m, "upper_confidence_boundary")]),
                           "thresholds": {"lower": num(r[(m, "lower_threshold")]),
                                          "upper": num(r[(m, "upper_threshold")])},
                           "alert": bool(r[(m, "alert")])} for m in metrics}}
          for _, r in df.iterrows()]
json.dump({"calibrated": bool(cbpe.needs_calibration), "chunks": chunks,
           "phases_s": {"import": t1 - t0, "read": t2 - t1, "fit": t3 - t2, "estimate": t4 - t3}},
          open(out, "w"), indent=1)
PY

# --- timed runs ---------------------------------------------------------------------------------
# results.tsv: tool, threads, run, wall s, peak KiB
results="$work/estimate-results.tsv"
: > "$results"
timed() {  # timed TOOL THREADS RUN CMD...: one run under /usr/bin/time, nice, the thread settings
  local tool="$1" t="$2" run="$3"; shift 3
  local n="$cores" pin=()
  if [ "$t" = 1 ]; then n=1; pin=(taskset -c 0); fi
  local rc=0
  env RAYON_NUM_THREADS="$n" POLARS_MAX_THREADS="$n" OMP_NUM_THREADS="$n" \
      OPENBLAS_NUM_THREADS="$n" MKL_NUM_THREADS="$n" \
      /usr/bin/time -f '%e %M' -o "$work/time.txt" "${pin[@]}" nice -n "$nice_level" "$@" \
      > "$work/$tool.log" 2>&1 || rc=$?
  # retraind exits 3 when an estimate is outside its thresholds (expected with the shift)
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
    echo "$tool failed (exit $rc):" >&2; cat "$work/$tool.log" >&2; exit 1
  fi
  echo "$tool	$t	$run	$(tail -n1 "$work/time.txt" | tr ' ' '\t')" >> "$results"
}

npy_env=()
[ "$numpy_sort" = portable ] && npy_env=(NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR")
echo "retraind: $bin; nannyml: $venv (numpy sort: $numpy_sort)"
echo "reference $ref_rows rows, analysis $rows rows in $chunks chunks of $chunk_size; $runs runs per tool and thread setting; nice -n $nice_level; $cores cores"
for t in $threads; do
  for run in $(seq "$runs"); do
    # alternate the order so neither tool always runs on a warmer page cache
    for tool in $( [ $((run % 2)) = 1 ] && echo "retraind nannyml" || echo "nannyml retraind"); do
      if [ "$tool" = retraind ]; then
        timed retraind "$t" "$run" "$bin" estimate --reference "$ref" --current "$ana" \
          --chunk-size "$chunk_size" --metrics roc_auc,f1,precision,recall,specificity,accuracy \
          --format json --output "$work/retraind-estimate.json"
      else
        timed nannyml "$t" "$run" env "${npy_env[@]}" "$py" "$work/nannyml_cbpe.py" \
          "$ref" "$ana" "$chunk_size" "$work/nannyml-estimate.json"
      fi
      echo "  threads=$t run $run $tool: $(tail -n1 "$work/time.txt" | awk '{printf "%s s, %.0f MiB", $1, $2/1024}')"
    done
  done
done

# --- table and comparison ------------------------------------------------------------------------
"$py" - "$results" "$work/retraind-estimate.json" "$work/nannyml-estimate.json" "$ana" "$tgt" "$cores" <<'PY'
import json, statistics, sys
import numpy as np, pandas as pd
from sklearn.metrics import roc_auc_score
results, ours_path, theirs_path, ana_path, tgt_path, cores = sys.argv[1:7]

rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
med = {}
for tool, t, _, wall, kib in rows:
    med.setdefault((tool, t), ([], []))
    med[(tool, t)][0].append(float(wall)); med[(tool, t)][1].append(float(kib) / 1024)
print(f"\n{'tool':<10} {'threads':>7} {'wall s (median)':>16} {'peak MiB':>9} {'wall ratio':>11} {'mem ratio':>10}")
for (tool, t), (w, m) in med.items():
    ratio = ""
    if tool == "nannyml" and ("retraind", t) in med:
        rw, rm = med[("retraind", t)]
        ratio = f"{statistics.median(w) / statistics.median(rw):10.1f}x {statistics.median(m) / statistics.median(rm):9.1f}x"
    print(f"{tool:<10} {t if t == '1' else f'all ({cores})':>7} {statistics.median(w):16.2f} "
          f"{statistics.median(m):9.0f} {ratio}")
print("(ratios: nannyml / retraind at the same thread setting)")
ns = json.load(open(theirs_path))
print("nannyml phases (last run, s): " + ", ".join(f"{k} {v:.2f}" for k, v in ns["phases_s"].items()))

ours = json.load(open(ours_path))
theirs = ns["chunks"]
assert [c["key"] for c in ours["chunks"]] == [c["key"] for c in theirs], "chunk keys differ"
print(f"\ncalibrated: retraind {ours['calibration'][0]['calibrated']}, nannyml {ns['calibrated']}")
print(f"largest |retraind - nannyml| over the {len(theirs)} analysis chunks:")
print(f"{'metric':<12} {'value':>9} {'samp.err':>9} {'bounds':>9} {'thresh.':>9} {'alerts same':>11}")
def diff(a, b):
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    return abs(a - b)
for m in theirs[0]["metrics"]:
    pairs = [(o["metrics"][m], t["metrics"][m]) for o, t in zip(ours["chunks"], theirs)]
    d = lambda f: max(f(o, t) for o, t in pairs)
    print(f"{m:<12} {d(lambda o, t: diff(o['value'], t['value'])):9.1e}"
          f" {d(lambda o, t: diff(o['sampling_error'], t['sampling_error'])):9.1e}"
          f" {d(lambda o, t: max(diff(o['lower'], t['lower']), diff(o['upper'], t['upper']))):9.1e}"
          f" {d(lambda o, t: max(diff(o['thresholds']['lower'], t['thresholds']['lower']), diff(o['thresholds']['upper'], t['thresholds']['upper']))):9.1e}"
          f" {sum(o['alert'] == t['alert'] for o, t in pairs):>8}/{len(pairs)}")

# sanity: the estimates against the labels held back (realised: sklearn on the raw scores)
ana = pd.read_parquet(ana_path, columns=["y_pred_proba", "y_pred"])
y = pd.read_parquet(tgt_path)["target"].to_numpy()
print("\nper analysis chunk, retraind's estimate (realised from the held-back labels), alerts:")
for i, c in enumerate(ours["chunks"]):
    s = slice(c["rows"]["start"], c["rows"]["end"])
    auc = roc_auc_score(y[s], ana["y_pred_proba"].to_numpy()[s])
    acc = float(np.mean(y[s] == ana["y_pred"].to_numpy()[s]))
    e = c["metrics"]
    print(f"  {c['key']:<18} roc_auc {e['roc_auc']['value']:.4f} ({auc:.4f})  "
          f"accuracy {e['accuracy']['value']:.4f} ({acc:.4f})  "
          + ("alert: " + ",".join(k for k, v in e.items() if v["alert"]) if any(v["alert"] for v in e.values()) else "ok"))
PY
