"""dtl's optimizer `groups` against torch.optim parameter groups, step by step.

    python tests/reference/groups.py DTL_BINARY WORKDIR [--steps N]

For examples/digits_cnn.dtl, `groups = [group(["norms", "biases"],
weight_decay: 0)]` (AdamW's decay off for batch norm's and every bias, as
nanoGPT, torchtitan and Megatron set it), and for examples/digits_mlp.dtl,
`groups = [group("2.*", lr_scale: 0.5), group("matrices", weight_decay:
0.05)]` (the output layer at half the rate, the hidden matrices decayed
more, the hidden biases as the optimizer says), this script starts dtl
with `--set train.groups=[...]` and the hand-written twin of twins.py, from
the same PyTorch initial weights, the twin's AdamW given the same
parameter groups (each parameter in the first group that names it; the
rest in a last group with the optimizer's settings). It compares, bit for
bit (measured bitwise on 2026-12-04; the tolerance is 0): the loss,
learning rate and gradient norm of every step, the evaluations and the
final weights.

With DTL_TWIN_SABOTAGE=one_group the twin puts every parameter in one
group (no groups): the weights differ.

Exit status 0 when all holds, 1 with the failures listed, 2 on usage errors.
"""

import argparse
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
from torch import nn

import twins

STEPS = 30


def is_norm(module):
    return isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm, nn.GroupNorm))


def select(model, what):
    """The names a selector picks, as dtl picks them: `norms` (the weights
    and biases of normalisation layers), `biases`, `matrices` (two or more
    dimensions), `embeddings`, or a glob."""
    import fnmatch
    norms = {f"{m}.{p}" if m else p for m, module in model.named_modules() if is_norm(module)
             for p, _ in module.named_parameters(recurse=False)}
    names = []
    for name, param in model.named_parameters():
        hit = {"norms": name in norms, "biases": name.rsplit(".", 1)[-1].endswith("bias"),
               "matrices": param.dim() >= 2,
               "embeddings": False}.get(what)
        if hit is None:
            hit = fnmatch.fnmatchcase(name, what)
        if hit:
            names.append(name)
    return names


CASES = {
    "cnn": ('[group(["norms", "biases"], weight_decay: 0)]',
            [(["norms", "biases"], {"weight_decay": 0.0})]),
    "mlp": ('[group("2.*", lr_scale: 0.5), group("matrices", weight_decay: 0.05)]',
            [(["2.*"], {"lr_scale": 0.5}), (["matrices"], {"weight_decay": 0.05})]),
}


def torch_groups(model, spec):
    taken, groups = set(), []
    params = dict(model.named_parameters())
    for selectors, settings in spec:
        names = [n for s in selectors for n in select(model, s) if n not in taken]
        names = list(dict.fromkeys(names))
        taken.update(names)
        groups.append({"params": [params[n] for n in names], **settings})
    rest = [p for n, p in params.items() if n not in taken]
    if rest:
        groups.append({"params": rest})
    return groups


def compare(name, binary, workdir, steps):
    build, _ = twins.TWINS[name]
    dtl_file, model, data, recipe = build(steps)
    workdir.mkdir(parents=True, exist_ok=True)
    init = workdir / "init.safetensors"
    kit.save_init(model, init)
    written, spec = CASES[name]
    ours = cmp.run_dtl(binary, kit.REPO / dtl_file, workdir / "dtl", init=init,
                       sets=[f"train.steps={steps}", f"train.groups={written}"])
    groups = None if kit.sabotaged("one_group") else torch_groups(model, spec)
    theirs = kit.train(model, data, recipe, groups=groups)
    print(f"{name} ({dtl_file}, groups = {written}): {steps} steps, "
          f"dtl {ours.seconds:.1f} s, twin {theirs.seconds:.1f} s")
    c = cmp.Comparison(f"{name} groups vs torch.optim parameter groups")
    cmp.compare_steps(c, ours.steps, theirs.steps, twins.BITWISE)
    cmp.compare_evals(c, ours.evals, theirs.evals, twins.BITWISE)
    cmp.compare_weights(c, cmp.read_safetensors(ours.out / "model.safetensors"), theirs.state,
                        twins.BITWISE)
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
    cmp.finish([compare(name, args.dtl.resolve(), args.workdir / name, args.steps)
                for name in CASES])


if __name__ == "__main__":
    sys.exit(main())
