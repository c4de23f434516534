"""A named `repeat` against the PyTorch module it stands for, step by step.

    python tests/reference/named_repeat.py DTL_BINARY WORKDIR [--steps N]

`h = repeat 3 { Hidden(32) }` applied as `x |> inp |> h |> out` is, in
PyTorch, an attribute `self.h = nn.Sequential(Hidden(32), ...)`: its
copies' parameters are `h.0.fc.weight`, `h.1.fc.weight`, ... The twin's
initial state_dict is given to `dtl run --init`, which refuses a name it
does not know, and the two train the digits for N steps; compared bit for
bit (measured bitwise on 2026-12-04; the tolerance is 0): every step's
loss, learning rate and gradient norm, the evaluations, the final weights
under their PyTorch names.

Exit status 0 when all holds, 1 with the failures listed, 2 on usage errors.
"""

import argparse
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import torch
import torch.nn.functional as F
from torch import nn

import twins

STEPS = 30
DTL = """
module Hidden(d: int) {
  fc = linear(d, d)
  forward(x: [B, d]) -> [B, d] { x |> fc |> relu }
}

model Net {
  inp = linear(64, 32)
  h = repeat 3 { Hidden(32) }
  out = linear(32, 10)
  forward(x: [B, 64]) -> [B, 10] { x |> inp |> relu |> h |> out }
}

data digits {
  source = csv("DIGITS", label: -1)
  scale = 0.0625
  valid = 0.2
}

train {
  model = Net
  data = digits
  loss = cross_entropy
  optimizer = adamw(lr: 3e-3, weight_decay: 0.01)
  micro_batch = 32
  steps = 30
  eval_every = 10
}
"""


class Hidden(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return F.relu(self.fc(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(64, 32)
        self.h = nn.Sequential(*[Hidden(32) for _ in range(3)])
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        return self.out(self.h(F.relu(self.inp(x))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    cmp.require_binary(parser, args.dtl)
    args.workdir.mkdir(parents=True, exist_ok=True)
    dtl_file = args.workdir / "named_repeat.dtl"
    dtl_file.write_text(DTL.replace("DIGITS", str(kit.REPO / "data/digits.csv.gz")))
    torch.manual_seed(0)
    model = Net()
    init = args.workdir / "init.safetensors"
    kit.save_init(model, init)
    data = kit.digits(shape=[64], scale=0.0625, valid=0.2)
    recipe = kit.Recipe(steps=args.steps, micro_batch=32, optimizer="adamw", lr=3e-3,
                        optimizer_args=dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
                        seed=0, eval_every=10)
    ours = cmp.run_dtl(args.dtl.resolve(), dtl_file, args.workdir / "dtl", init=init,
                       sets=[f"train.steps={args.steps}"])
    theirs = kit.train(model, data, recipe)
    names = sorted(theirs.state)
    print(f"named repeat ({', '.join(n for n in names if n.startswith('h.0'))}, ...): "
          f"{args.steps} steps, dtl {ours.seconds:.1f} s, twin {theirs.seconds:.1f} s")
    c = cmp.Comparison("h = repeat 3 { Hidden(32) } vs self.h = nn.Sequential(...)")
    cmp.compare_steps(c, ours.steps, theirs.steps, twins.BITWISE)
    cmp.compare_evals(c, ours.evals, theirs.evals, twins.BITWISE)
    weights = cmp.read_safetensors(ours.out / "model.safetensors")
    if sorted(weights) != names:
        c.fail(f"dtl's parameter names {sorted(weights)} are not PyTorch's {names}")
    cmp.compare_weights(c, weights, theirs.state, twins.BITWISE)
    c.print()
    cmp.finish([c])


if __name__ == "__main__":
    sys.exit(main())
