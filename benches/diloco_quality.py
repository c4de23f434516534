"""DiLoCo's quality at equal tokens, and its traffic across groups: the
character model (examples/moby_char_lm.dtl) on 4 replicas, every layout
reading the same rows in the same order for the same steps.

    .venv/bin/python benches/diloco_quality.py [--steps 320] [--json]

Layouts (`--set` on the file; `checkpoint_every` off, evaluation at the
end only):

- `every_step`: the 4 replicas average their gradients every step;
- `diloco(period: H)` with H = 8 and 32, in 2 and 4 groups (outer_lr 0.7,
  outer_momentum 0.9, AdamW inside, the paper's choices);
- `local_sgd(period: H)` over the same groups (parameters and AdamW's
  moments averaged every H steps);
- `async(1)` over the 4 replicas, each its own group (`async` across
  groups of several replicas is refused by dtl today), which refuses the
  file's norm clipping (a global norm needs a whole step's gradients):
  it clips each value at 1.0 instead, beside `every_step` clipped alike.

Reported for each: the held-out loss after the last step, and the bytes a
rank sent across groups in the run (DiLoCo and local SGD: summary.json's
`across_group_bytes`, as the run counted them; every_step: its gradient
all-reduce over the 4 replicas, which crosses every group, the plan's
`all_reduce_gradients` bytes × steps), with the factor against every_step.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import ROOT, dtl_binary, thread_env

MODEL = ROOT / "examples" / "moby_char_lm.dtl"


def layouts():
    clip = "train.clip=value(1.0)"
    out = [("every_step", []), ("every_step, clip value", [clip]),
           ("async(1), clip value", [clip, "parallel.sync=async(1)"])]
    for period in (8, 32):
        for groups in (2, 4):
            out.append((f"diloco H={period} G={groups}",
                        [f"parallel.groups={groups}",
                         f"parallel.sync=diloco(period: {period}, outer_lr: 0.7, "
                         "outer_momentum: 0.9)"]))
            out.append((f"local_sgd H={period} G={groups}",
                        [f"parallel.groups={groups}",
                         f"parallel.sync=local_sgd(period: {period})"]))
    return out


def run(dtl, sets, out, env):
    cmd = [str(dtl), "run", str(MODEL), "--device", "cpu", "-q", "--no-tensorboard",
           "--out", str(out), "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed:\n{done.stdout}{done.stderr}")
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_loss" in r]
    summary = json.loads((out / "summary.json").read_text())
    return evals[-1]["eval_loss"], summary


def every_step_bytes(dtl, sets, steps):
    cmd = [str(dtl), "compile", str(MODEL), "--format", "json"]
    for s in sets:
        cmd += ["--set", s]
    plan = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    op = next(o for o in plan["step_program"] if o["op"] == "all_reduce_gradients")
    return op["bytes_per_rank"] * steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", nargs="*", metavar="LAYOUT",
                        help="run these layouts only (and every_step, the base)")
    args = parser.parse_args()
    dtl = dtl_binary()
    env = thread_env(1)
    common = [f"train.steps={args.steps}", "train.eval_every=0", "train.checkpoint_every=0",
              "parallel.data=4"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dtl-diloco-bench-") as work:
        chosen = [(n, s) for n, s in layouts()
                  if not args.only or n == "every_step" or n in args.only]
        for i, (name, sets) in enumerate(chosen):
            loss, summary = run(dtl, common + sets, Path(work) / str(i), env)
            across = summary.get("across_group_bytes")
            if across is None:
                across = every_step_bytes(dtl, common + sets, args.steps)
            rows.append({"layout": name, "eval_loss": loss, "across_group_bytes": across,
                         "seconds": summary["seconds"]})
            print(f"  {name:<22} held-out loss {loss:.4f}  across groups "
                  f"{across / 2**20:8.2f} MiB  ({summary['seconds']:.1f} s)", file=sys.stderr)
    base = rows[0]
    for r in rows:
        r["loss_vs_every_step"] = r["eval_loss"] / base["eval_loss"]
        r["traffic_reduction"] = base["across_group_bytes"] / max(r["across_group_bytes"], 1)
    if args.json:
        print(json.dumps({"steps": args.steps, "replicas": 4, "rows": rows}, indent=1))
        return
    print(f"moby_char_lm, 4 replicas, {args.steps} steps, the same rows; async across groups "
          "of several replicas: refused (not done)")
    print(f"{'layout':<22} {'held-out loss':>13} {'vs sync':>8} {'across groups':>14} {'less':>7}")
    for r in rows:
        print(f"{r['layout']:<22} {r['eval_loss']:>13.4f} {r['loss_vs_every_step']:>8.3f} "
              f"{r['across_group_bytes'] / 2**20:>10.2f} MiB {r['traffic_reduction']:>6.0f}×")


if __name__ == "__main__":
    main()
