#!/usr/bin/env bash
# The long fuzz of the front end (not part of scripts/test.sh): a release
# build of compiler/examples/fuzz.rs over one million mutants by default.
# An abort (a stack overflow, say) ends the process without its summary
# line: this script reports that as a failure too.
#
#   scripts/fuzz.sh [--inputs N] [--seed S] [--limit-ms MS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p dtl-compiler --example fuzz
set +e
target/release/examples/fuzz "$@"
code=$?
set -e
if [ "$code" -ne 0 ]; then
  echo "fuzz: FAILED (exit $code${code:+; above 128 is a signal: an abort})" >&2
  exit 1
fi
