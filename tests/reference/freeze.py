"""dtl's `freeze` against PyTorch's requires_grad_(False), step by step.

    python tests/reference/freeze.py DTL_BINARY WORKDIR [--steps N]

For examples/digits_mlp.dtl (the first hidden block frozen) and
examples/digits_cnn.dtl (the first convolution block frozen, its batch
norm's weight and bias with it: its running statistics still move, as in
PyTorch) this script starts dtl with `--set train.freeze=[...]` and the
hand-written twin of twins.py, from the same PyTorch initial weights, the
twin's frozen parameters set `requires_grad_(False)` (the optimizer is
given every parameter, as most PyTorch code does: it skips those without a
gradient, weight decay and momentum included; clipping and the gradient
norm see only the trainable ones). It compares, bit for bit (measured
bitwise on 2026-12-04; the tolerance is 0): the loss, learning rate and
gradient norm of every step, the evaluations, and the final weights; and
checks that the frozen tensors in dtl's model.safetensors are the initial
ones.

With DTL_TWIN_SABOTAGE=unfrozen the twin trains every parameter: the
losses differ from the second step.

Exit status 0 when all holds, 1 with the failures listed, 2 on usage errors.
"""

import argparse
import fnmatch
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import torch

import twins

STEPS = 30
EXACT = 0.0
FROZEN = {"mlp": ["0.*"], "cnn": ["0.*"]}


def compare(name, binary, workdir, steps):
    build, _ = twins.TWINS[name]
    dtl_file, model, data, recipe = build(steps)
    workdir.mkdir(parents=True, exist_ok=True)
    init = workdir / "init.safetensors"
    kit.save_init(model, init)
    patterns = FROZEN[name]
    frozen = [n for n, _ in model.named_parameters()
              if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not frozen:
        sys.exit(f"FAIL: {patterns} freeze nothing of {name}")
    if not kit.sabotaged("unfrozen"):
        for n, p in model.named_parameters():
            if n in frozen:
                p.requires_grad_(False)
    listed = ", ".join(f'"{p}"' for p in patterns)
    ours = cmp.run_dtl(binary, kit.REPO / dtl_file, workdir / "dtl", init=init,
                       sets=[f"train.steps={steps}", f"train.freeze=[{listed}]"])
    initial = {n: t.detach().clone() for n, t in model.state_dict().items()}
    theirs = kit.train(model, data, recipe)
    print(f"{name} ({dtl_file}, freeze = [{listed}]: {len(frozen)} tensors): {steps} steps, "
          f"dtl {ours.seconds:.1f} s, twin {theirs.seconds:.1f} s")
    c = cmp.Comparison(f"{name} freeze vs requires_grad_(False)")
    cmp.compare_steps(c, ours.steps, theirs.steps, twins.BITWISE)
    cmp.compare_evals(c, ours.evals, theirs.evals, twins.BITWISE)
    weights = cmp.read_safetensors(ours.out / "model.safetensors")
    cmp.compare_weights(c, weights, theirs.state, twins.BITWISE)
    for n in frozen:
        if not torch.equal(weights[n], initial[n]):
            c.fail(f"{n} is frozen but changed")
    c.print()
    return c


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    cmp.require_binary(parser, args.dtl)
    kit.announce_sabotage()
    comparisons = [compare(name, args.dtl.resolve(), args.workdir / name, args.steps)
                   for name in FROZEN]
    cmp.finish(comparisons)


if __name__ == "__main__":
    sys.exit(main())
