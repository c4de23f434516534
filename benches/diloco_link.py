"""Wall time of synchronous training against DiLoCo over a slow link
between two sites, emulated on one machine with `dtl run --link`: the
character model (examples/moby_char_lm.dtl) on 4 replicas, 2 per site.

    .venv/bin/python benches/diloco_link.py [--steps 64] [--link '100 Mbit/s, 10 ms'] [--json]

Layouts (each the same rows for the same steps):

- `every_step`, without the link (the machine's own speed), and with it
  between replicas 0, 1 and 2, 3 (`--link 'sites=2: …'`): the gradient
  all-reduce over the 4 replicas crosses it every step;
- `diloco(period: 8)` in 2 groups, one per site (`--link 'groups: …'`):
  the groups average inside every step, and cross the link once every 8
  steps;
- streaming DiLoCo, `fragments: 2, delay: 1, outer_precision: bf16`: half
  the bytes, one fragment at a time, each overlapping an inner step;
- `local_sgd(period: 8)` in the same 2 groups (parameters and AdamW's
  moments cross).

Reported: the training seconds per step (summary.json's `train_seconds` over the
steps), and each against every_step over the link. The link holds each
collective that crosses it until the ring formula's time has passed (2(n −
1) latencies and 2(n − 1)/n of the bytes at the bandwidth); a background
all-reduce is ready no earlier. The compute is this machine's: on 2 cores
4 ranks share them, so the step without the link is slow too.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import ROOT, dtl_binary, thread_env

MODEL = ROOT / "examples" / "moby_char_lm.dtl"
DILOCO = "diloco(period: 8, outer_lr: 0.7, outer_momentum: 0.9"


def layouts(link):
    """(name, --set values, --link or None)."""
    return [
        ("every_step, no link", [], None),
        ("every_step", [], f"sites=2: {link}"),
        ("diloco H=8", ["parallel.groups=2", f"parallel.sync={DILOCO})"], f"groups: {link}"),
        ("streaming F=2 τ=1 bf16",
         ["parallel.groups=2",
          f"parallel.sync={DILOCO}, fragments: 2, delay: 1, outer_precision: bf16)"],
         f"groups: {link}"),
        ("local_sgd H=8", ["parallel.groups=2", "parallel.sync=local_sgd(period: 8)"],
         f"groups: {link}"),
    ]


def run(dtl, sets, link, out, env):
    cmd = [str(dtl), "run", str(MODEL), "--device", "cpu", "-q", "--no-tensorboard",
           "--out", str(out), "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    if link is not None:
        cmd += ["--link", link]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed:\n{done.stdout}{done.stderr}")
    return json.loads((out / "summary.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--link", default="100 Mbit/s, 10 ms",
                        help="the link's bandwidth and latency")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    dtl = dtl_binary()
    env = thread_env(1)
    common = [f"train.steps={args.steps}", "train.eval_every=0", "train.checkpoint_every=0",
              "parallel.data=4"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dtl-link-bench-") as work:
        for i, (name, sets, link) in enumerate(layouts(args.link)):
            summary = run(dtl, common + sets, link, Path(work) / str(i), env)
            per_step = summary["train_seconds"] / args.steps
            rows.append({"layout": name, "link": link, "seconds_per_step": per_step,
                         "across_group_bytes": summary.get("across_group_bytes")})
            print(f"  {name:<24} {per_step * 1e3:8.1f} ms a step", file=sys.stderr)
    base = next(r for r in rows if r["layout"] == "every_step")
    for r in rows:
        r["vs_every_step"] = base["seconds_per_step"] / r["seconds_per_step"]
    if args.json:
        print(json.dumps({"steps": args.steps, "link": args.link, "rows": rows}, indent=1))
        return
    print(f"moby_char_lm, 4 replicas at 2 sites, {args.steps} steps, link {args.link}")
    print(f"{'layout':<24} {'ms a step':>10} {'faster than every_step':>23}")
    for r in rows:
        print(f"{r['layout']:<24} {r['seconds_per_step'] * 1e3:>10.1f} {r['vs_every_step']:>22.2f}×")


if __name__ == "__main__":
    main()
