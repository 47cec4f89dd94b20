#!/usr/bin/env bash
# Slow clients and a read flood while a cycle runs: the bounded server keeps the leader and
# the cycle going and /metrics fast.
#
#   benches/slow_clients.sh [SECONDS]
#
# Starts `retraind run` on the demo's data with a training of about a minute and triggers a
# cycle. While it runs, for SECONDS (default 60): 500 slow clients (python3, standard
# library: each sends a request head one byte every 2 s and reconnects when the server
# closes it), a read flood (wrk, 1 thread, 64 connections on /api/v1/cycles) and wrk on
# /metrics (1 thread, 4 connections) for its latency. Then it waits for the cycle to end and
# prints /metrics' p50 and p99, the flood's rate, how many slow connections the server
# closed, whether the lease ever changed hands (its token, read from the store) or the
# daemon logged stepping down, and the cycle's outcome. It fails rather than print a figure
# when an answer was not 2xx, the cycle did not complete or the leader changed. Uses the
# dev-profile binary the tests build; RETRAIND_BIN for another. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
source benches/bench_env.sh

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
epochs = 1500
patience = 1500
hidden = [128, 128]
batch_size = 32
[pipeline.approval]
mode = "auto"
[pipeline.deploy]
watch_for = "0s"
TOML
cd "$work"
"$bin" --config retraind.toml --log-format json run 2>daemon.log &
daemon=$!
ready daemon.log
token_of() { sqlite3 state/retraind.db "SELECT holder || ' ' || token FROM leader_lease" 2>/dev/null || echo "?"; }
lease_before="$(token_of)"
cycle="$(curl -sf -X POST -H "Authorization: Bearer secret-token-for-the-load-bench" \
  "http://127.0.0.1:$port/api/v1/pipelines/load/trigger" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cycle"])')"

cat >slow.py <<'PY'
import socket, sys, time
port, n, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
head = b"GET /api/v1/cycles HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096
socks, closed, end = [], 0, time.time() + secs
def connect():
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    return [s, 0]
socks = [connect() for _ in range(n)]
while time.time() < end:
    for c in socks:
        try:
            c[0].send(head[c[1]:c[1] + 1]); c[1] += 1
            if c[0].recv(1024) == b"":
                raise ConnectionError
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
            c[0].close()
            c[0], c[1] = connect()
    time.sleep(2)
print(closed)
PY
flood_start="$(date -u +%s)"
python3 slow.py "$port" 500 "$secs" >slow.out &
slow=$!
sleep 1
wrk -t1 -c64 -d"${secs}s" "http://127.0.0.1:$port/api/v1/cycles" >flood.out &
flood=$!
wrk -t1 -c4 -d"$((secs - 2))s" --latency "http://127.0.0.1:$port/metrics" >metrics.out
wait "$flood" "$slow"
for f in flood.out metrics.out; do
  if grep -qE 'Non-2xx or 3xx responses|Socket errors' "$f"; then
    echo "answers were errors under load ($f):" >&2; cat "$f" >&2; exit 1
  fi
done
state=""
for _ in $(seq 600); do
  state="$(curl -sf "http://127.0.0.1:$port/api/v1/cycles/$cycle" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["state"], c.get("outcome"))')"
  ended="$(curl -sf "http://127.0.0.1:$port/api/v1/cycles/$cycle" | python3 -c 'import json,sys,datetime; f=json.load(sys.stdin).get("finished_at"); print(int(datetime.datetime.fromisoformat(f.replace("Z","+00:00")).timestamp()) if f else "")')"
  case "$state" in completed*|failed*|rejected*|rolled_back*) break ;; esac
  sleep 1
done
lease_after="$(token_of)"
downs="$(grep -c 'stepping down' daemon.log || true)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "/metrics under the flood: p50 $(awk '$1 == "50%" {print $2}' metrics.out), p99 $(awk '$1 == "99%" {print $2}' metrics.out), $(awk '/Requests\/sec/ {print $2}' metrics.out) requests/s"
echo "read flood /api/v1/cycles: $(awk '/Requests\/sec/ {print $2}' flood.out) requests/s"
echo "slow clients: 500 held for ${secs}s, $(cat slow.out) closed by the server's header timeout"
echo "lease: before '$lease_before', after '$lease_after'; 'stepping down' logged $downs times"
echo "cycle $cycle: $state, ended $((ended - flood_start)) s after the load began (load: ${secs} s)"
[ "$ended" -gt "$((flood_start + secs / 2))" ] || { echo "the cycle ended before the load's midpoint: lengthen the training" >&2; exit 1; }
[ "$lease_before" = "$lease_after" ] && [ "$downs" = 0 ] || { echo "the leader changed" >&2; exit 1; }
case "$state" in "completed deployed") ;; *) echo "the cycle did not complete: $state" >&2; tail -20 daemon.log >&2; exit 1 ;; esac
kill "$daemon"; wait "$daemon" 2>/dev/null || true
