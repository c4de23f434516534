#!/usr/bin/env bash
# Installs everything dtl needs to build, run and test, then builds it.
# Idempotent: a second run only checks. Needs a Debian machine with Rust
# (cargo) and Python 3; installs the rest (apt: libclang; pip: torch,
# Open MPI) itself.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { echo "setup: $*" >&2; }

# --- Debian packages ---------------------------------------------------------
need_apt=()
compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null || need_apt+=(libclang-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
{ command -v cc && command -v c++; } >/dev/null || need_apt+=(build-essential)  # C and C++ (torch-sys, the torch shim, the MPI shim)
# `dtl plot` draws PNG text with a system font.
compgen -G "/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf" >/dev/null || need_apt+=(fonts-dejavu-core)
# The editor tests run the VS Code grammar through a real TextMate engine
# from npm.
command -v npm >/dev/null || need_apt+=(nodejs npm)
# A real LSP client drives `dtl lsp` in the editor tests (editors/nvim).
command -v nvim >/dev/null || need_apt+=(neovim)
# The multi-host tests simulate two hosts with network namespaces
# (scripts/two-hosts.sh); the fault tests look for processes left over.
command -v ip >/dev/null || need_apt+=(iproute2)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v pgrep >/dev/null || need_apt+=(procps)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

command -v cargo >/dev/null || { say "cargo not found: install Rust (rustup) first"; exit 1; }

# --- Python virtualenv with torch and Open MPI ---------------------------------
stamp=.venv/.dtl-requirements
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
if ! cmp -s requirements.txt "$stamp"; then
  say "installing requirements.txt into .venv (torch is large: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  cp requirements.txt "$stamp"
fi
# A fixed path to libtorch for .cargo/config.toml, whatever the Python version.
torch_dir=$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" .venv/torch

# --- Build ---------------------------------------------------------------------
say "building dtl"
cargo build --quiet --bins
say "ready: $root/target/debug/dtl"
