"""Hand-written PyTorch twins of four example experiments, trained side by side
with `dtl run` and compared step by step.

    python tests/reference/twins.py NAME DTL_BINARY WORKDIR [--steps N]

NAME is mlp (examples/digits_mlp.dtl: an MLP with dropout), cnn
(digits_cnn.dtl: convolutions with batch norm), transformer
(digits_transformer.dtl: an encoder with multi-head attention), char
(moby_char_lm.dtl: a causal character model) or all.

Each twin is an ordinary torch.nn.Module written from its `.dtl` file by a
person reading the file and docs/language.md, with every constant spelt out
here — widths, dropout p, the optimizer's arguments and their defaults,
clipping, schedule, batch sizes, seed. Nothing is read from dtl's compiled
plan: if dtl's compiler lowered a layer wrongly, named a parameter wrongly
or dropped a setting, the plan-driven reference (torch_reference.py) would
copy the mistake, a twin does not. The one thing taken from dtl is the
parameter *names* (`dtl compile` shows them; the language reference defines
them as PyTorch's state_dict names of the equivalent nested module), so that
the twin's initial weights can be handed to dtl.

For each NAME the script:
1. builds the twin with PyTorch's seeded initialisers and saves its
   state_dict to WORKDIR/init.safetensors;
2. runs `DTL_BINARY run examples/X.dtl --quiet --device cpu --init
   WORKDIR/init.safetensors --out WORKDIR/dtl --set train.steps=N`;
3. trains the twin for N steps (twin_kit.train: the loop of the language
   reference, torch.optim, clip_grad_norm_);
4. compares per step the loss, the gradient norm before clipping and the
   learning rate, then the final evaluation on the held-out rows and every
   parameter and buffer of WORKDIR/dtl/model.safetensors (batch norm's
   running statistics and num_batches_tracked included).

With NAME = all the four run in turn under WORKDIR/NAME/. Each quantity has
the tolerance TOLERANCES states (relative; weights: max |difference| over
the tensor's largest magnitude), at most 10× the worst measured on a 2-core
x86 CPU (2026-12-04), 0 where that was bitwise: the MLP and the CNN are
bit-identical (losses, norms, lr, evaluation, every weight and batch-norm
buffer); the transformer and the character model differ by 2.5e-7 and
1.7e-7 on losses, 4.8e-7 and 1.1e-7 on gradient norms, 3.0e-6 and 2.9e-7 on
weights. That residue is nn.MultiheadAttention's: it computes on a
[T, B, dim] layout whose products round differently from dtl's [B, T, dim].
`--written-out-attention` uses the same attention written out on dtl's
layout (twin_kit.SelfAttention.forward_written_out), and then every quantity
of every twin is bit-identical, attention's key bias included (tolerance 0).
With nn.MultiheadAttention the key bias is left out: its gradient is zero in
exact arithmetic and its value is rounding noise that Adam amplifies
(comparison.key_bias_slices).

Exit status 0 when everything agrees, 1 with the mismatches listed
otherwise, 2 on usage errors.

DTL_TWIN_SABOTAGE=weight_decay|beta2|dropout|noclip|lr|momentum makes the
twin deliberately wrong, to show that the comparison catches it.
"""

import argparse
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import torch
import torch.nn.functional as F
from torch import nn

BITWISE = {q: 0.0 for q in ("loss", "grad_norm", "lr", "eval_loss", "eval_accuracy", "weights")}

# Per twin, with nn.MultiheadAttention: 10× the worst measured (see above).
TOLERANCES = {
    "mlp": BITWISE,
    "cnn": BITWISE,
    "transformer": {"loss": 2.5e-6, "grad_norm": 4.8e-6, "lr": 0.0, "eval_loss": 2.2e-6,
                    "eval_accuracy": 0.0, "weights": 3.0e-5},
    # eval_loss: 1.1e-7 on an AVX-512 Xeon (2026-12-05), where dtl's
    # chunks of held-out windows and the twin's one pass round apart.
    "char": {"loss": 1.7e-6, "grad_norm": 1.1e-6, "lr": 0.0, "eval_loss": 1.2e-6,
             "eval_accuracy": 0.0, "weights": 2.9e-6},
}


# ---------------------------------------------------------------------------
# examples/digits_mlp.dtl
# ---------------------------------------------------------------------------
class Hidden(nn.Module):
    """module Hidden(d_in, d_out, p = 0.1) { fc = linear(d_in, d_out);
    x |> fc |> relu |> dropout(p) }"""

    def __init__(self, d_in, d_out, p=0.1):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.p = p

    def forward(self, x):
        return F.dropout(F.relu(self.fc(x)), self.p, self.training)


def mlp(steps):
    p = 0.2 if kit.sabotaged("dropout") else 0.1  # Hidden's default p
    seed = 0
    torch.manual_seed(seed)
    # model DigitsMlp: x |> Hidden(64, 128) |> Hidden(128, 64) |> linear(64, 10)
    model = nn.Sequential(Hidden(64, 128, p), Hidden(128, 64, p), nn.Linear(64, 10))
    # data digits: csv(label: -1), scale 0.0625, valid 0.2
    data = kit.digits(shape=[64], scale=0.0625, valid=0.2)
    recipe = kit.Recipe(
        steps=steps, micro_batch=32, accumulate=2,
        optimizer="adamw", lr=3e-3,
        optimizer_args=dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        clip=("norm", 1.0, 2.0), seed=seed, eval_every=100)
    return "examples/digits_mlp.dtl", model, data, recipe


# ---------------------------------------------------------------------------
# examples/digits_cnn.dtl
# ---------------------------------------------------------------------------
def conv_block(c_in, c_out, momentum):
    """module ConvBlock(c_in, c_out):
    x |> conv2d(c_in, c_out, 3, padding: 1) |> batch_norm(c_out) |> relu"""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1),
                         nn.BatchNorm2d(c_out, eps=1e-5, momentum=momentum), nn.ReLU())


def cnn(steps):
    momentum = 0.2 if kit.sabotaged("momentum") else 0.1  # batch_norm's default
    p = 0.4 if kit.sabotaged("dropout") else 0.2
    seed = 0  # the train block's default
    torch.manual_seed(seed)
    model = nn.Sequential(
        conv_block(1, 16, momentum),
        conv_block(16, 32, momentum),
        nn.MaxPool2d(2),              # 8×8 → 4×4
        conv_block(32, 64, momentum),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Dropout(p),
        nn.Linear(64, 10))
    data = kit.digits(shape=[1, 8, 8], scale=0.0625, valid=0.2)
    recipe = kit.Recipe(
        steps=steps, micro_batch=32,
        optimizer="adamw", lr=3e-3,
        optimizer_args=dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        clip=("norm", 1.0, 2.0), seed=seed, eval_every=100)
    return "examples/digits_cnn.dtl", model, data, recipe


# ---------------------------------------------------------------------------
# examples/digits_transformer.dtl and examples/moby_char_lm.dtl
# ---------------------------------------------------------------------------
class Block(nn.Module):
    """module EncoderBlock(d, heads, hidden) / DecoderBlock (causal):
        norm1 = layer_norm(d); norm2 = layer_norm(d)
        let a = x + (x |> norm1 |> attention(d, heads[, causal: true]))
        a + (a |> norm2 |> linear(d, hidden) |> gelu |> linear(hidden, d))
    The unnamed layers are named by their place among the body's inline
    stages, as dtl (and nn.Sequential) number them: attention 0, the first
    linear 1, gelu 2, the second linear 3."""

    def __init__(self, d, heads, hidden, causal, p=0.0):
        super().__init__()
        self.p = p  # 0: the files have no dropout here (sabotage adds one)
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.add_module("0", kit.SelfAttention(d, heads, causal))
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.add_module("1", nn.Linear(d, hidden))
        self.add_module("3", nn.Linear(hidden, d))

    def forward(self, x):
        a = x + self._modules["0"](self.norm1(x))
        h = F.gelu(self._modules["1"](self.norm2(a)))
        return a + F.dropout(self._modules["3"](h), self.p, self.training)


def transformer(steps):
    p = 0.1 if kit.sabotaged("dropout") else 0.0
    seed = 0
    torch.manual_seed(seed)
    # Each 8×8 digit as eight rows of eight pixels.
    model = nn.Sequential(
        nn.Linear(8, 32),             # embed each row
        kit.PosEmbedding(8, 32),
        nn.Sequential(*[Block(32, 4, 64, causal=False, p=p) for _ in range(2)]),
        nn.LayerNorm(32),
        nn.Flatten(),
        nn.Linear(256, 10))
    data = kit.digits(shape=[8, 8], scale=0.0625, valid=0.2)
    recipe = kit.Recipe(
        steps=steps, micro_batch=32,
        optimizer="adamw", lr=2e-3,
        optimizer_args=dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        clip=("norm", 1.0, 2.0), seed=seed, eval_every=100)
    return "examples/digits_transformer.dtl", model, data, recipe


def char(steps):
    p = 0.1 if kit.sabotaged("dropout") else 0.0
    seed = 0
    vocabulary, context = 70, 64
    data = kit.text_windows(kit.REPO / "data/moby_dick_1-5.txt", context=context,
                            encoding="chars", valid=0.1)
    classes = int(data.targets.max()) + 1
    assert classes == vocabulary, f"the book has {classes} characters, the model {vocabulary}"
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Embedding(vocabulary, 64),  # one vector per character
        kit.PosEmbedding(context, 64),
        nn.Sequential(*[Block(64, 4, 256, causal=True, p=p) for _ in range(2)]),
        nn.LayerNorm(64),
        nn.Linear(64, vocabulary))     # a score for every next character
    recipe = kit.Recipe(
        steps=steps, micro_batch=32,
        optimizer="adamw", lr=3e-3,
        optimizer_args=dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        warmup=20, schedule=("cosine", 3e-4),
        clip=("norm", 1.0, 2.0), seed=seed, eval_every=100)
    return "examples/moby_char_lm.dtl", model, data, recipe


TWINS = {"mlp": (mlp, 50), "cnn": (cnn, 50), "transformer": (transformer, 50), "char": (char, 40)}


def compare(name, binary, workdir, steps, written_out=False):
    """Runs dtl and the twin NAME from the same initial weights; returns the
    Comparison. `written_out`: attention by SelfAttention.forward_written_out
    instead of nn.MultiheadAttention's forward, every quantity bitwise."""
    tolerance = BITWISE if written_out else TOLERANCES[name]
    build, default_steps = TWINS[name]
    steps = steps or default_steps
    dtl_file, model, data, recipe = build(steps)
    for module in model.modules():
        if isinstance(module, kit.SelfAttention):
            module.written_out = written_out
    workdir.mkdir(parents=True, exist_ok=True)
    init = workdir / "init.safetensors"
    kit.save_init(model, init)
    ours = cmp.run_dtl(binary, kit.REPO / dtl_file, workdir / "dtl", init=init,
                       sets=[f"train.steps={steps}"])
    theirs = kit.train(model, data, recipe)
    c = cmp.Comparison(name)
    cmp.compare_steps(c, ours.steps, theirs.steps, tolerance)
    cmp.compare_evals(c, ours.evals, theirs.evals, tolerance)
    loose = None if written_out else cmp.key_bias_slices(model)
    cmp.compare_weights(c, cmp.read_safetensors(ours.out / "model.safetensors"), theirs.state,
                        tolerance, loose=loose)
    print(f"{name} ({dtl_file}): {steps} steps, dtl {ours.seconds:.1f} s, "
          f"twin {theirs.seconds:.1f} s; worst relative differences:")
    c.print()
    return c


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=[*TWINS, "all"])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps (default: " +
                        ", ".join(f"{n} {s}" for n, (_, s) in TWINS.items()) + ")")
    parser.add_argument("--written-out-attention", action="store_true",
                        help="attention written out on dtl's [B, T, dim] layout instead of "
                        "nn.MultiheadAttention's forward (bit-identical to dtl)")
    args = parser.parse_args()
    cmp.require_binary(parser, args.dtl)
    kit.announce_sabotage()
    names = list(TWINS) if args.name == "all" else [args.name]
    comparisons = []
    for name in names:
        workdir = args.workdir / name if args.name == "all" else args.workdir
        comparisons.append(compare(name, args.dtl.resolve(), workdir, args.steps,
                                   written_out=args.written_out_attention))
    cmp.finish(comparisons)


if __name__ == "__main__":
    sys.exit(main())
