"""Tensor parallelism on CPU: `dtl run` with `tensor = T` against a
hand-written PyTorch program that splits the same model with
`parallelize_module` (ColwiseParallel, RowwiseParallel; gloo), at T = 2.

    .venv/bin/python benches/tensor_parallel.py [--steps 200] [--repeat 3] [--threads 1] [--tensor 2] [--json]

The model is benches/wide_mlp.dtl (301k parameters, AdamW, micro_batch 32,
norm clipping) with `--set parallel.data=1 --set parallel.tensor=T`: dtl
splits linear(64, 512) column-wise and linear(512, 512) row-wise and keeps
the last layer whole (`tensor_split = [replicate("4")]`: by default dtl
would split it by vocabulary too, its loss from the sharded scores, which
the PyTorch side does not); the PyTorch side (benches/torch_ddp_train.py
`--tensor`) splits the same two layers the same way. Both start from the
same weights and read the same rows; every rank of the group reads the
whole micro-batch. The runs alternate, `--repeat` times each, and the best
by steps/s counts.

Reported: steps/s of the training loop (rank 0, timed inside the
processes), the peak resident memory of the largest process, the final
loss (the same work: the two agree to float rounding), and the
collectives per step: dtl's all-reduces over the tensor group
(summary.json's `tensor_all_reduces` / steps), PyTorch's as CommDebugMode
counts them in one step. With 2 cores and T = 2, each rank has one core.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench_common import require_dtl, thread_env
from ddp_throughput import MODEL, TORCH_SIDE, run, torch_result
from vs_pytorch import run_measured


def dtl_run(dtl, tensor, steps, init, out, env):
    cmd = [dtl, "run", MODEL, "--device", "cpu", "-q", "--out", out, "--overwrite", "--init", init,
           "--set", f"train.steps={steps}", "--set", "parallel.data=1",
           "--set", f"parallel.tensor={tensor}",
           "--set", 'parallel.tensor_split=[replicate("4")]']
    _, rss = run_measured([str(c) for c in cmd], env)
    summary = json.loads((Path(out) / "summary.json").read_text())
    assert summary["steps"] == steps and summary["world_size"] == tensor, summary
    return {"steps_per_second": summary["steps_per_second"], "peak_rss_bytes": rss,
            "final_loss": summary["final_loss"],
            "collectives_per_step": summary["tensor_all_reduces"] / steps}


def torch_run(tensor, steps, threads, init, env, notes):
    cmd = [sys.executable, TORCH_SIDE, "--world", tensor, "--steps", steps, "--threads", threads,
           "--init", init, "--tensor"]
    result = torch_result(cmd, env, notes)
    assert result["steps"] == steps and result["world"] == tensor, result
    return {key: result[key] for key in
            ("steps_per_second", "peak_rss_bytes", "final_loss", "collectives_per_step")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--tensor", type=int, default=2, help="tensor-parallel ranks")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.steps < 1 or args.repeat < 1 or args.threads < 1 or args.tensor < 2:
        parser.error("--steps, --repeat and --threads must be at least 1, --tensor at least 2")
    dtl = require_dtl()
    env = thread_env(args.threads)
    notes, runs = [], {"dtl": [], "torch": []}
    with tempfile.TemporaryDirectory(prefix="dtl-tensor-bench-") as work:
        init = Path(work) / "init.safetensors"
        run([sys.executable, TORCH_SIDE, "--write-init", init], env)
        for i in range(args.repeat):
            runs["dtl"].append(dtl_run(dtl, args.tensor, args.steps, init,
                                       Path(work) / "dtl", env))
            runs["torch"].append(torch_run(args.tensor, args.steps, args.threads, init, env,
                                           notes))
            print(f"run {i + 1}/{args.repeat}: dtl {runs['dtl'][-1]['steps_per_second']:.1f}, "
                  f"torch {runs['torch'][-1]['steps_per_second']:.1f} steps/s", file=sys.stderr)
    best = {tool: max(results, key=lambda r: r["steps_per_second"])
            for tool, results in runs.items()}
    report = {
        "tensor": args.tensor, "steps": args.steps, "threads": args.threads, **best,
        "dtl_over_torch_steps": best["dtl"]["steps_per_second"]
        / best["torch"]["steps_per_second"],
        "dtl_over_torch_rss": best["dtl"]["peak_rss_bytes"] / best["torch"]["peak_rss_bytes"],
        "final_loss_difference": abs(best["dtl"]["final_loss"] - best["torch"]["final_loss"])
        / abs(best["torch"]["final_loss"]),
        "notes": notes,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"tensor = {args.tensor}, {args.steps} steps, {args.threads} thread(s) per rank")
    print(f"{'':8} {'steps/s':>9} {'peak RSS MiB':>13} {'final loss':>11} {'collectives/step':>17}")
    for tool in ("dtl", "torch"):
        r = best[tool]
        print(f"{tool:8} {r['steps_per_second']:9.1f} {r['peak_rss_bytes'] / 2**20:13.1f} "
              f"{r['final_loss']:11.6f} {r['collectives_per_step']!s:>17}")
    print(f"dtl / PyTorch: {report['dtl_over_torch_steps']:.2f}x the steps/s, "
          f"{report['dtl_over_torch_rss']:.2f}x the peak memory, final losses "
          f"{report['final_loss_difference']:.1e} apart (relative)")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
