"""Sequence parallelism on CPU: `dtl run` with `tensor = T; sequence = true`
against a hand-written PyTorch program that splits the same model with
`parallelize_module` (ColwiseParallel, RowwiseParallel, SequenceParallel,
`loss_parallel`; gloo), and both without `sequence` (plain tensor
parallelism), at T = 2.

    .venv/bin/python benches/sequence_parallel.py [--steps 20] [--micro-batch 4] [--repeat 2] [--threads 1] [--json]

The model is examples/gpu/gpt_char.dtl (19.1 M parameters: 6 pre-norm
blocks of width 512, 8 heads, a context of 256 characters, AdamW, norm
clipping) with `--set parallel.tensor=2 --set parallel.sequence=true|false`
and a smaller micro-batch (the file's 32 rows of 256 characters take
seconds a step on this CPU); its PyTorch side is
benches/torch_sequence_parallel.py (`--no-sequence` for plain tensor
parallelism), built on benches/gpt_char_torch.py, the file's
single-process twin. Both start from the same weights (the twin's seeded
initialisers) and read the same rows in the same order (dtl's); every
rank of the tensor group reads the whole micro-batch. The runs alternate,
`--repeat` times each, and the best by steps/s counts.

Reported for each tool and mode: steps/s of the training loop (rank 0,
timed inside the processes), the peak resident memory of the largest
process, the losses (the largest relative difference of any step's
between the tools: the same work, float rounding apart) and the
collectives per step: dtl's issued over the tensor group
(summary.json's `tensor_all_reduces`, `tensor_all_gathers` and
`tensor_reduce_scatters` over the steps), PyTorch's as CommDebugMode
counts them in one step.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench_common import ROOT, require_dtl, thread_env
from ddp_throughput import run, torch_result
from vs_pytorch import run_measured

MODEL = ROOT / "examples" / "gpu" / "gpt_char.dtl"
TWIN = ROOT / "benches" / "gpt_char_torch.py"
TORCH_SIDE = ROOT / "benches" / "torch_sequence_parallel.py"
COLLECTIVES = ("tensor_all_reduces", "tensor_all_gathers", "tensor_reduce_scatters")


def dtl_run(dtl, args, sequence, init, out, env):
    sets = [f"train.steps={args.steps}", f"train.micro_batch={args.micro_batch}",
            "parallel.data=1", f"parallel.tensor={args.tensor}",
            f"parallel.sequence={'true' if sequence else 'false'}"]
    cmd = [dtl, "run", MODEL, "--device", "cpu", "-q", "--out", out, "--overwrite",
           "--init", init, "--no-tensorboard", *[a for s in sets for a in ("--set", s)]]
    _, rss = run_measured([str(c) for c in cmd], env)
    summary = json.loads((Path(out) / "summary.json").read_text())
    assert summary["steps"] == args.steps and summary["world_size"] == args.tensor, summary
    losses = [json.loads(line)["loss"]
              for line in (Path(out) / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line and '"eval' not in line]
    counts = {name: summary.get(name, 0) / args.steps for name in COLLECTIVES}
    return {"steps_per_second": summary["steps_per_second"], "peak_rss_bytes": rss,
            "losses": losses[:args.steps], "collective_counts": counts,
            "collectives_per_step": sum(counts.values())}


def torch_run(args, sequence, init, env, notes):
    cmd = [sys.executable, TORCH_SIDE, "--world", args.tensor, "--steps", args.steps,
           "--threads", args.threads, "--micro-batch", args.micro_batch, "--init", init]
    if not sequence:
        cmd.append("--no-sequence")
    result = torch_result(cmd, env, notes)
    assert result["steps"] == args.steps and result["world"] == args.tensor, result
    return {key: result[key] for key in ("steps_per_second", "peak_rss_bytes", "losses",
                                         "collective_counts", "collectives_per_step")}


def loss_difference(a, b):
    """The largest relative difference of two runs' step losses."""
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    parser.add_argument("--micro-batch", type=int, default=4, help="rows of 256 characters")
    parser.add_argument("--repeat", type=int, default=2, help="runs per side; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--tensor", type=int, default=2, help="tensor-parallel ranks")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if min(args.steps, args.micro_batch, args.repeat, args.threads) < 1 or args.tensor < 2:
        parser.error("--steps, --micro-batch, --repeat and --threads must be at least 1, "
                     "--tensor at least 2")
    dtl = require_dtl()
    env = thread_env(args.threads)
    notes = []
    modes = {"sequence": True, "tensor only": False}
    runs = {(mode, tool): [] for mode in modes for tool in ("dtl", "torch")}
    with tempfile.TemporaryDirectory(prefix="dtl-sequence-bench-") as work:
        init = Path(work) / "init.safetensors"
        run([sys.executable, TWIN, "--write-init", init], env)
        for i in range(args.repeat):
            for mode, sequence in modes.items():
                runs[(mode, "dtl")].append(
                    dtl_run(dtl, args, sequence, init, Path(work) / "dtl", env))
                runs[(mode, "torch")].append(torch_run(args, sequence, init, env, notes))
                print(f"run {i + 1}/{args.repeat}, {mode}: dtl "
                      f"{runs[(mode, 'dtl')][-1]['steps_per_second']:.3f}, torch "
                      f"{runs[(mode, 'torch')][-1]['steps_per_second']:.3f} steps/s",
                      file=sys.stderr)
    best = {key: max(results, key=lambda r: r["steps_per_second"])
            for key, results in runs.items()}
    report = {"tensor": args.tensor, "steps": args.steps, "micro_batch": args.micro_batch,
              "threads": args.threads, "notes": notes, "modes": {}}
    for mode in modes:
        d, t = best[(mode, "dtl")], best[(mode, "torch")]
        report["modes"][mode] = {
            "dtl": d, "torch": t,
            "dtl_over_torch_steps": d["steps_per_second"] / t["steps_per_second"],
            "dtl_over_torch_rss": d["peak_rss_bytes"] / t["peak_rss_bytes"],
            "loss_difference": loss_difference(d["losses"], t["losses"]),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"tensor = {args.tensor}, {args.steps} steps of {args.micro_batch} rows, "
          f"{args.threads} thread(s) per rank")
    print(f"{'':22} {'steps/s':>8} {'peak RSS MiB':>13} {'final loss':>11} "
          f"{'collectives/step':>17}")
    for mode in modes:
        for tool in ("dtl", "torch"):
            r = best[(mode, tool)]
            print(f"{tool + ', ' + mode:22} {r['steps_per_second']:8.3f} "
                  f"{r['peak_rss_bytes'] / 2**20:13.1f} {r['losses'][-1]:11.6f} "
                  f"{r['collectives_per_step']:17.1f}")
    for mode, m in report["modes"].items():
        print(f"{mode}: dtl / PyTorch {m['dtl_over_torch_steps']:.2f}x the steps/s, "
              f"{m['dtl_over_torch_rss']:.2f}x the peak memory, step losses "
              f"{m['loss_difference']:.1e} apart at most (relative)")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
