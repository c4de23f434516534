"""Sharded optimizer state (ZeRO-1) on CPU: `dtl run` with `shard =
optimizer` against PyTorch's ZeroRedundancyOptimizer under DDP (gloo), at
2 and 4 ranks, and each against its own unsharded run.

    .venv/bin/python benches/sharded.py [--steps 200] [--repeat 3] [--threads 1] [--worlds 2,4] [--json]

The model is benches/wide_mlp.dtl (301k parameters, AdamW, micro_batch 32
per replica, norm clipping); its PyTorch twin is benches/torch_ddp_train.py
(`--zero` wraps its AdamW in ZeroRedundancyOptimizer; FSDP2's
`fully_shard` shards the parameters too, which is ZeRO-3, not this). For
each world size, four runs, `--repeat` times in turn, from the same
weights and rows:

- dtl: `--set parallel.data=D` (plain data parallelism) and with
  `--set parallel.shard=optimizer`;
- torch: DDP with AdamW, and with ZeroRedundancyOptimizer.

Reported per run (the best repeat by steps/s): steps/s of the training
loop (timed inside the processes, rank 0), the optimizer state rank 0 holds
(measured from its tensors: dtl's summary.json `optimizer_state_bytes`,
PyTorch's optimizer state), the peak resident memory of the largest process
(dtl: wait4 over `dtl run` and the ranks it starts; PyTorch: the largest
rank's own), and the final loss (the same work: sharded and plain dtl agree
bit for bit, dtl and PyTorch to float rounding). With 2 cores, 4 ranks are
oversubscribed: compare ratios measured in the same run, not absolutes.
"""

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
from pathlib import Path

from bench_common import dtl_binary, thread_env
from ddp_throughput import MODEL, TORCH_SIDE, run, torch_result
from vs_pytorch import run_measured

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def dtl_run(dtl, world, shard, steps, init, out, env):
    cmd = [dtl, "run", MODEL, "--device", "cpu", "-q", "--out", out, "--overwrite", "--init", init,
           "--set", f"train.steps={steps}", "--set", f"parallel.data={world}"]
    if shard:
        cmd += ["--set", "parallel.shard=optimizer"]
    _, rss = run_measured([str(c) for c in cmd], env)
    summary = json.loads((Path(out) / "summary.json").read_text())
    assert summary["steps"] == steps and summary["world_size"] == world, summary
    return {"steps_per_second": summary["steps_per_second"],
            "optimizer_state_bytes": summary["optimizer_state_bytes"],
            "peak_rss_bytes": rss, "final_loss": summary["final_loss"]}


def torch_run(world, zero, steps, threads, init, env, notes):
    cmd = [sys.executable, TORCH_SIDE, "--world", world, "--steps", steps, "--threads", threads,
           "--init", init] + (["--zero"] if zero else [])
    result = torch_result(cmd, env, notes)
    assert result["steps"] == steps and result["world"] == world, result
    return {key: result[key] for key in
            ("steps_per_second", "optimizer_state_bytes", "peak_rss_bytes", "final_loss")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--worlds", default="2,4", help="world sizes, comma-separated")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    worlds = [int(w) for w in args.worlds.split(",")]
    if args.steps < 1 or args.repeat < 1 or args.threads < 1 or min(worlds) < 2:
        parser.error("--steps, --repeat and --threads must be at least 1, worlds at least 2")
    dtl = dtl_binary()
    if not dtl.exists():
        raise SystemExit(f"{dtl} is missing: build dtl (cargo build --release) or set DTL_BIN")
    print(f"dtl: {dtl}", file=sys.stderr)
    env = thread_env(args.threads)
    notes, rows = [], []
    with tempfile.TemporaryDirectory(prefix="dtl-sharded-bench-") as work:
        init = Path(work) / "init.safetensors"
        run([sys.executable, TORCH_SIDE, "--write-init", init], env)
        for world in worlds:
            runs = {("dtl", False): [], ("dtl", True): [], ("torch", False): [],
                    ("torch", True): []}
            for i in range(args.repeat):
                # Interleaved, so that all four see the same machine noise.
                for tool, shard in runs:
                    if tool == "dtl":
                        out = Path(work) / f"dtl{world}{shard}"
                        r = dtl_run(dtl, world, shard, args.steps, init, out, env)
                    else:
                        r = torch_run(world, shard, args.steps, args.threads, init, env, notes)
                    runs[(tool, shard)].append(r)
                print(f"world {world}, run {i + 1}/{args.repeat}: " + ", ".join(
                    f"{t}{' sharded' if s else ''} {r[-1]['steps_per_second']:.1f} steps/s"
                    for (t, s), r in runs.items()), file=sys.stderr)
            for (tool, shard), results in runs.items():
                best = max(results, key=lambda r: r["steps_per_second"])
                rows.append({"world": world, "tool": tool, "sharded": shard, **best})
    by = {(r["world"], r["tool"], r["sharded"]): r for r in rows}
    ratios = {
        world: {
            "dtl_over_torch_sharded_steps": by[(world, "dtl", True)]["steps_per_second"]
            / by[(world, "torch", True)]["steps_per_second"],
            "dtl_over_torch_sharded_rss": by[(world, "dtl", True)]["peak_rss_bytes"]
            / by[(world, "torch", True)]["peak_rss_bytes"],
            "dtl_sharded_over_plain_steps": by[(world, "dtl", True)]["steps_per_second"]
            / by[(world, "dtl", False)]["steps_per_second"],
            "dtl_sharded_over_plain_state": by[(world, "dtl", True)]["optimizer_state_bytes"]
            / by[(world, "dtl", False)]["optimizer_state_bytes"],
            "torch_sharded_over_plain_state": by[(world, "torch", True)]["optimizer_state_bytes"]
            / by[(world, "torch", False)]["optimizer_state_bytes"],
            "sharded_final_loss_difference":
            abs(by[(world, "dtl", True)]["final_loss"] - by[(world, "torch", True)]["final_loss"])
            / abs(by[(world, "torch", True)]["final_loss"]),
            "dtl_sharded_equals_plain":
            by[(world, "dtl", True)]["final_loss"] == by[(world, "dtl", False)]["final_loss"],
        }
        for world in worlds
    }
    report = {"dtl": str(dtl), "torch": importlib.metadata.version("torch"),
              "model": str(MODEL.relative_to(ROOT)), "threads_per_rank": args.threads,
              "cpus": os.cpu_count(), "steps": args.steps, "repeat": args.repeat,
              "results": rows, "ratios": ratios, "notes": notes}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"dtl: {report['dtl']}   torch {report['torch']}   {report['model']}   "
          f"{args.threads} thread(s) per rank, {report['cpus']} CPUs   {args.steps} steps, "
          f"best of {args.repeat}")
    print("{:>5} {:<6} {:<8} {:>9} {:>14} {:>13} {:>11}".format(
        "world", "tool", "sharded", "steps/s", "opt state KiB", "peak RSS MiB", "final loss"))
    for r in rows:
        print("{:>5} {:<6} {:<8} {:>9.1f} {:>14.1f} {:>13.1f} {:>11.6f}".format(
            r["world"], r["tool"], "yes" if r["sharded"] else "no", r["steps_per_second"],
            r["optimizer_state_bytes"] / 1024, r["peak_rss_bytes"] / MIB, r["final_loss"]))
    for world, q in ratios.items():
        print(f"world {world}: dtl/torch sharded {q['dtl_over_torch_sharded_steps']:.2f}x steps/s, "
              f"{q['dtl_over_torch_sharded_rss']:.2f}x peak RSS; dtl sharded/plain "
              f"{q['dtl_sharded_over_plain_steps']:.2f}x steps/s, "
              f"{q['dtl_sharded_over_plain_state']:.3f}x optimizer state (torch "
              f"{q['torch_sharded_over_plain_state']:.3f}x); final losses dtl/torch differ by "
              f"{q['sharded_final_loss_difference']:.1e}; dtl sharded == plain: "
              f"{q['dtl_sharded_equals_plain']}")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
