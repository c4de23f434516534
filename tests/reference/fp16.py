"""dtl's `precision = fp16` against torch.amp.GradScaler, step by step.

    python tests/reference/fp16.py DTL_BINARY WORKDIR [--steps N]

Under `precision = fp16`, linear, convolution and attention compute in
float16 from float32 master weights (as under bf16, see bf16.py), and the
loss is scaled dynamically as `torch.amp.GradScaler` scales it: the loss
times the scale (65536 at first) before backward, the gradients times the
scale's float32 reciprocal after, a step whose gradients hold an inf or a
NaN skipped and the scale halved, the scale doubled after 2000 steps in a
row without one. For examples/digits_mlp.dtl and
examples/digits_transformer.dtl this script starts dtl (`--set
train.precision=fp16`) and the hand-written twin of twins.py, from the same
PyTorch initial weights, the twin under torch.autocast("cpu",
dtype=torch.float16) with float32 handed on between layers (bf16.py's
hand-off) and a GradScaler("cpu") around its optimizer (unscale_ before
clipping, step, update). It compares, step by step:

- which steps were skipped and the loss scale of each, exactly (the
  transformer's gradients overflow float16 at 65536 at step 25, so the skip
  and the back-off are exercised; the script fails if no step overflows);
- the loss and the learning rate of every step, the gradient norm of every
  step not skipped, the final evaluation and the final float32 weights
  (measured bitwise on 2026-12-04; the tolerance is 0).

With DTL_TWIN_SABOTAGE=noscale the twin trains without a scaler: the skips
and the scales differ at once.

Exit status 0 when all holds, 1 with the failures listed, 2 on usage errors.
"""

import argparse
import copy
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import torch

import twins
from bf16 import check_float32, hand_off_float32

STEPS = 30
EXACT = 0.0


def reference(model, data, recipe):
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, kit.SelfAttention):
            module.written_out = True
    hand_off_float32(model)
    scaler = None if kit.sabotaged("noscale") else torch.amp.GradScaler("cpu")
    return kit.train(model, data, recipe,
                     autocast=lambda: torch.autocast("cpu", dtype=torch.float16), scaler=scaler)


def compare(name, binary, workdir, steps):
    build, _ = twins.TWINS[name]
    dtl_file, model, data, recipe = build(steps)
    workdir.mkdir(parents=True, exist_ok=True)
    init = workdir / "init.safetensors"
    kit.save_init(model, init)
    ours = cmp.run_dtl(binary, kit.REPO / dtl_file, workdir / "dtl", init=init,
                       sets=[f"train.steps={steps}", "train.precision=fp16"])
    theirs = reference(model, data, recipe)
    print(f"{name} ({dtl_file}, precision = fp16): {steps} steps, dtl {ours.seconds:.1f} s, "
          f"twin {theirs.seconds:.1f} s")
    c = cmp.Comparison(f"{name} fp16 vs GradScaler")
    skipped = ([r["step"] for r in ours.steps if r.get("skipped")],
               [r["step"] for r in theirs.steps if r.get("skipped")])
    if skipped[0] != skipped[1]:
        c.fail(f"skipped steps: dtl {skipped[0]}, GradScaler {skipped[1]}")
    scales = ([r.get("loss_scale") for r in ours.steps], [r.get("loss_scale") for r in theirs.steps])
    if scales[0] != scales[1]:
        c.fail(f"loss scales: dtl {scales[0]}, GradScaler {scales[1]}")
    print(f"  skipped steps {skipped[0]}, loss scale {scales[0][0]} -> {scales[0][-1]}")
    for quantity in ("loss", "lr", "grad_norm"):
        worst, where = 0.0, "-"
        for a, b in zip(ours.steps, theirs.steps):
            if quantity == "grad_norm" and (a.get("skipped") or b.get("skipped")):
                continue
            d = cmp.relative(a[quantity], b[quantity])
            if not d <= worst:
                worst, where = d, f"step {b['step']}: dtl {a[quantity]!r} vs twin {b[quantity]!r}"
        c.check(quantity, worst, where, EXACT)
    cmp.compare_evals(c, ours.evals, theirs.evals, EXACT)
    cmp.compare_weights(c, cmp.read_safetensors(ours.out / "model.safetensors"), theirs.state, EXACT)
    check_float32(c, ours.out / "model.safetensors")
    c.print()
    return [c], bool(skipped[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    cmp.require_binary(parser, args.dtl)
    kit.announce_sabotage()
    comparisons, overflowed = [], False
    for name in ("mlp", "transformer"):
        found, skipped = compare(name, args.dtl.resolve(), args.workdir / name, args.steps)
        comparisons += found
        overflowed |= skipped
    if not overflowed:
        comparisons[-1].fail("no step overflowed: the skip and the back-off went untested")
    cmp.finish(comparisons)


if __name__ == "__main__":
    sys.exit(main())
