"""Layers and settings that the other tests only run to "exit 0", compared
number for number with PyTorch.

    python tests/reference/layers.py DTL_BINARY WORKDIR [CASE ...]

Each `.dtl` file in tests/reference/layers/ exercises a few of them:

| file                  | what it exercises                                             |
|-----------------------|---------------------------------------------------------------|
| rms_norm_sigmoid.dtl  | rms_norm, sigmoid, linear(bias: false); Adam with betas and   |
|                       | weight decay; clip = norm(max, type: inf); warm-up + linear   |
| conv1d_pools.dtl      | conv1d (with and without bias), max_pool1d, avg_pool1d with   |
|                       | stride and padding, adaptive_avg_pool1d, gelu; AdamW,         |
|                       | accumulation, 2-norm clipping                                 |
| avg_pool2d_sgd.dtl    | conv2d(bias: false), avg_pool2d with stride and padding,      |
|                       | silu; SGD momentum + dampening + weight decay, value          |
|                       | clipping, step schedule, label smoothing                      |
| dataflow.dtl          | reshape, transpose, softmax, concat, tanh, `let`              |
| bytes_lm.dtl          | text(encoding: "bytes"), embedding, pos_embedding, causal     |
|                       | attention, layer_norm                                         |
| init_file.dtl         | `init = "file.safetensors"` (relative to the .dtl file),      |
|                       | `shuffle = false`, SGD dampening, warm-up + linear to 0       |

Like twins.py, every network here is a hand-written torch.nn module and
every setting is spelt out in its twin below, read off the `.dtl` file, not
off dtl's plan; the training loop is twin_kit.train. Each twin starts from
PyTorch's seeded initial weights, handed to dtl with `--init` (except
init_file.dtl, where both start from the file the `.dtl` names), trains for
the file's own steps, and is compared per step (loss, gradient norm before
clipping — the ∞-norm under `type: inf` —, learning rate), on the final
evaluation and on every final weight.

It prints one line per file: steps, the worst relative loss, gradient-norm
and lr differences and the worst weight difference (max |difference| over
the tensor's largest magnitude), and exits 1 when any of them is above
1e-5 (with the mismatches listed), 2 on usage errors. CASE names (file
stems) pick a subset. DTL_TWIN_SABOTAGE works as in twins.py.
"""

import argparse
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

TOLERANCE = 1e-5
HERE = Path(__file__).resolve().parent / "layers"

ADAM_DEFAULTS = dict(betas=(0.9, 0.999), eps=1e-8)


def rms_norm_sigmoid():
    seed = 5
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, 32, bias=False),
        # The language's default eps, 1.19e-7, is float32's machine epsilon:
        # PyTorch's default (eps=None) for a float32 input.
        nn.RMSNorm(32),
        nn.Sigmoid(),
        nn.Linear(32, 10))
    data = kit.digits(shape=[64], scale=0.0625, valid=0.2)
    recipe = kit.Recipe(
        steps=40, micro_batch=16, optimizer="adam", lr=1e-2,
        optimizer_args=dict(betas=(0.8, 0.99), eps=1e-8, weight_decay=1e-3),
        warmup=3, schedule=("linear", 0.2), clip=("norm", 0.05, float("inf")), seed=seed)
    return model, data, recipe


def conv1d_pools():
    seed = 1
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv1d(8, 16, 3, padding=1),              # [B, 16, 8]
        nn.ReLU(),
        nn.MaxPool1d(2),                             # [B, 16, 4]
        nn.Conv1d(16, 24, 3, padding=1, bias=False),  # [B, 24, 4]
        nn.GELU(),
        nn.AvgPool1d(2, stride=1, padding=1),        # [B, 24, 5]
        nn.AdaptiveAvgPool1d(3),                     # [B, 24, 3]
        nn.Flatten(),
        nn.Linear(72, 10))
    data = kit.digits(shape=[8, 8], scale=0.0625, valid=0.2)
    recipe = kit.Recipe(
        steps=30, micro_batch=16, accumulate=2, optimizer="adamw", lr=4e-3,
        optimizer_args=dict(ADAM_DEFAULTS, weight_decay=0.05),
        clip=("norm", 0.4, 2.0), seed=seed)
    return model, data, recipe


def avg_pool2d_sgd():
    seed = 2
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),  # [B, 8, 8, 8]
        nn.SiLU(),
        nn.AvgPool2d(3, stride=2, padding=1),       # [B, 8, 4, 4]
        nn.Flatten(),
        nn.Linear(128, 10))
    data = kit.digits(shape=[1, 8, 8], scale=0.0625, valid=0.25)
    recipe = kit.Recipe(
        steps=30, micro_batch=24, optimizer="sgd", lr=0.05,
        optimizer_args=dict(momentum=0.9, dampening=0.3, nesterov=False, weight_decay=1e-3),
        schedule=("step", 10, 0.5), clip=("value", 0.1), label_smoothing=0.1, seed=seed)
    return model, data, recipe


class Dataflow(nn.Module):
    """dataflow.dtl's model Net:
        let image = x |> reshape([8, 8])
        let rows = image |> linear(8, 12) |> tanh
        let columns = image |> transpose(1, 2) |> linear(8, 12) |> softmax(dim: -1)
        concat(rows, columns, dim: -1) |> flatten |> linear(192, 10)
    The linears are named by their place among the body's inline stages
    (reshape 0, linear 1, tanh 2, transpose 3, linear 4, softmax 5,
    flatten 6, linear 7)."""

    def __init__(self):
        super().__init__()
        self.add_module("1", nn.Linear(8, 12))
        self.add_module("4", nn.Linear(8, 12))
        self.add_module("7", nn.Linear(192, 10))

    def forward(self, x):
        image = x.reshape(x.shape[0], 8, 8)
        rows = torch.tanh(self._modules["1"](image))
        columns = F.softmax(self._modules["4"](image.transpose(1, 2)), dim=-1)
        return self._modules["7"](torch.cat([rows, columns], dim=-1).flatten(1))


def dataflow():
    seed = 4
    torch.manual_seed(seed)
    data = kit.digits(shape=[64], scale=0.0625, valid=0.2)
    recipe = kit.Recipe(steps=30, micro_batch=16, optimizer="adam", lr=5e-3,
                        optimizer_args=dict(ADAM_DEFAULTS, weight_decay=0.0), seed=seed)
    return Dataflow(), data, recipe


def bytes_lm():
    seed = 6
    data = kit.text_windows(kit.REPO / "data/moby_dick_1-5.txt", context=32, encoding="bytes",
                            valid=0.05)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Embedding(256, 32),
        kit.PosEmbedding(32, 32),
        kit.SelfAttention(32, 4, causal=True),
        nn.LayerNorm(32),
        nn.Linear(32, 256))
    recipe = kit.Recipe(steps=20, micro_batch=16, optimizer="adamw", lr=3e-3,
                        optimizer_args=dict(ADAM_DEFAULTS, weight_decay=0.01),
                        clip=("norm", 1.0, 2.0), seed=seed)
    return model, data, recipe


def init_file():
    model = nn.Sequential(nn.Linear(64, 10))
    # `init = "../../cases/ok/minimal.safetensors"`, relative to the file.
    model.load_state_dict(load_file(str(HERE / "../../cases/ok/minimal.safetensors")),
                          strict=True)
    data = kit.digits(shape=[64], scale=0.0625, valid=0.1, shuffle=False)
    recipe = kit.Recipe(
        steps=60, micro_batch=32, optimizer="sgd", lr=0.2,
        optimizer_args=dict(momentum=0.8, dampening=0.5, nesterov=False, weight_decay=0.0),
        warmup=2, schedule=("linear", 0.0), seed=0)
    return model, data, recipe


# name → (twin, whether the .dtl names its own initial weights)
CASES = {
    "rms_norm_sigmoid": (rms_norm_sigmoid, False),
    "conv1d_pools": (conv1d_pools, False),
    "avg_pool2d_sgd": (avg_pool2d_sgd, False),
    "dataflow": (dataflow, False),
    "bytes_lm": (bytes_lm, False),
    "init_file": (init_file, True),
}


def compare(name, binary, workdir):
    twin, own_init = CASES[name]
    model, data, recipe = twin()
    workdir.mkdir(parents=True, exist_ok=True)
    init = None
    if not own_init:
        init = workdir / "init.safetensors"
        kit.save_init(model, init)
    ours = cmp.run_dtl(binary, HERE / f"{name}.dtl", workdir / "dtl", init=init)
    theirs = kit.train(model, data, recipe)
    c = cmp.Comparison(name)
    cmp.compare_steps(c, ours.steps, theirs.steps, TOLERANCE)
    cmp.compare_evals(c, ours.evals, theirs.evals, TOLERANCE)
    cmp.compare_weights(c, cmp.read_safetensors(ours.out / "model.safetensors"), theirs.state,
                        TOLERANCE, loose=cmp.key_bias_slices(model, recipe))
    worst = {quantity: value for quantity, value, _, _ in c.rows}
    print(f"{name + '.dtl':<22} {recipe.steps:>5} {worst.get('loss', float('nan')):>10.2e} "
          f"{worst.get('grad_norm', float('nan')):>10.2e} {worst.get('lr', float('nan')):>10.2e} "
          f"{worst.get('eval_loss', float('nan')):>10.2e} "
          f"{worst.get('weights', float('nan')):>10.2e}  {'ok' if not c.failures else 'MISMATCH'}")
    return c


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help="file stems to run (default: all): " + ", ".join(CASES))
    args = parser.parse_args()
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown}; the cases are {', '.join(CASES)}")
    cmp.require_binary(parser, args.dtl)
    kit.announce_sabotage()
    print(f"{'file':<22} {'steps':>5} {'loss':>10} {'grad_norm':>10} {'lr':>10} "
          f"{'eval_loss':>10} {'weights':>10}  (worst relative differences, tolerance "
          f"{TOLERANCE:.0e})")
    comparisons = [compare(name, args.dtl.resolve(), args.workdir / name)
                   for name in (args.cases or CASES)]
    for c in comparisons:
        if c.failures:
            print(f"\n{c.name}:")
            c.print()
    cmp.finish(comparisons)


if __name__ == "__main__":
    sys.exit(main())
