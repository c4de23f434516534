"""The zoo's ResNet-18, ResNet-50 and GPT-2 small (examples/zoo/) against
hand-written PyTorch modules with the published models' parameter names.

    python tests/reference/zoo.py DTL_BINARY WORKDIR [CASE ...]

CASE is resnet18, resnet50 or gpt2_small (default: all three). Each is
trained by dtl for a few steps from a variant of its zoo file, written into
WORKDIR/CASE/ (the zoo files name data that stands in for ImageNet or
OpenWebText and train for 100 steps at full size):

| case        | variant                                                        |
|-------------|----------------------------------------------------------------|
| resnet18    | the whole network (1000 classes), 64x64 images instead of     |
| resnet50    | 224x224: 32 seeded Gaussian images of 10 classes, a           |
|             | safetensors file written by this script; one SGD step (see     |
|             | resnet_variant for why not more)                               |
| gpt2_small  | width 48, 4 heads, 2 blocks, context 32, a vocabulary of 300;  |
|             | Moby-Dick's bytes as a uint16 token file                       |

The networks are written by hand, not read off dtl's plan:
torchvision's ResNet (BasicBlock; Bottleneck "v1.5", the stride in the 3x3
convolution; the 1x1 projection shortcut as `downsample.0`/`.1`; torchvision's
initialisation) and GPT-2 small as gpt2_small.dtl names it (wte, wpe, the
blocks as `1.N` of the `repeat`, ln_1, attn as nn.MultiheadAttention, ln_2,
mlp.c_fc, mlp.c_proj, ln_f, the output layer tied to wte).

For each case:

1. the twin's seeded initial weights go to `dtl run --init`, and both train
   the same steps (twin_kit.train): per-step loss, gradient norm and lr,
   the evaluation and every final parameter and buffer (batch-norm running
   statistics and counts included) within the model's TOLERANCES (10× the
   worst measured), as layers.py compares;
2. dtl's model.safetensors loads into a fresh twin with
   `safetensors.torch.load_model(..., strict=True)`: the names and shapes
   are torchvision's (GPT-2's: the file's); for GPT-2 the file holds the
   tied matrix once, as `wte.weight`;
3. that loaded twin, in eval mode (batch norm on dtl's running statistics,
   no dropout), is run on the held-out rows: its loss and accuracy must be
   dtl's final evaluation exactly (the same weights through the same
   kernels; measured equal).

Exits 0 when everything agrees, 1 with the mismatches listed, 2 on usage
errors. DTL_TWIN_SABOTAGE=zoo_relu (ResNet-18's BasicBlock with a ReLU
before the residual sum), zoo_stride (the ResNet-50 stride in the first 1x1
convolution, "v1") or zoo_untied (GPT-2's output layer a copy of wte)
makes the reference wrong: the run must then fail.
"""

import contextlib
import re
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_file
from torch import nn

# A quantity measured equal where the run is not bitwise: one float32
# rounding, 2^-23 (see layers.py).
F32 = 1.2e-7

# 10× the worst measured (2026-12-04, 2-core x86); the learning rate, the
# accuracy and dtl's own evaluation against its weights in the twin exactly.
TOLERANCES = {
    "resnet18": dict(loss=F32, grad_norm=F32, lr=0.0, eval_loss=F32, eval_accuracy=0.0,
                     weights=7.6e-7),
    "resnet50": dict(loss=F32, grad_norm=F32, lr=0.0, eval_loss=6.5e-7, eval_accuracy=0.0,
                     weights=1.8e-6),
    "gpt2_small": dict(loss=F32, grad_norm=7.6e-7, lr=0.0, eval_loss=F32, eval_accuracy=0.0,
                       weights=1.3e-5),
}
LOADED = 0.0  # dtl's evaluation vs its saved weights in the twin: the same kernels

ZOO = kit.REPO / "examples/zoo"

# The training steps of every variant (the zoo files' own optimizers).
SGD_ZOO = dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=1e-4)


# ---------------------------------------------------------------------------
# torchvision's ResNet, written out.
# ---------------------------------------------------------------------------
def conv3x3(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def conv1x1(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in, c, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(c_in, c, stride)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(c, c)
        self.bn2 = nn.BatchNorm2d(c)
        self.downsample = downsample

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        if kit.sabotaged("zoo_relu"):
            h = self.relu(h)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(h + shortcut)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck ("ResNet v1.5"): the stride is in conv2,
    the 3x3 convolution, not in conv1."""

    expansion = 4

    def __init__(self, c_in, w, stride=1, downsample=None):
        super().__init__()
        v1 = kit.sabotaged("zoo_stride")
        self.conv1 = conv1x1(c_in, w, stride if v1 else 1)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = conv3x3(w, w, 1 if v1 else stride)
        self.bn2 = nn.BatchNorm2d(w)
        self.conv3 = conv1x1(w, w * 4)
        self.bn3 = nn.BatchNorm2d(w * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(h + shortcut)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.c_in = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self.make_layer(block, 64, layers[0])
        self.layer2 = self.make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self.make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self.make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def make_layer(self, block, c, blocks, stride=1):
        downsample = None
        if stride != 1 or self.c_in != c * block.expansion:
            downsample = nn.Sequential(conv1x1(self.c_in, c * block.expansion, stride),
                                       nn.BatchNorm2d(c * block.expansion))
        layers = [block(self.c_in, c, stride, downsample)]
        self.c_in = c * block.expansion
        layers += [block(self.c_in, c) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18():
    return ResNet(BasicBlock, [2, 2, 2, 2])


def resnet50():
    return ResNet(Bottleneck, [3, 4, 6, 3])


# ---------------------------------------------------------------------------
# GPT-2 small as gpt2_small.dtl names it.
# ---------------------------------------------------------------------------
class Mlp(nn.Module):
    """c_fc |> gelu(approximate: "tanh") |> c_proj |> dropout(0.1)."""

    def __init__(self, d):
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)
        self.c_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        return F.dropout(
            self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")), 0.1, self.training
        )


class GptBlock(nn.Module):
    """a = x + dropout(attn(ln_1(x))); a + mlp(ln_2(a))."""

    def __init__(self, d, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = kit.SelfAttention(d, heads, causal=True)
        # nn.MultiheadAttention(batch_first=True) returns a transposed view of
        # its [T, B, d] result; dropout draws its mask in memory order, so
        # the dropout after it would mask other elements than dtl's (whose
        # attention output is contiguous) from the same seed. The written-out
        # form computes on dtl's [B, T, d] layout.
        self.attn.written_out = True
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = Mlp(d)

    def forward(self, x):
        a = x + F.dropout(self.attn(self.ln_1(x)), 0.1, self.training)
        return a + self.mlp(self.ln_2(a))


class Gpt2(nn.Module):
    """wte |> wpe |> dropout(0.1) |> repeat L { Block } |> ln_f |> tied(wte):
    the repeat is the body's inline stage 1 (the dropout is 0)."""

    def __init__(self, vocab, context, d, heads, layers):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = kit.PosEmbedding(context, d)
        self.ln_f = nn.LayerNorm(d)
        self.add_module("1", nn.Sequential(*[GptBlock(d, heads) for _ in range(layers)]))
        if kit.sabotaged("zoo_untied"):
            self.lm_head = nn.Linear(d, vocab, bias=False)
            with torch.no_grad():
                self.lm_head.weight.copy_(self.wte.weight)
            self.not_in_init = {"lm_head.weight"}

    def forward(self, x):
        h = F.dropout(self.wpe(self.wte(x)), 0.1, self.training)
        h = self.ln_f(self._modules["1"](h))
        if kit.sabotaged("zoo_untied"):
            return self.lm_head(h)
        return F.linear(h, self.wte.weight)


# ---------------------------------------------------------------------------
# The variants.
# ---------------------------------------------------------------------------
def replace(text, old, new, count=None):
    """`text` with `old` replaced, failing when it is not there (or not
    `count` times): a zoo file that changed must not slip through."""
    found = text.count(old)
    if found == 0 or (count is not None and found != count):
        sys.exit(f"zoo.py: the variant expected `{old}` {count or 'some'} time(s), "
                 f"found {found}: has the zoo file changed?")
    return text.replace(old, new)


def model_part(name):
    """The zoo file up to its data block: the network as published."""
    text = (ZOO / f"{name}.dtl").read_text()
    return text[: text.index("\ndata ")]


IMAGES = dict(rows=32, classes=10, size=64, seed=0)


def resnet_variant(name, folder):
    """The network with 64x64 inputs, on IMAGES, one SGD step of the zoo
    file's optimizer and clipping on a batch of 8.

    One step, because a second one is not determined by float32: from
    torchvision's initialisation on random labels the first gradient norm
    is 36 (ResNet-18) and 916 (ResNet-50), clipped to 5, and the step
    leaves batch-norm channels with tiny variances. Measured: dtl and the
    twin agree within 1e-7 after the first step, but the second step's
    gradient norm of the same twin in float32 and in float64 differs by
    1.5e-5 (ResNet-18) and 2.5e-2 (ResNet-50), as much as dtl differs from
    either."""
    g = torch.Generator().manual_seed(IMAGES["seed"])
    n, s = IMAGES["rows"], IMAGES["size"]
    features = torch.randn(n, 3, s, s, generator=g)
    labels = torch.randint(0, IMAGES["classes"], (n,), generator=g)
    save_file({"features": features, "labels": labels}, str(folder / "images.safetensors"))
    text = replace(model_part(name), "[B, 3, 224, 224]", f"[B, 3, {s}, {s}]", count=1)
    text += f"""
data images {{
  source = safetensors("images.safetensors", features: "features", labels: "labels")
  valid = 0.25
}}

train {{
  model = {"ResNet18" if name == "resnet18" else "ResNet50"}
  data = images
  loss = cross_entropy
  optimizer = sgd(lr: 0.1, momentum: 0.9, weight_decay: 1e-4)
  micro_batch = 8
  steps = 1
  clip = norm(5.0)
}}
"""
    (folder / f"{name}.dtl").write_text(text)
    data = kit.Data(features, labels, valid=0.25)
    recipe = kit.Recipe(steps=1, micro_batch=8, optimizer="sgd", lr=0.1,
                        optimizer_args=dict(SGD_ZOO), clip=("norm", 5.0, 2.0), seed=0)
    return data, recipe


GPT = dict(vocab=300, context=32, d=48, heads=4, layers=2)


def gpt2_variant(folder):
    """GPT at width 48 (GPT dict), on Moby-Dick's bytes as uint16 ids, 3
    AdamW steps with the zoo file's betas and weight decay."""
    raw = np.frombuffer((kit.REPO / "data/moby_dick_1-5.txt").read_bytes(), dtype=np.uint8)
    raw.astype("<u2").tofile(folder / "moby.u16.bin")
    text = model_part("gpt2_small")
    text = replace(text, "Block(768, 12)", f"Block({GPT['d']}, {GPT['heads']})", count=1)
    text = replace(text, "repeat 12", f"repeat {GPT['layers']}", count=1)
    text = replace(text, "768", str(GPT["d"]))
    text = replace(text, "50257", str(GPT["vocab"]))
    text = replace(text, "1024", str(GPT["context"]))
    if re.search(r"\b(768|50257|1024)\b", text):
        sys.exit("zoo.py: gpt2_small.dtl has widths the variant does not replace")
    text += f"""
data book {{
  source = tokens("moby.u16.bin", context: {GPT['context']}, dtype: "uint16")
  valid = 0.05
}}

train {{
  model = GPT2
  data = book
  loss = cross_entropy
  optimizer = adamw(lr: 6e-4, betas: [0.9, 0.95], weight_decay: 0.1)
  micro_batch = 4
  steps = 3
  clip = norm(1.0)
}}
"""
    (folder / "gpt2_small.dtl").write_text(text)
    data = kit.token_file(folder / "moby.u16.bin", "uint16", context=GPT["context"],
                          valid=0.05)
    recipe = kit.Recipe(steps=3, micro_batch=4, optimizer="adamw", lr=6e-4,
                        optimizer_args=dict(betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1),
                        clip=("norm", 1.0, 2.0), seed=0)
    return data, recipe


CASES = {
    "resnet18": (resnet18, lambda folder: resnet_variant("resnet18", folder)),
    "resnet50": (resnet50, lambda folder: resnet_variant("resnet50", folder)),
    "gpt2_small": (lambda: Gpt2(**GPT), gpt2_variant),
}


def held_out(data, recipe):
    """The held-out rows or windows, as the training loop splits them."""
    _, x, y = kit.batch_stream(data, recipe)
    return x, y


def compare(name, binary, workdir):
    build, variant = CASES[name]
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    data, recipe = variant(folder)
    torch.manual_seed(recipe.seed)
    model = build()
    init = folder / "init.safetensors"
    kit.save_init(model, init)
    ours = cmp.run_dtl(binary, folder / f"{name}.dtl", folder / "dtl", init=init)
    theirs = kit.train(model, data, recipe)
    c = cmp.Comparison(name)
    tolerance = TOLERANCES[name]
    cmp.compare_steps(c, ours.steps, theirs.steps, tolerance)
    cmp.compare_evals(c, ours.evals, theirs.evals, tolerance)
    saved = ours.out / "model.safetensors"
    cmp.compare_weights(c, cmp.read_safetensors(saved), theirs.state, tolerance,
                        loose=cmp.key_bias_slices(model))
    # dtl's weights in a fresh twin, strictly, then its eval-mode forward
    # on the held-out rows against dtl's last evaluation.
    fresh = build()
    try:
        load_model(fresh, str(saved), strict=True)
    except RuntimeError as e:
        c.fail(f"model.safetensors does not load strictly: {e}")
        return report(c, name)
    x, y = held_out(data, recipe)
    loaded = kit.evaluate(fresh, recipe, x, y, ours.evals[-1]["step"], contextlib.nullcontext)
    last = ours.evals[-1]
    c.check("loaded_loss", cmp.relative(last["eval_loss"], loaded["eval_loss"]),
            f"dtl {last['eval_loss']!r} vs its weights in the twin {loaded['eval_loss']!r}",
            LOADED)
    c.check("loaded_acc", abs(last["eval_accuracy"] - loaded["eval_accuracy"]),
            f"dtl {last['eval_accuracy']!r} vs {loaded['eval_accuracy']!r}", LOADED)
    if name == "gpt2_small":
        names = set(cmp.read_safetensors(saved))
        if "wte.weight" not in names or "lm_head.weight" in names:
            c.fail(f"the tie is not one tensor `wte.weight`: {sorted(names)[:5]}…")
    return report(c, name)


COLUMNS = ("loss", "grad_norm", "eval_loss", "weights", "loaded_loss")


def report(c, name):
    worst = {quantity: value for quantity, value, _, _ in c.rows}
    print(f"{name:<12}" + "".join(f" {worst.get(q, float('nan')):>11.2e}" for q in COLUMNS)
          + f"  {'ok' if not c.failures else 'MISMATCH'}")
    return c


def main():
    args = kit.case_arguments(__doc__, CASES, "models")
    print(f"{'model':<12}" + "".join(f" {q:>11}" for q in COLUMNS)
          + "  (worst relative differences; tolerances in TOLERANCES)")
    comparisons = [compare(name, args.dtl.resolve(), args.workdir)
                   for name in (args.cases or CASES)]
    for c in comparisons:
        if c.failures:
            print(f"\n{c.name}:")
            c.print()
    cmp.finish(comparisons)


if __name__ == "__main__":
    sys.exit(main())
