"""Sharded data parallelism on CPU: `dtl run` with `shard = optimizer`
(ZeRO-1) and `shard = gradients` (ZeRO-2) against PyTorch's
ZeroRedundancyOptimizer under DDP (gloo), and `shard = parameters` (ZeRO-3)
against FSDP2's `fully_shard` (gloo), at 2 and 4 ranks, and each against
its own unsharded run.

    .venv/bin/python benches/sharded.py [--steps 200] [--repeat 3] [--threads 1] [--worlds 2,4] [--json]

The model is benches/wide_mlp.dtl (301k parameters, AdamW, micro_batch 32
per replica, norm clipping); its PyTorch twin is benches/torch_ddp_train.py
(`--zero` wraps its AdamW in ZeroRedundancyOptimizer; `--fsdp` shards the
model with FSDP2's `fully_shard` instead of DDP). For each world size,
seven runs, `--repeat` times in turn, from the same weights and rows:

- dtl: `--set parallel.data=D` (plain data parallelism), with
  `--set parallel.shard=optimizer`, `gradients` and `parameters`;
- torch: DDP with AdamW, DDP with ZeroRedundancyOptimizer, and FSDP2.

The model has no blocks, so dtl's ZeRO-3 makes one unit of it, gathered
for forward and again for backward: FSDP2's `fully_shard` on the root
module does the same.

Reported per run (the best repeat by steps/s): steps/s of the training
loop (timed inside the processes, rank 0), the optimizer state rank 0 holds
(measured from its tensors: dtl's summary.json `optimizer_state_bytes`,
PyTorch's optimizer state), the peak resident memory of the largest process
(dtl: wait4 over `dtl run` and the ranks it starts; PyTorch: the largest
rank's own), and the final loss (the same work: sharded and plain dtl agree
bit for bit, dtl and PyTorch to float rounding). With 2 cores, 4 ranks are
oversubscribed: compare ratios measured in the same run, not absolutes.

Memory (`--memory-width`, default 4096; 0 skips it): benches/pipe_mlp.dtl
widened so that weights, gradients and AdamW's moments (hundreds of MiB)
dominate libtorch's fixed cost, run for 2 steps at data 1, 2 and 4 with
each shard mode, every rank's peak RSS taken by pipeline.py's mpirun
wrapper, and again at width 16 for the fixed cost of the same ranks;
(RSS − fixed) / explain's estimate per rank says whether the estimate
holds.
"""

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
from pathlib import Path

import pipeline
from bench_common import require_dtl, thread_env
from ddp_throughput import MODEL, TORCH_SIDE, run, torch_result
from vs_pytorch import run_measured

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def dtl_run(dtl, world, shard, steps, init, out, env):
    cmd = [dtl, "run", MODEL, "--device", "cpu", "-q", "--out", out, "--overwrite", "--init", init,
           "--set", f"train.steps={steps}", "--set", f"parallel.data={world}"]
    if shard:
        cmd += ["--set", f"parallel.shard={shard}"]
    _, rss = run_measured([str(c) for c in cmd], env)
    summary = json.loads((Path(out) / "summary.json").read_text())
    assert summary["steps"] == steps and summary["world_size"] == world, summary
    return {"steps_per_second": summary["steps_per_second"],
            "optimizer_state_bytes": summary["optimizer_state_bytes"],
            "peak_rss_bytes": rss, "final_loss": summary["final_loss"]}


def torch_run(world, shard, steps, threads, init, env, notes):
    flag = {"optimizer": ["--zero"], "parameters": ["--fsdp"]}.get(shard, [])
    cmd = [sys.executable, TORCH_SIDE, "--world", world, "--steps", steps, "--threads", threads,
           "--init", init] + flag
    result = torch_result(cmd, env, notes)
    assert result["steps"] == steps and result["world"] == world, result
    return {key: result[key] for key in
            ("steps_per_second", "optimizer_state_bytes", "peak_rss_bytes", "final_loss")}


# (data, shard) of the memory runs.
MEMORY_LAYOUTS = [(1, "none"), (2, "none"), (2, "optimizer"), (2, "gradients"), (4, "none"),
                  (4, "optimizer"), (4, "gradients")]


def memory(dtl, width, threads, work, timeout):
    """Each rank's peak RSS at `width` and at pipeline.FIXED_WIDTH against
    explain's estimate, per layout of MEMORY_LAYOUTS."""
    big, small = pipeline.widened(work, width), pipeline.widened(work, pipeline.FIXED_WIDTH)
    source = [f'data.digits.source=csv("{ROOT / "data" / "digits.csv.gz"}", label: -1)']
    env = pipeline.rank_env(threads)
    rows = []
    for data, shard in MEMORY_LAYOUTS:
        sets = ["parallel.pipeline=1", "parallel.micro_batches=1", "parallel.split=auto",
                f"parallel.data={data}", f"parallel.shard={shard}"]
        # pipeline.py counts a layout's ranks in `stages`.
        layout = pipeline.Layout(f"d{data}-{shard}", f"data {data}, shard {shard}", data, None,
                                 sets)
        peaks = pipeline.rank_peaks(dtl, big, layout, source, env, work, timeout)
        fixed = pipeline.rank_peaks(dtl, small, layout, source, env, work, timeout)
        explained = pipeline.dtl_json(dtl, "explain", big, layout, source, env, timeout)
        m = explained["memory"]
        for rank in range(data):
            rows.append({
                "data": data, "shard": shard, "rank": rank, "estimate_bytes": m["total"],
                "optimizer_state_estimate_bytes": m["optimizer_state"],
                "gathered_bytes": m.get("gathered", 0),
                "rss_bytes": peaks[rank] * 1024, "fixed_bytes": fixed[rank] * 1024,
            })
        print(f"memory: {layout.label} done", file=sys.stderr)
    for r in rows:
        r["model_over_estimate"] = (r["rss_bytes"] - r["fixed_bytes"]) / r["estimate_bytes"]
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--worlds", default="2,4", help="world sizes, comma-separated")
    parser.add_argument("--memory-width", type=int, default=4096,
                        help="hidden width of the memory runs (0: no memory runs)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds any one memory-run command may take")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    worlds = [int(w) for w in args.worlds.split(",") if w.strip()]
    if args.steps < 1 or args.repeat < 1 or args.threads < 1 or min(worlds, default=2) < 2:
        parser.error("--steps, --repeat and --threads must be at least 1, worlds at least 2")
    dtl = require_dtl()
    env = thread_env(args.threads)
    notes, rows = [], []
    with tempfile.TemporaryDirectory(prefix="dtl-sharded-bench-") as work:
        init = Path(work) / "init.safetensors"
        run([sys.executable, TORCH_SIDE, "--write-init", init], env)
        for world in worlds:
            runs = {("dtl", None): [], ("dtl", "optimizer"): [], ("dtl", "gradients"): [],
                    ("dtl", "parameters"): [], ("torch", None): [], ("torch", "optimizer"): [],
                    ("torch", "parameters"): []}
            for i in range(args.repeat):
                # Interleaved, so that all seven see the same machine noise.
                for tool, shard in runs:
                    if tool == "dtl":
                        out = Path(work) / f"dtl{world}{shard}"
                        r = dtl_run(dtl, world, shard, args.steps, init, out, env)
                    else:
                        r = torch_run(world, shard, args.steps, args.threads, init, env, notes)
                    runs[(tool, shard)].append(r)
                print(f"world {world}, run {i + 1}/{args.repeat}: " + ", ".join(
                    f"{t} {s or 'plain'} {r[-1]['steps_per_second']:.1f} steps/s"
                    for (t, s), r in runs.items()), file=sys.stderr)
            for (tool, shard), results in runs.items():
                best = max(results, key=lambda r: r["steps_per_second"])
                rows.append({"world": world, "tool": tool, "shard": shard or "none", **best})
        mem = memory(dtl, args.memory_width, args.threads, work, args.timeout) \
            if args.memory_width else []
    by = {(r["world"], r["tool"], r["shard"]): r for r in rows}

    def ratio(world, key, a, b):
        return by[(world, *a)][key] / by[(world, *b)][key]

    zero = ("torch", "optimizer")
    fsdp = ("torch", "parameters")

    def loss_difference(world, a, b):
        return abs(by[(world, *a)]["final_loss"] - by[(world, *b)]["final_loss"]) \
            / abs(by[(world, *b)]["final_loss"])

    ratios = {
        world: {
            "dtl_zero3_over_torch_fsdp2_steps": ratio(world, "steps_per_second",
                                                      ("dtl", "parameters"), fsdp),
            "dtl_zero3_over_torch_fsdp2_rss": ratio(world, "peak_rss_bytes",
                                                    ("dtl", "parameters"), fsdp),
            "dtl_zero3_over_plain_steps": ratio(world, "steps_per_second", ("dtl", "parameters"),
                                                ("dtl", "none")),
            "zero3_final_loss_difference": loss_difference(world, ("dtl", "parameters"), fsdp),
            "dtl_zero3_loss_difference": loss_difference(world, ("dtl", "parameters"),
                                                         ("dtl", "none")),
            "dtl_zero1_over_torch_zero1_steps": ratio(world, "steps_per_second",
                                                      ("dtl", "optimizer"), zero),
            "dtl_zero2_over_torch_zero1_steps": ratio(world, "steps_per_second",
                                                      ("dtl", "gradients"), zero),
            "dtl_zero1_over_torch_zero1_rss": ratio(world, "peak_rss_bytes",
                                                    ("dtl", "optimizer"), zero),
            "dtl_zero1_over_plain_steps": ratio(world, "steps_per_second", ("dtl", "optimizer"),
                                                ("dtl", "none")),
            "dtl_zero2_over_plain_steps": ratio(world, "steps_per_second", ("dtl", "gradients"),
                                                ("dtl", "none")),
            "dtl_zero1_over_plain_state": ratio(world, "optimizer_state_bytes",
                                                ("dtl", "optimizer"), ("dtl", "none")),
            "torch_zero1_over_plain_state": ratio(world, "optimizer_state_bytes", zero,
                                                  ("torch", "none")),
            "zero1_final_loss_difference":
            abs(by[(world, "dtl", "optimizer")]["final_loss"] - by[(world, *zero)]["final_loss"])
            / abs(by[(world, *zero)]["final_loss"]),
            "dtl_zero1_equals_plain": by[(world, "dtl", "optimizer")]["final_loss"]
            == by[(world, "dtl", "none")]["final_loss"],
            "dtl_zero2_loss_difference":
            abs(by[(world, "dtl", "gradients")]["final_loss"]
                - by[(world, "dtl", "none")]["final_loss"])
            / abs(by[(world, "dtl", "none")]["final_loss"]),
        }
        for world in worlds
    }
    report = {"dtl": str(dtl), "torch": importlib.metadata.version("torch"),
              "model": str(MODEL.relative_to(ROOT)), "threads_per_rank": args.threads,
              "cpus": os.cpu_count(), "steps": args.steps, "repeat": args.repeat,
              "results": rows, "ratios": ratios, "memory_width": args.memory_width,
              "memory": mem, "notes": notes}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"dtl: {report['dtl']}   torch {report['torch']}   {report['model']}   "
          f"{args.threads} thread(s) per rank, {report['cpus']} CPUs   {args.steps} steps, "
          f"best of {args.repeat}")
    print("{:>5} {:<6} {:<10} {:>9} {:>14} {:>13} {:>11}".format(
        "world", "tool", "shard", "steps/s", "opt state KiB", "peak RSS MiB", "final loss"))
    for r in rows:
        torch_names = {"optimizer": "ZeRO-1", "parameters": "FSDP2"}
        shard = torch_names.get(r["shard"], r["shard"]) if r["tool"] == "torch" else r["shard"]
        print("{:>5} {:<6} {:<10} {:>9.1f} {:>14.1f} {:>13.1f} {:>11.6f}".format(
            r["world"], r["tool"], shard, r["steps_per_second"],
            r["optimizer_state_bytes"] / 1024, r["peak_rss_bytes"] / MIB, r["final_loss"]))
    for world, q in ratios.items():
        print(f"world {world}: dtl over torch ZeRO-1: {q['dtl_zero1_over_torch_zero1_steps']:.2f}x "
              f"steps/s (ZeRO-2 {q['dtl_zero2_over_torch_zero1_steps']:.2f}x), "
              f"{q['dtl_zero1_over_torch_zero1_rss']:.2f}x peak RSS; dtl over plain dtl: "
              f"ZeRO-1 {q['dtl_zero1_over_plain_steps']:.2f}x, ZeRO-2 "
              f"{q['dtl_zero2_over_plain_steps']:.2f}x steps/s, optimizer state "
              f"{q['dtl_zero1_over_plain_state']:.3f}x (torch "
              f"{q['torch_zero1_over_plain_state']:.3f}x); final losses dtl/torch ZeRO-1 differ "
              f"by {q['zero1_final_loss_difference']:.1e}; dtl ZeRO-1 == plain: "
              f"{q['dtl_zero1_equals_plain']}; dtl ZeRO-2 vs plain "
              f"{q['dtl_zero2_loss_difference']:.1e}")
    for world, q in ratios.items():
        print(f"world {world}: dtl ZeRO-3 over torch FSDP2: "
              f"{q['dtl_zero3_over_torch_fsdp2_steps']:.2f}x steps/s, "
              f"{q['dtl_zero3_over_torch_fsdp2_rss']:.2f}x peak RSS; over plain dtl "
              f"{q['dtl_zero3_over_plain_steps']:.2f}x steps/s; final losses dtl/torch differ by "
              f"{q['zero3_final_loss_difference']:.1e}, dtl ZeRO-3 vs plain "
              f"{q['dtl_zero3_loss_difference']:.1e}")
    if mem:
        print(f"memory at width {args.memory_width}, {pipeline.MEMORY_STEPS} steps (MiB; "
              "estimate: dtl explain's total per rank; fixed: the same ranks at width "
              f"{pipeline.FIXED_WIDTH})")
        print("{:>4} {:<10} {:>4} {:>9} {:>9} {:>8} {:>9} {:>16}".format(
            "data", "shard", "rank", "estimate", "RSS", "fixed", "RSS-fixed", "(RSS-fixed)/est"))
        for r in mem:
            print("{:>4} {:<10} {:>4} {:>9.1f} {:>9.1f} {:>8.1f} {:>9.1f} {:>16.2f}".format(
                r["data"], r["shard"], r["rank"], r["estimate_bytes"] / MIB,
                r["rss_bytes"] / MIB, r["fixed_bytes"] / MIB,
                (r["rss_bytes"] - r["fixed_bytes"]) / MIB, r["model_over_estimate"]))
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
