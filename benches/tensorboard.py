"""What TensorBoard logging costs a training step (issue 21's goal: under 1%).

Trains examples/digits_mlp.dtl (the fastest step of the examples, so the
worst case for a per-step cost) with and without `--no-tensorboard`,
alternating, best of N each, and prints:

- the writer's own time (`tensorboard_seconds` in summary.json: encoding,
  CRCs, buffered writes, memory sampling) as a share of the training time,
  the figure the goal is about, measured in the same process;
- the whole run's wall time per step with and without, a noisier check of
  the same (it includes start-up and evaluation).

    .venv/bin/python benches/tensorboard.py [--steps 2000] [--repeat 5] [--json]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import ROOT, dtl_binary, thread_env


def run(binary, steps, board, folder):
    out = Path(folder) / ("board" if board else "plain")
    args = [str(binary), "run", str(ROOT / "examples" / "digits_mlp.dtl"), "--quiet",
            "--device", "cpu", "--out", str(out), "--overwrite",
            "--set", f"train.steps={steps}"]
    if not board:
        args.append("--no-tensorboard")
    out.mkdir(exist_ok=True)
    subprocess.run(args, check=True, env=thread_env(1), stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    binary = dtl_binary()
    print(f"# dtl binary: {binary}", file=sys.stderr)
    best = {True: None, False: None}
    share = None
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeat):
            for board in (True, False):
                s = run(binary, args.steps, board, folder)
                per_step = s["seconds"] / s["steps"]
                if best[board] is None or per_step < best[board]:
                    best[board] = per_step
                if board:
                    mine = s["tensorboard_seconds"] / s["train_seconds"]
                    share = mine if share is None else min(share, mine)
    result = {
        "steps": args.steps,
        "writer_share_of_training": share,
        "wall_per_step_with": best[True],
        "wall_per_step_without": best[False],
        "wall_ratio": best[True] / best[False],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"TensorBoard writer: {100 * share:.3f}% of the training time "
          f"(digits_mlp, {args.steps} steps, best of {args.repeat})")
    print(f"wall time per step: {1e3 * best[True]:.4f} ms with, {1e3 * best[False]:.4f} ms without "
          f"(ratio {result['wall_ratio']:.4f})")


if __name__ == "__main__":
    main()
