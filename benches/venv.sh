# Sourced by the benchmark scripts: $work (BENCH_DIR, default /tmp/retraind-bench) and a
# throwaway venv $venv in it with numpy, scipy, pandas and pyarrow for the peers and the data.
work="${BENCH_DIR:-/tmp/retraind-bench}"
venv="$work/venv"
mkdir -p "$work"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy scipy "pandas<3" pyarrow
fi
