#!/usr/bin/env bash
# Sets up (first time only), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
cargo test --workspace "$@"
