#!/usr/bin/env bash
# Benchmarks dtl against the same training programs in PyTorch eager mode
# (benches/vs_pytorch.py): a release build, then steps/s and peak RSS of
# both, with the ratio. Arguments go to vs_pytorch.py (--steps, --repeat,
# --threads, --examples, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bins
DTL_BIN=target/release/dtl .venv/bin/python benches/vs_pytorch.py "$@"
