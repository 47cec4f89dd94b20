# Sourced by the daemon benches (load.sh, slow_clients.sh): the dev-profile binary the tests
# build (RETRAIND_BIN for another; built if missing), a work folder removed on exit with
# every background job, a random port, the demo's data under $work/demo, and `ready` to wait
# for /readyz. Expects to be sourced from the repository root, after `set -euo pipefail`.
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
bin="${RETRAIND_BIN:-$target/debug/retraind}"
[ -x "$bin" ] || cargo build -q
bin="$(realpath "$bin")"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
"$bin" demo --dir "$work/demo" >/dev/null 2>&1
echo -n "secret-token-for-the-load-bench" >"$work/token"

# Wait until the daemon answers /readyz; its log ($1) tells why not.
ready() {
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "the daemon did not become ready:" >&2; tail -5 "$1" >&2; exit 1
}
