#!/usr/bin/env bash
# Sets up (first time only), then trains the default example end to end on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
exec target/debug/dtl run examples/digits_mlp.dtl --device cpu "$@"
