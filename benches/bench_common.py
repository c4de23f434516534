"""What every benchmark driver here shares: which dtl binary runs, and the
thread environment both tools load libtorch with."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def dtl_binary():
    """DTL_BIN, else the release build, else the debug build."""
    if os.environ.get("DTL_BIN"):
        return Path(os.environ["DTL_BIN"]).resolve()
    release = ROOT / "target" / "release" / "dtl"
    return release if release.exists() else ROOT / "target" / "debug" / "dtl"


def require_dtl(announce=True):
    """dtl_binary(), or the driver ends saying how to build it; with
    `announce`, which binary runs is said on stderr."""
    dtl = dtl_binary()
    if not dtl.exists():
        raise SystemExit(f"{dtl} is missing: build dtl (cargo build --release) or set DTL_BIN")
    if announce:
        print(f"dtl: {dtl}", file=sys.stderr)
    return dtl


def thread_env(threads):
    """Both tools read these when libtorch loads. dtl keeps a MKL_NUM_THREADS
    it finds set instead of restarting itself with 1."""
    env = dict(os.environ)
    env["MKL_NUM_THREADS"] = str(threads)
    env["OMP_NUM_THREADS"] = str(threads)
    return env
