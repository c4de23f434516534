#!/usr/bin/env bash
# The front end's cost per line at 10k, 100k and 1M lines, for check and
# fmt: time and peak memory (from /usr/bin/time) per line. Roughly
# constant per-line figures mean no super-linear blow-up. A benchmark, not a
# test: docs/reliability.md has the table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p dtl-compiler --example bench_check
printf '%-6s %9s %10s %12s %12s %14s\n' what lines seconds "µs/line" "peak MiB" "peak KiB/line"
for what in check fmt; do
  for lines in 10000 100000 1000000; do
    out=$( { /usr/bin/time -f "%M" target/release/examples/bench_check --lines "$lines" --what "$what"; } 2>&1 )
    kib=$(echo "$out" | tail -1)
    line=$(echo "$out" | grep " lines ")
    actual=$(echo "$line" | awk '{print $2}')
    secs=$(echo "$line" | awk '{print $4}')
    per=$(echo "$line" | awk '{print $6}')
    printf '%-6s %9s %10s %12s %12.1f %14.3f\n' "$what" "$actual" "$secs" "$per" \
      "$(echo "$kib / 1024" | bc -l)" "$(echo "$kib / $actual" | bc -l)"
  done
done
