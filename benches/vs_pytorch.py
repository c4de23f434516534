"""Training speed and peak memory of dtl against the same program in PyTorch
eager mode, on CPU, with the same number of threads.

    .venv/bin/python benches/vs_pytorch.py [--steps 300] [--repeat 3] [--threads 1] [--json]

For each example: compiles its plan (`dtl compile --format json`), then, R
times, trains it with `dtl run` and with benches/torch_train.py (the plan
rebuilt from torch.nn by tests/reference/torch_reference.py), each in its own
process. Steps/s is the best of the R runs; peak RSS is the largest of the
R runs, from wait4(2) for both processes alike. See benches/README.md.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import require_dtl, thread_env

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["digits_mlp", "digits_cnn", "digits_transformer", "moby_char_lm"]
MIB = 1024 * 1024


def max_rss_bytes(usage):
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return usage.ru_maxrss if platform.system() == "Darwin" else usage.ru_maxrss * 1024


def run_measured(cmd, env):
    """Runs cmd to the end; returns its stdout and its peak RSS in bytes.

    wait4 gives the rusage of this one child (and of any children it waited
    for), unlike RUSAGE_CHILDREN, whose ru_maxrss is the largest over every
    child this process has ever had."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{stderr}{stdout}")
    return stdout, max_rss_bytes(usage)


def dtl_speed(summary):
    """Steps/s from dtl's summary.json, and which of its timers gave it.
    `seconds` (the whole run: data loading, model build, the final
    evaluation, checkpointing) is the fallback for builds that predate
    `train_seconds`, and understates dtl's speed."""
    if summary.get("steps_per_second"):
        return summary["steps_per_second"], "train_seconds"
    if summary.get("train_seconds"):
        return summary["steps"] / summary["train_seconds"], "train_seconds"
    return summary["steps"] / summary["seconds"], "seconds"


def bench_example(name, args, dtl, env, work):
    source = ROOT / "examples" / f"{name}.dtl"
    overrides = [f"train.steps={args.steps}", "train.eval_every=0"]
    sets = [a for o in overrides for a in ("--set", o)]
    plan = work / f"{name}.plan.json"
    subprocess.run([dtl, "compile", source, "--format", "json", *sets, "-o", plan],
                   cwd=ROOT, env=env, check=True)
    dtl_cmd = [dtl, "run", source, *sets, "--device", "cpu", "-q", "--out", work / f"{name}.run",
               "--overwrite"]
    torch_cmd = [sys.executable, ROOT / "benches" / "torch_train.py", plan,
                 "--threads", str(args.threads)]

    dtl_runs, torch_runs = [], []
    for i in range(args.repeat):
        # Interleaved, so that both tools see the same machine noise.
        _, rss = run_measured(dtl_cmd, env)
        summary = json.loads((work / f"{name}.run" / "summary.json").read_text())
        assert summary["steps"] == args.steps, summary
        speed, timer = dtl_speed(summary)
        dtl_runs.append({"steps_per_second": speed, "timer": timer, "peak_rss": rss})

        stdout, rss = run_measured(torch_cmd, env)
        result = json.loads(stdout.strip().splitlines()[-1])
        assert result["steps"] == args.steps, result
        assert result["threads"] == args.threads, result
        torch_runs.append({"steps_per_second": result["steps_per_second"], "peak_rss": rss})
        print(f"{name} run {i + 1}/{args.repeat}: dtl {dtl_runs[-1]['steps_per_second']:.1f} "
              f"steps/s, torch {result['steps_per_second']:.1f} steps/s", file=sys.stderr)

    row = {
        "example": name,
        "dtl_steps_per_second": max(r["steps_per_second"] for r in dtl_runs),
        "torch_steps_per_second": max(r["steps_per_second"] for r in torch_runs),
        "dtl_peak_rss_bytes": max(r["peak_rss"] for r in dtl_runs),
        "torch_peak_rss_bytes": max(r["peak_rss"] for r in torch_runs),
        "dtl_timer": dtl_runs[0]["timer"],
    }
    row["speed_ratio"] = row["dtl_steps_per_second"] / row["torch_steps_per_second"]
    row["rss_ratio"] = row["dtl_peak_rss_bytes"] / row["torch_peak_rss_bytes"]
    return row


def print_table(report):
    print(f"dtl: {report['dtl']}   torch {report['torch']}   threads {report['threads']}   "
          f"{report['steps']} steps, best of {report['repeat']}")
    header = ("example", "dtl steps/s", "torch steps/s", "dtl/torch",
              "dtl RSS MiB", "torch RSS MiB", "RSS dtl/torch")
    print("{:<20} {:>12} {:>14} {:>10} {:>12} {:>14} {:>14}".format(*header))
    for r in report["results"]:
        print("{:<20} {:>12.1f} {:>14.1f} {:>9.2f}x {:>12.1f} {:>14.1f} {:>13.2f}x".format(
            r["example"], r["dtl_steps_per_second"], r["torch_steps_per_second"],
            r["speed_ratio"], r["dtl_peak_rss_bytes"] / MIB, r["torch_peak_rss_bytes"] / MIB,
            r["rss_ratio"]))
    if any(r["dtl_timer"] == "seconds" for r in report["results"]):
        print("note: this dtl has no train_seconds in summary.json; its steps/s is over the "
              "whole run (data loading, model build, final evaluation, checkpoint included)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both")
    parser.add_argument("--examples", nargs="+", default=EXAMPLES, metavar="NAME",
                        help="example stems from examples/ (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.steps < 1 or args.repeat < 1 or args.threads < 1:
        parser.error("--steps, --repeat and --threads must be at least 1")

    dtl = require_dtl(announce=False)

    env = thread_env(args.threads)
    with tempfile.TemporaryDirectory(prefix="dtl-bench-") as work:
        results = [bench_example(name, args, dtl, env, Path(work)) for name in args.examples]
    report = {
        "dtl": str(dtl),
        "torch": importlib.metadata.version("torch"),
        "threads": args.threads,
        "steps": args.steps,
        "repeat": args.repeat,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
