"""All-reduce speed on this machine: torch.distributed's gloo against dtl's
MPI all-reduce, float32 sums in place, between 2 and 4 processes.

    .venv/bin/python benches/allreduce.py [--ranks 2,4] [--megabytes 1,16,64]
                                          [--repeat 20] [--warmup 3] [--json]

gloo: R processes from torch.multiprocessing.spawn (localhost TCP store on a
free port), one thread each. For every size, `--warmup` untimed and then
`--repeat` timed all-reduces, each after a barrier; each rank takes the
median of its times, and the slowest rank's median counts — what
runtime/examples/allreduce.rs does on dtl's side (there the warm-up is 3
and the barrier an all-reduce of one value).

dtl's MPI: the Rust program `target/release/examples/allreduce` (or
DTL_ALLREDUCE_BIN), started as `mpirun -n R --bind-to none [--oversubscribe]
BIN --megabytes 1,16,64 --repeat N --json`; rank 0 prints one JSON object
{"backend":"mpi","ranks":R,"results":[{"megabytes":1,"seconds_median":…},…]}.
Without the binary (it is not built by `cargo build`) that side is skipped
with a message; the gloo side always runs.

A megabyte here is 2^20 bytes (262144 float32), as dtl's `bucket_mb`. See
benches/README.md.
"""

import argparse
import importlib.metadata
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def parse_list(text, kind=int):
    try:
        values = [kind(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive values, got {text!r}")
    return values


# ---------------------------------------------------------------------------
# gloo
# ---------------------------------------------------------------------------
def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_rank(rank, ranks, port, megabytes, warmup, repeat, out):
    """One rank: times the all-reduces and, on rank 0, writes
    {megabytes: the largest over the ranks of each rank's median} to OUT,
    as runtime/examples/allreduce.rs reports dtl's."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=ranks)
    try:
        times = {}
        for mb in megabytes:
            # Zeros stay zeros: no overflow or subnormals, however many rounds.
            tensor = torch.zeros(mb * MIB // 4, dtype=torch.float32)
            seconds = []
            for i in range(warmup + repeat):
                dist.barrier()  # every rank starts each all-reduce together
                started = time.perf_counter()
                dist.all_reduce(tensor)
                if i >= warmup:
                    seconds.append(time.perf_counter() - started)
            slowest = torch.tensor([statistics.median(seconds)], dtype=torch.float64)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            times[mb] = slowest.item()
            # That it is a sum at all: rank r gives r + 1 everywhere.
            tensor.fill_(rank + 1)
            dist.all_reduce(tensor)
            expected = ranks * (ranks + 1) // 2
            assert bool((tensor == expected).all()), f"all-reduce of {mb} MB is not a sum"
        if rank == 0:
            Path(out).write_text(json.dumps(times))
    finally:
        dist.destroy_process_group()


def run_gloo(ranks, megabytes, warmup, repeat):
    """{"backend", "ranks", "results": [{"megabytes", "seconds_median"}]}"""
    with tempfile.TemporaryDirectory(prefix="dtl-allreduce-") as work:
        out = Path(work) / "gloo.json"
        mp.spawn(gloo_rank, args=(ranks, free_port(), megabytes, warmup, repeat, str(out)),
                 nprocs=ranks, join=True)
        times = json.loads(out.read_text())
    return {"backend": "gloo", "ranks": ranks,
            "results": [{"megabytes": mb, "seconds_median": times[str(mb)]}
                        for mb in megabytes]}


# ---------------------------------------------------------------------------
# dtl's MPI all-reduce
# ---------------------------------------------------------------------------
def mpi_binary():
    """(path, explicitly chosen): DTL_ALLREDUCE_BIN, else the release example."""
    if os.environ.get("DTL_ALLREDUCE_BIN"):
        return Path(os.environ["DTL_ALLREDUCE_BIN"]).resolve(), True
    return ROOT / "target" / "release" / "examples" / "allreduce", False


def find_mpirun():
    """DTL_MPIRUN, else the virtualenv's, else PATH's: the order dtl run uses."""
    if os.environ.get("DTL_MPIRUN"):
        return Path(os.environ["DTL_MPIRUN"])
    venv = ROOT / ".venv" / "bin" / "mpirun"
    if venv.is_file():
        return venv
    found = shutil.which("mpirun")
    return Path(found) if found else None


def run_mpi(binary, mpirun, ranks, megabytes, repeat):
    """Runs the Rust program under mpirun; returns rank 0's JSON object."""
    command = [str(mpirun), "-n", str(ranks), "--bind-to", "none"]
    if ranks > (os.cpu_count() or 1):
        command.append("--oversubscribe")
    command += [str(binary), "--megabytes", ",".join(map(str, megabytes)),
                "--repeat", str(repeat), "--json"]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n"
                         f"{done.stderr}{done.stdout}")
    for line in reversed(done.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                report = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{binary} printed invalid JSON ({e}):\n{line}")
            break
    else:
        raise SystemExit(f"{binary} printed no JSON object:\n{done.stdout}{done.stderr}")
    if report.get("backend") != "mpi" or report.get("ranks") != ranks:
        raise SystemExit(f"{binary}: expected backend mpi on {ranks} ranks, got {report}")
    sizes = [r.get("megabytes") for r in report.get("results", [])]
    if [float(m) for m in sizes] != [float(m) for m in megabytes]:
        raise SystemExit(f"{binary}: results for {sizes} MB, asked for {megabytes}")
    return report


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def rows(gloo, mpi):
    """One row per size: times, algorithm and bus bandwidth, ratios."""
    ranks = gloo["ranks"]
    mpi_by_size = {float(r["megabytes"]): r for r in (mpi or {}).get("results", [])}
    out = []
    for result in gloo["results"]:
        mb, seconds = result["megabytes"], result["seconds_median"]
        row = {"ranks": ranks, "megabytes": mb, "gloo_seconds": seconds,
               "gloo_mb_per_s": mb / seconds,
               "gloo_bus_mb_per_s": mb * 2 * (ranks - 1) / ranks / seconds}
        if float(mb) in mpi_by_size:
            theirs = mpi_by_size[float(mb)]["seconds_median"]
            scratch = mpi_by_size[float(mb)].get("scratch_seconds_median")
            if scratch is not None:  # rsmpi's safe form: scratch buffer + copy back
                row["mpi_scratch_seconds"] = scratch
            row.update({"mpi_seconds": theirs, "mpi_mb_per_s": mb / theirs,
                        "mpi_bus_mb_per_s": mb * 2 * (ranks - 1) / ranks / theirs,
                        "mpi_over_gloo_time": theirs / seconds,
                        "mpi_over_gloo_speed": seconds / theirs})
        out.append(row)
    return out


def print_table(report):
    print(f"torch {report['torch']} gloo vs dtl MPI ({report['mpi_binary']}); "
          f"median of {report['repeat']} after {report['warmup']} warm-up; "
          f"{report['cpus']} CPUs; MB = 2^20 bytes")
    header = ("ranks", "MB", "gloo ms", "gloo MB/s", "mpi ms", "mpi MB/s",
              "mpi/gloo time", "mpi/gloo speed")
    print("{:>5} {:>4} {:>10} {:>10} {:>10} {:>10} {:>14} {:>15}".format(*header))
    for r in report["results"]:
        if "mpi_seconds" in r:
            mpi = "{:>10.3f} {:>10.1f} {:>13.2f}x {:>14.2f}x".format(
                r["mpi_seconds"] * 1e3, r["mpi_mb_per_s"], r["mpi_over_gloo_time"],
                r["mpi_over_gloo_speed"])
        else:
            mpi = "{:>10} {:>10} {:>14} {:>15}".format("-", "-", "-", "-")
        print("{:>5} {:>4} {:>10.3f} {:>10.1f} {}".format(
            r["ranks"], r["megabytes"], r["gloo_seconds"] * 1e3, r["gloo_mb_per_s"], mpi))
    print("MB/s: the tensor's size over the time (bus bandwidth, × 2(R−1)/R, in --json); "
          "mpi/gloo speed above 1: dtl's MPI all-reduce is faster")
    if report["mpi_skipped"]:
        print(f"dtl MPI side skipped: {report['mpi_skipped']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=parse_list, default=[2, 4],
                        help="process counts, comma-separated (default 2,4)")
    parser.add_argument("--megabytes", type=parse_list, default=[1, 16, 64],
                        help="tensor sizes in MB of 2^20 bytes (default 1,16,64)")
    parser.add_argument("--repeat", type=int, default=20, help="timed all-reduces per size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed all-reduces first")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be at least 1 and --warmup at least 0")
    if any(r < 2 for r in args.ranks):
        parser.error("--ranks: an all-reduce needs at least 2 processes")

    binary, chosen = mpi_binary()
    mpirun = find_mpirun()
    skipped = None
    if not binary.is_file():
        if chosen:
            raise SystemExit(f"DTL_ALLREDUCE_BIN names {binary}, which is not a file")
        skipped = (f"{binary.relative_to(ROOT)} is not built (cargo build --release "
                   f"--example allreduce, or set DTL_ALLREDUCE_BIN); only gloo measured")
    elif mpirun is None:
        skipped = "no mpirun (DTL_MPIRUN, .venv/bin/mpirun, PATH); run scripts/setup.sh"
    if skipped:
        print(f"note: dtl MPI side: {skipped}", file=sys.stderr)

    results = []
    for ranks in args.ranks:
        print(f"gloo, {ranks} ranks …", file=sys.stderr)
        gloo = run_gloo(ranks, args.megabytes, args.warmup, args.repeat)
        mpi = None
        if not skipped:
            print(f"dtl MPI, {ranks} ranks …", file=sys.stderr)
            mpi = run_mpi(binary, mpirun, ranks, args.megabytes, args.repeat)
        results += rows(gloo, mpi)
    report = {
        "torch": importlib.metadata.version("torch"),
        "mpi_binary": str(binary),
        "mpirun": str(mpirun) if mpirun else None,
        "mpi_skipped": skipped,
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "warmup": args.warmup,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
