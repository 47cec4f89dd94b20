#!/usr/bin/env bash
# Look at an HTML drift report the way a person does: run the demo, then take a screenshot of
# the drifted day's report in headless Chromium (Debian's `chromium` package).
#
#   tests/report_screenshot.sh [OUT.png]
#
# Check by eye: a histogram per feature, drifted features first and outlined in red, the
# decision and the champion's performance at the top.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/retraind-report.png}"
command -v chromium >/dev/null || { echo "install Debian's chromium package first" >&2; exit 2; }
dir="$(mktemp -d)"
cargo run -q -- demo --dir "$dir/demo" >/dev/null
report="$(ls "$dir"/demo/state/reports/churn/cycle-*.html | sort -V | tail -1)"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$dir/profile" --window-size=1100,1800 --screenshot="$out" "file://$report" \
  >/dev/null 2>&1
echo "screenshot of $report: $out"
