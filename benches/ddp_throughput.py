"""Data-parallel training speed on CPU: `dtl run` with two replicas against
PyTorch DDP (gloo) with two, and dtl's scaling from one replica to two.

    .venv/bin/python benches/ddp_throughput.py [--steps 300] [--repeat 3] [--threads 1] [--json]

The model is benches/wide_mlp.dtl (a 301k-parameter MLP on the digits,
AdamW, micro_batch 32 per replica, accumulate 1, norm clipping, no dropout);
its PyTorch twin is benches/torch_ddp_train.py. Three runs, `--repeat` times
in turn, each its own process(es), with MKL_NUM_THREADS = OMP_NUM_THREADS =
`--threads` per rank:

- dtl×2: `dtl run benches/wide_mlp.dtl` (its `parallel { data = 2 }`: dtl
  starts 2 ranks through mpirun), global batch 64;
- torch×2: torch_ddp_train.py --world 2, DDP over gloo, global batch 64;
- dtl×1: the same file with `--set parallel.data=1`: one process, the same
  32 rows per replica, so a global batch of 32.

All three start from the same weights (torch_ddp_train.py --write-init,
handed to dtl with --init) and read dtl's seeded order, so dtl×2 and
torch×2 do the same work: their final losses are printed side by side as a
check. Steps/s is the training loop only, timed inside the processes
(dtl's summary.json `steps_per_second`, rank 0; PyTorch's rank 0 from a
barrier after set-up to its last step); the best of the repeats counts.
samples/s = steps/s × rows per step. A PyTorch run that crashes after
printing its result (gloo's teardown once aborted so) is kept, one that
crashes before it is run again (up to 3 times); either is said in a note
under the table. See benches/README.md.
"""

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import require_dtl, thread_env

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "benches" / "wide_mlp.dtl"
TORCH_SIDE = ROOT / "benches" / "torch_ddp_train.py"
MICRO_BATCH = 32  # per replica, the file's train.micro_batch


def run(cmd, env):
    done = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}\n"
                         f"{done.stderr}{done.stdout}")
    return done.stdout


# The PyTorch side's attempts at one run: gloo's teardown has aborted once
# after the result was printed ("terminate called without an active
# exception", SIGABRT); such a run measured what it had to.
TORCH_ATTEMPTS = 3


def torch_result(cmd, env, notes):
    """The last output line (JSON) of the PyTorch side. A process that
    crashes after printing its result is kept, and said; one that crashes
    before is run again, up to TORCH_ATTEMPTS times, and said too."""
    for attempt in range(1, TORCH_ATTEMPTS + 1):
        done = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        lines = done.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            result = None
        if done.returncode == 0 and result is not None:
            return result
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        if result is not None:
            notes.append(f"PyTorch exited {done.returncode} after printing its result "
                         f"({why}); the result is kept")
            return result
        notes.append(f"PyTorch exited {done.returncode} before its result ({why}); "
                     f"attempt {attempt} of {TORCH_ATTEMPTS}")
    raise SystemExit(f"PyTorch failed {TORCH_ATTEMPTS} times: {' '.join(map(str, cmd))}")


def dtl_run(dtl, world, steps, init, out, env):
    """{"steps_per_second", "final_loss", "world"} of one `dtl run`."""
    cmd = [dtl, "run", MODEL, "--device", "cpu", "-q", "--out", out, "--overwrite", "--init", init,
           "--set", f"train.steps={steps}", "--set", f"parallel.data={world}"]
    run(cmd, env)
    summary = json.loads((Path(out) / "summary.json").read_text())
    assert summary["steps"] == steps, summary
    if summary.get("world_size", 1) != world:
        raise SystemExit(f"dtl ran on {summary.get('world_size')} ranks, not {world}")
    speed = summary.get("steps_per_second") or steps / summary["train_seconds"]
    return {"steps_per_second": speed, "final_loss": summary["final_loss"]}


def torch_run(world, steps, threads, init, env, notes):
    result = torch_result([sys.executable, TORCH_SIDE, "--world", world, "--steps", steps,
                           "--threads", threads, "--init", init], env, notes)
    assert result["steps"] == steps and result["world"] == world, result
    return {"steps_per_second": result["steps_per_second"], "final_loss": result["final_loss"]}


def best(runs):
    return max(runs, key=lambda r: r["steps_per_second"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.steps < 1 or args.repeat < 1 or args.threads < 1:
        parser.error("--steps, --repeat and --threads must be at least 1")

    dtl = require_dtl()
    env = thread_env(args.threads)
    runs = {"dtl2": [], "torch2": [], "dtl1": []}
    notes = []
    with tempfile.TemporaryDirectory(prefix="dtl-ddp-bench-") as work:
        init = Path(work) / "init.safetensors"
        run([sys.executable, TORCH_SIDE, "--write-init", init], env)
        for i in range(args.repeat):
            # Interleaved, so that all three see the same machine noise.
            runs["dtl2"].append(dtl_run(dtl, 2, args.steps, init, Path(work) / "dtl2", env))
            runs["torch2"].append(torch_run(2, args.steps, args.threads, init, env, notes))
            runs["dtl1"].append(dtl_run(dtl, 1, args.steps, init, Path(work) / "dtl1", env))
            print(f"run {i + 1}/{args.repeat}: " + ", ".join(
                f"{name} {r[-1]['steps_per_second']:.1f} steps/s" for name, r in runs.items()),
                file=sys.stderr)

    rows = []
    for name, label, world in (("dtl2", "dtl", 2), ("torch2", "torch DDP", 2),
                               ("dtl1", "dtl", 1)):
        r = best(runs[name])
        rows.append({"run": name, "tool": label, "world": world,
                     "rows_per_step": world * MICRO_BATCH,
                     "steps_per_second": r["steps_per_second"],
                     "samples_per_second": r["steps_per_second"] * world * MICRO_BATCH,
                     "final_loss": r["final_loss"]})
    by = {r["run"]: r for r in rows}
    report = {
        "dtl": str(dtl),
        "torch": importlib.metadata.version("torch"),
        "model": str(MODEL.relative_to(ROOT)),
        "threads_per_rank": args.threads,
        "cpus": os.cpu_count(),
        "steps": args.steps,
        "repeat": args.repeat,
        "results": rows,
        "dtl_over_torch": by["dtl2"]["steps_per_second"] / by["torch2"]["steps_per_second"],
        "dtl_scaling_samples": by["dtl2"]["samples_per_second"] / by["dtl1"]["samples_per_second"],
        "dtl_scaling_efficiency":
            by["dtl2"]["samples_per_second"] / (2 * by["dtl1"]["samples_per_second"]),
        "notes": notes,
        "final_loss_difference":
            abs(by["dtl2"]["final_loss"] - by["torch2"]["final_loss"])
            / abs(by["torch2"]["final_loss"]),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"dtl: {report['dtl']}   torch {report['torch']}   {report['model']}   "
          f"{args.threads} thread(s) per rank, {report['cpus']} CPUs   {args.steps} steps, "
          f"best of {args.repeat}")
    print("{:<6} {:<10} {:>5} {:>9} {:>10} {:>11} {:>11}".format(
        "run", "tool", "world", "rows/step", "steps/s", "samples/s", "final loss"))
    for r in rows:
        print("{:<6} {:<10} {:>5} {:>9} {:>10.1f} {:>11.0f} {:>11.6f}".format(
            r["run"], r["tool"], r["world"], r["rows_per_step"], r["steps_per_second"],
            r["samples_per_second"], r["final_loss"]))
    print(f"dtl/torch at world 2: {report['dtl_over_torch']:.2f}x steps/s")
    print(f"dtl world 1 → 2: {report['dtl_scaling_samples']:.2f}x samples/s "
          f"(efficiency {report['dtl_scaling_efficiency']:.0%}), "
          f"{by['dtl2']['steps_per_second'] / by['dtl1']['steps_per_second']:.2f}x steps/s")
    print(f"same work: final losses of dtl×2 and torch×2 differ by "
          f"{report['final_loss_difference']:.1e} (relative)")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
