#!/usr/bin/env bash
# The CI recipe of docs/ci.md, run on this repository: a slim build of the
# CLI (the compiler only: no libtorch, no MPI) checks, format-checks and
# compiles every example, and its plans match the golden ones.
set -euo pipefail
cd "$(dirname "$0")/.."
# Built in the shared target folder (its dependencies are the default
# build's), copied aside, and the default binary built back.
cargo build --no-default-features --bin dtl
mkdir -p target/slim
cp target/debug/dtl target/slim/dtl
cargo build --bins
dtl=target/slim/dtl
if readelf -d "$dtl" | grep -q -E 'libtorch|libmpi'; then
  echo "slim-check: the slim build links libtorch or MPI" >&2
  exit 1
fi
"$dtl" check --format github examples/*.dtl
"$dtl" fmt --check examples/*.dtl
for example in examples/*.dtl; do
  name=$(basename "$example" .dtl)
  "$dtl" compile "$example" | diff -u "tests/golden/examples/$name.plan.yaml" -
done
echo "slim-check: ok ($(ls examples/*.dtl | wc -l) examples)"
