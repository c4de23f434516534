#!/usr/bin/env bash
# Sets up (first time only), then runs every test of the workspace, then
# the slim CLI's CI recipe (scripts/slim-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
# The code's own standards first: formatting and every clippy lint.
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace "$@"
# The documented CI recipe (docs/ci.md) with the slim, libtorch-free CLI.
scripts/slim-check.sh
