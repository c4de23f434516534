"""dtl's `precision = bf16` against PyTorch's autocast, step by step, and the
dtypes of everything such a run saves.

    python tests/reference/bf16.py DTL_BINARY WORKDIR [--steps N]

The language reference: under `precision = bf16`, linear, convolution and
attention compute in bfloat16 from float32 master weights, "as autocast
does"; norms, softmax, the loss, gradients and optimizer state stay float32.
For examples/digits_mlp.dtl (dropout) and examples/digits_transformer.dtl
(attention, layer norm) this script starts dtl (`--set
train.precision=bf16 --set train.checkpoint_every=5`) and the hand-written
twin of twins.py from the same PyTorch initial weights and compares:

1. "autocast with float32 hand-off": the twin under
   torch.autocast("cpu", dtype=torch.bfloat16) with a forward hook casting
   each linear's and attention's output back to float32. Inside those layers
   autocast does what dtl does (inputs, weights and bias cast to bfloat16,
   the products in bfloat16); the hook hands float32 on, so that
   activations, layer norm, dropout and the loss run in float32 as the
   language reference says. Attention is the twin's, written out on the
   [B, T, dim] layout (twin_kit.SelfAttention.forward_written_out, checked
   against nn.MultiheadAttention's forward in float64 first): bfloat16 turns
   last-bit differences into 1e-3 within a few steps, so the reference has
   to round as dtl rounds for the comparison to be tight. It is: every
   step's loss, gradient norm and lr, the final evaluation and the final
   float32 weights bit-identical for both models over 30 steps (measured
   2026-12-04; the tolerance is 0).
2. "plain autocast": the twin under autocast alone, as a PyTorch user would
   train it. There a linear's bfloat16 output flows on in bfloat16 through
   relu, dropout, gelu and layer norm (CPU autocast keeps those in the
   input's dtype), so each of them rounds to 8 bits of mantissa (relative
   ~4e-3) where dtl keeps 24; attention is nn.MultiheadAttention's own.
   Measured over 30 steps: worst per-step loss difference 1.0e-2 relative
   (MLP), 7.6e-3 (transformer). The bound,
   5e-2, is five times the worst; it only says that dtl's bf16 trains like
   PyTorch's. What separates bf16 from float32 is the first comparison:
   with DTL_TWIN_SABOTAGE=fp32 the references train in float32 and step
   1's loss already differs by ~1e-3.
3. dtl's model.safetensors, checkpoint/model.safetensors and
   checkpoint/state.safetensors hold float32 tensors only (bf16 must never
   reach saved weights or optimizer state), except `data.order` (int64);
   the checkpoint has Adam's two moments for every parameter.

Exit status 0 when all holds, 1 with the failures listed, 2 on usage errors.
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import torch
from safetensors.torch import save_file
from torch import nn

import twins

STEPS = 30
CHECKPOINT_EVERY = 5
EXACT = 0.0  # autocast with float32 hand-off, dtl's documented arithmetic: bitwise
LOOSE = 5e-2  # plain autocast: see the module docstring


def autocast_bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def hand_off_float32(model):
    """Casts the output of every layer dtl computes in bfloat16 (linear,
    convolution, attention) back to float32, as dtl does."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, kit.SelfAttention)
    for module in model.modules():
        if isinstance(module, kinds):
            module.register_forward_hook(lambda _m, _args, out: out.float())
    return model


def reference(model, data, recipe, mode):
    """Trains a copy of `model` in `mode`: "hand-off" (attention written
    out on dtl's layout, float32 between layers), "plain" (the twin as it
    is, nn.MultiheadAttention included) or, for the self-check, "fp32"."""
    model = copy.deepcopy(model)
    if mode != "plain":
        for module in model.modules():
            if isinstance(module, kit.SelfAttention):
                module.written_out = True
    if mode == "fp32":
        return kit.train(model, data, recipe)
    if mode == "hand-off":
        hand_off_float32(model)
    return kit.train(model, data, recipe, autocast=autocast_bf16)


def doctor_checkpoint(path):
    """The self-check of the dtype check: rewrites the first optimizer-state
    tensor of a checkpoint as bfloat16."""
    tensors = cmp.read_safetensors(path)
    first = sorted(n for n in tensors if n != "data.order")[0]
    tensors[first] = tensors[first].to(torch.bfloat16)
    save_file(tensors, str(path))


def check_float32(c, path, allowed=()):
    """Every tensor of a safetensors file is F32 (names in `allowed` may be
    I64)."""
    if not path.is_file():
        c.fail(f"{path} is missing")
        return {}
    dtypes = cmp.safetensors_dtypes(path)
    bad = {n: d for n, d in dtypes.items()
           if d != "F32" and not (n in allowed and d == "I64")}
    if bad:
        c.fail(f"{path.relative_to(path.parents[1])}: not float32: {bad}")
    return dtypes


def check_saved(c, out, params, last_checkpoint):
    """model.safetensors and the checkpoint (of step `last_checkpoint`):
    float32 only, complete."""
    weights = check_float32(c, out / "model.safetensors")
    ckpt = check_float32(c, out / "checkpoint/model.safetensors")
    state = check_float32(c, out / "checkpoint/state.safetensors", allowed={"data.order"})
    if weights and set(weights) != set(ckpt):
        c.fail("checkpoint/model.safetensors and model.safetensors hold different tensors")
    expected = {f"{p}.{slot}" for p in params for slot in ("first", "second")} | {"data.order"}
    if state and set(state) != expected:
        c.fail(f"checkpoint/state.safetensors: missing {sorted(expected - set(state))}, "
               f"unexpected {sorted(set(state) - expected)}")
    saved_step = json.loads((out / "checkpoint/state.json").read_text())["step"]
    if saved_step != last_checkpoint:
        c.fail(f"the checkpoint is of step {saved_step}, not {last_checkpoint}")
    if state.get("data.order") != "I64":
        c.fail(f"data.order is {state.get('data.order')}, not I64")
    print(f"  saved: model.safetensors {len(weights)} tensors, checkpoint/model.safetensors "
          f"{len(ckpt)}, checkpoint/state.safetensors {len(state)}: dtypes "
          f"{sorted(set(weights.values()) | set(ckpt.values()) | set(state.values()))}")


def compare(name, binary, workdir, steps):
    """dtl in bf16 against both references and its saved files; returns the
    three Comparisons."""
    build, _ = twins.TWINS[name]
    dtl_file, model, data, recipe = build(steps)
    workdir.mkdir(parents=True, exist_ok=True)
    init = workdir / "init.safetensors"
    kit.save_init(model, init)
    ours = cmp.run_dtl(binary, kit.REPO / dtl_file, workdir / "dtl", init=init,
                       sets=[f"train.steps={steps}", "train.precision=bf16",
                             f"train.checkpoint_every={CHECKPOINT_EVERY}"])
    modes = ("fp32", "fp32") if kit.sabotaged("fp32") else ("hand-off", "plain")
    exact = reference(model, data, recipe, modes[0])
    plain = reference(model, data, recipe, modes[1])
    print(f"{name} ({dtl_file}, precision = bf16): {steps} steps, dtl {ours.seconds:.1f} s, "
          f"references {exact.seconds:.1f} + {plain.seconds:.1f} s")

    c_exact = cmp.Comparison(f"{name} bf16 vs autocast with float32 hand-off")
    cmp.compare_steps(c_exact, ours.steps, exact.steps, EXACT)
    cmp.compare_evals(c_exact, ours.evals, exact.evals, EXACT)
    cmp.compare_weights(c_exact, cmp.read_safetensors(ours.out / "model.safetensors"),
                        exact.state, EXACT)
    print("  against autocast with float32 hand-off (dtl's documented arithmetic):")
    c_exact.print()

    c_plain = cmp.Comparison(f"{name} bf16 vs plain autocast")
    cmp.compare_steps(c_plain, ours.steps, plain.steps, LOOSE, quantities=("loss",))
    print("  against plain autocast (bfloat16 activations):")
    c_plain.print()

    if kit.sabotaged("dtype"):
        doctor_checkpoint(ours.out / "checkpoint/state.safetensors")
    c_saved = cmp.Comparison(f"{name} bf16 saved files")
    check_saved(c_saved, ours.out, [n for n, _ in model.named_parameters()],
                last_checkpoint=steps - steps % CHECKPOINT_EVERY)
    return [c_exact, c_plain, c_saved]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    cmp.require_binary(parser, args.dtl)
    kit.announce_sabotage()
    forms = cmp.Comparison("attention written out vs nn.MultiheadAttention (float64)")
    forms.check("output", kit.attention_forms_agree(), "random input", 1e-12)
    print(f"{forms.name}:")
    forms.print()
    comparisons = [forms] + [c for name in ("mlp", "transformer")
                   for c in compare(name, args.dtl.resolve(), args.workdir / name, args.steps)]
    cmp.finish(comparisons)


if __name__ == "__main__":
    sys.exit(main())
