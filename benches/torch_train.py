"""The PyTorch eager side of benches/vs_pytorch.py: trains a compiled dtl plan
with torch.nn and torch.optim, on CPU, and prints its training speed as JSON.

    python torch_train.py PLAN.json [--threads N]

The network, data loading, optimizer and schedule come from
tests/reference/torch_reference.py (the reference the tests compare dtl
against), so the two programs do the same work. Only the training loop is
timed, as dtl times its own: every optimizer step of the plan's step program,
each batch's selection included; data loading and model building are not.

Prints one line: {"steps", "train_seconds", "steps_per_second", "threads",
"first_loss", "final_loss"}.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reference"))

import torch  # noqa: E402

import torch_reference as ref  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan", help="a plan from `dtl compile --format json`")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with open(args.plan) as f:
        plan = json.load(f)
    train = plan["train"]
    model, params, optimizer, scheduler = ref.build(plan)
    x_train, y_train = ref.training_split(plan)
    batches = ref.Batches(x_train, y_train, train["micro_batch"], plan["data"]["shuffle"],
                          train["seed"])
    model.train()

    losses = []
    started = time.perf_counter()
    for step in range(1, train["steps"] + 1):
        losses.append(ref.run_step(plan, step, model, params, optimizer, scheduler, batches))
    seconds = time.perf_counter() - started

    print(json.dumps({
        "steps": train["steps"],
        "train_seconds": seconds,
        "steps_per_second": train["steps"] / seconds,
        "threads": torch.get_num_threads(),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
    }))


if __name__ == "__main__":
    main()
