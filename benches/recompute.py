"""Activation recomputation on CPU: `dtl run` with `recompute = none` and
`blocks` against the same network in PyTorch without and with
`torch.utils.checkpoint` around each block, one process each.

    .venv/bin/python benches/recompute.py [--steps 6] [--repeat 2] [--threads 2] [--rows 2048] [--json]

The network is eight pre-norm residual blocks (width 256, hidden 1024,
GELU) between a first and a last linear layer, SGD, `--rows` rows a step
(tests/sharded.rs measures the same at 2048 rows): activations, not
weights, dominate its memory. The PyTorch twin is written here (the same
layers, `checkpoint(block, x, use_reentrant=False)` per block for
recompute). Its rows are random tensors of the same shape, since dtl's
synthetic rows come from dtl's own generator; the runs are the same work,
not the same numbers, so losses are not compared.

Reported per run (the best repeat by steps/s): steps/s of the training loop
(timed inside each process: dtl's summary.json, the twin's own timer) and
the peak resident memory of the process (wait4; both run with
MALLOC_MMAP_THRESHOLD_=131072, so that large tensors are returned to the
system when freed and the peak follows the memory in use), then per tool what
recompute costs in speed and saves in peak memory, and dtl's figures as
ratios to PyTorch's for each mode.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench_common import dtl_binary, thread_env
from vs_pytorch import run_measured

MIB = 1024 * 1024

DTL_MODEL = """
module Residual(d: int, hidden: int) {{
  norm = layer_norm(d)
  forward(x: [B, d]) -> [B, d] {{
    x + (x |> norm |> linear(d, hidden) |> gelu |> linear(hidden, d))
  }}
}}
model Deep {{
  forward(x: [B, 64]) -> [B, 4] {{
    x |> linear(64, 256) |> repeat 8 {{ Residual(256, 1024) }} |> linear(256, 4)
  }}
}}
data blobs {{ source = synthetic(rows: {rows_total}, features: 64, classes: 4, seed: 7); valid = 0.1 }}
train {{ model = Deep; data = blobs; loss = cross_entropy; optimizer = sgd(lr: 0.01); micro_batch = {rows}; steps = {steps}; clip = norm(1.0) }}
"""

TWIN = r'''
import sys, time, torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
rows, steps, threads, recompute = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "blocks"
torch.set_num_threads(threads)
torch.manual_seed(0)
class Residual(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.inner = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
    def forward(self, x):
        return x + self.inner(self.norm(x))
first, blocks, last = nn.Linear(64, 256), nn.ModuleList([Residual(256, 1024) for _ in range(8)]), nn.Linear(256, 4)
params = list(first.parameters()) + list(blocks.parameters()) + list(last.parameters())
opt = torch.optim.SGD(params, lr=0.01)
x, y = torch.randn(rows, 64), torch.randint(0, 4, (rows,))
def step():
    h = first(x)
    for b in blocks:
        h = checkpoint(b, h, use_reentrant=False) if recompute else b(h)
    loss = F.cross_entropy(last(h), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item()
step()  # warm-up, as dtl's first step is in its timer: time the rest
start = time.perf_counter()
for _ in range(steps - 1):
    step()
print((steps - 1) / (time.perf_counter() - start))
'''


def dtl_run(dtl, model, mode, out, env):
    cmd = [str(dtl), "run", str(model), "--device", "cpu", "-q", "--no-tensorboard", "--out",
           str(out), "--overwrite", "--set", f"train.recompute={mode}"]
    _, rss = run_measured(cmd, env)
    summary = json.loads((Path(out) / "summary.json").read_text())
    return {"steps_per_second": summary["steps_per_second"], "peak_rss_bytes": rss}


def torch_run(twin, rows, steps, threads, mode, env):
    cmd = [sys.executable, str(twin), str(rows), str(steps), str(threads), mode]
    stdout, rss = run_measured(cmd, env)
    return {"steps_per_second": float(stdout.strip().splitlines()[-1]), "peak_rss_bytes": rss}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    env = thread_env(args.threads)
    # Tensors over 128 KiB mapped and unmapped one by one: glibc otherwise
    # raises its threshold as they are freed and keeps the heap they
    # leave, and the peak RSS then follows the allocator's history more
    # than the memory in use (the same for both tools).
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    dtl = dtl_binary()
    best = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        model = work / "deep.dtl"
        model.write_text(DTL_MODEL.format(rows=args.rows, rows_total=args.rows * 4,
                                          steps=args.steps))
        twin = work / "twin.py"
        twin.write_text(TWIN)
        for _ in range(args.repeat):
            for mode in ["none", "blocks"]:
                runs = {
                    ("dtl", mode): dtl_run(dtl, model, mode, work / f"out-{mode}", env),
                    ("torch", mode): torch_run(twin, args.rows, args.steps, args.threads, mode, env),
                }
                for key, run in runs.items():
                    if key not in best or run["steps_per_second"] > best[key]["steps_per_second"]:
                        best[key] = run
    rows = []
    for tool in ["dtl", "torch"]:
        kept, recomputed = best[(tool, "none")], best[(tool, "blocks")]
        rows.append({
            "tool": tool,
            "steps_per_second_none": kept["steps_per_second"],
            "steps_per_second_blocks": recomputed["steps_per_second"],
            "speed_kept_by_recompute": recomputed["steps_per_second"] / kept["steps_per_second"],
            "peak_rss_mib_none": kept["peak_rss_bytes"] / MIB,
            "peak_rss_mib_blocks": recomputed["peak_rss_bytes"] / MIB,
            "peak_saved_mib": (kept["peak_rss_bytes"] - recomputed["peak_rss_bytes"]) / MIB,
        })
    ratios = {mode: {
        "speed": best[("dtl", mode)]["steps_per_second"] / best[("torch", mode)]["steps_per_second"],
        "peak_rss": best[("dtl", mode)]["peak_rss_bytes"] / best[("torch", mode)]["peak_rss_bytes"],
    } for mode in ["none", "blocks"]}
    if args.json:
        print(json.dumps({"runs": rows, "dtl_over_torch": ratios}, indent=2))
        return
    print(f"{'tool':6} {'steps/s none':>13} {'steps/s blocks':>15} {'speed kept':>11} "
          f"{'peak MiB none':>14} {'peak MiB blocks':>16} {'saved MiB':>10}")
    for r in rows:
        print(f"{r['tool']:6} {r['steps_per_second_none']:13.2f} {r['steps_per_second_blocks']:15.2f} "
              f"{r['speed_kept_by_recompute']:11.2f} {r['peak_rss_mib_none']:14.0f} "
              f"{r['peak_rss_mib_blocks']:16.0f} {r['peak_saved_mib']:10.0f}")
    for mode, r in ratios.items():
        print(f"dtl / torch, recompute = {mode}: steps/s {r['speed']:.2f}x, peak RSS {r['peak_rss']:.2f}x")


if __name__ == "__main__":
    main()
