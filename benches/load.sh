#!/usr/bin/env bash
# Load: /metrics and the read API under wrk while a training runs, and the idle RSS.
#
#   benches/load.sh [SECONDS]
#
# Starts `retraind run` on generated data with a training that lasts minutes, waits until
# the cycle is `training`, then runs wrk (Debian's `wrk` package; 1 thread, 4 connections,
# SECONDS each, default 10) against /metrics, /api/v1/cycles and /api/v1/pipelines and
# prints requests/s and the p99 latency. Then starts a fresh daemon, leaves it idle for 5 s
# and prints its RSS. Uses the binary of the `dev` profile the tests build (deps at
# opt-level 2, our crate at 1); set RETRAIND_BIN for another build. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
source benches/bench_env.sh

# A config whose training runs for minutes.
cat >"$work/retraind.toml" <<TOML
[daemon]
state_dir = "state"
[server]
listen = "127.0.0.1:$port"
api_token_file = "token"
[[pipeline]]
name = "load"
[pipeline.data]
reference = "demo/data/reference.csv"
current = "demo/data/live.csv"
categorical = ["segment"]
[pipeline.train.burn]
epochs = 100000
patience = 100000
hidden = [256, 256]
batch_size = 32
TOML
cd "$work"
"$bin" --config retraind.toml --log-format json run 2>daemon.log &
daemon=$!
ready daemon.log
curl -sf -X POST -H "Authorization: Bearer secret-token-for-the-load-bench" \
  "http://127.0.0.1:$port/api/v1/pipelines/load/trigger" >/dev/null
# The page is read whole first: `curl | grep -q` under pipefail fails when grep stops early.
training() {
  local page
  page="$(curl -sf "http://127.0.0.1:$port/metrics")" || return 1
  grep -q 'retraind_cycle_state{pipeline="load",state="training"} 1' <<<"$page"
}
for _ in $(seq 300); do training && break; sleep 0.1; done
# Figures taken without a training running would measure an idle daemon: refuse them.
training || { echo "no training started within 30 s; the daemon's log ends:" >&2; tail -20 daemon.log >&2; exit 1; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "a training is running (retraind_training_epoch: $(curl -sf "http://127.0.0.1:$port/metrics" | awk '/^retraind_training_epoch/ {print $2}'))"
printf '%-22s %12s %10s %10s\n' endpoint "requests/s" "p50" "p99"
for path in /metrics /api/v1/cycles /api/v1/pipelines; do
  out="$(wrk -t1 -c4 -d"${secs}s" --latency "http://127.0.0.1:$port$path")"
  # wrk counts error answers as requests: a bench of 401s or 500s is not a throughput.
  if echo "$out" | grep -qE 'Non-2xx or 3xx responses|Socket errors'; then
    echo "$path answered errors under load; wrk said:" >&2; echo "$out" >&2; exit 1
  fi
  rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
  p50="$(echo "$out" | awk '$1 == "50%" {print $2}')"
  p99="$(echo "$out" | awk '$1 == "99%" {print $2}')"
  printf '%-22s %12s %10s %10s\n' "$path" "$rps" "$p50" "$p99"
done
training || { echo "the training stopped during the bench; the figures above are not under training load" >&2; tail -20 daemon.log >&2; exit 1; }
echo "still training, epoch $(curl -sf "http://127.0.0.1:$port/metrics" | awk '/^retraind_training_epoch/ {print $2}')"
kill "$daemon"; wait "$daemon" 2>/dev/null || true

# Idle RSS: a fresh daemon with the same config, no cycle.
rm -rf state
"$bin" --config retraind.toml --log-format json run 2>idle.log &
idle=$!
ready idle.log
sleep 5
echo "idle RSS: $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$idle/status)"
kill "$idle"; wait "$idle" 2>/dev/null || true
