"""What every hand-written PyTorch twin of a dtl experiment needs besides its
network: the layers torch.nn lacks, the data as the `data` block describes
it and the training loop as docs/language.md describes the `train` block.
Running `dtl run` and comparing the two runs is comparison.py.

Nothing here reads a dtl plan. The twins (twins.py, layers.py, bf16.py)
spell out every constant of their `.dtl` file by hand — widths, learning
rate, betas, clipping, schedule, batch sizes, seed — and this module turns
those constants into a PyTorch run: torch.optim's optimizers,
torch.nn.utils' clipping, F.cross_entropy, the learning rate of every step
from the formulas of the language reference. The one thing shared with dtl
is its seeded order of rows and dropout seeds (dtl_order.py), without which
no reference could draw the same batches.

The training loop, per optimizer step k (from 1), as the language reference
lays it out:

    torch.manual_seed(dropout_seed(seed, k))
    for each of `accumulate` micro-batches:
        loss = loss_fn(model(x), y) * (1 / accumulate); loss.backward()
        the step's loss += loss.item()
    grad_norm = the global norm before clipping (clip_grad_norm_'s return
                value for `norm(...)`, else the L2 norm of the gradients)
    clip (clip_grad_norm_ / clip_grad_value_), optimizer.step() at lr(k),
    zero_grad()

and at the last step (and every `eval_every`) an evaluation over the
held-out rows with the network in eval mode (dropout off, batch norm on its
running statistics): the summed loss over every target divided by their
number, and the fraction of arg-max hits.
"""

import os

# Reproducible CPU arithmetic: one thread, as `dtl run` uses MKL.
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib  # noqa: E402
import gzip  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

import dtl_order  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------
# Self-check of the comparisons: DTL_TWIN_SABOTAGE=name[,name...] makes the
# twin deliberately wrong, so that a run shows the comparison fails. Never
# set in CI.
# ---------------------------------------------------------------------------
SABOTAGE = {s for s in os.environ.get("DTL_TWIN_SABOTAGE", "").split(",") if s}
SABOTAGES = {
    "weight_decay": "the optimizer's weight decay doubled",
    "beta2": "Adam's beta2 set to 0.99 instead of the file's",
    "dropout": "dropout p doubled (or 0.1 where the file has none)",
    "noclip": "no gradient clipping",
    "lr": "the learning rate 0.1% higher",
    "momentum": "batch norm momentum 0.2 instead of 0.1",
    "fp32": "(bf16.py) the references trained in float32, no autocast",
    "dtype": "(bf16.py) one tensor of dtl's checkpoint/state.safetensors rewritten as bfloat16",
    "noscale": "(fp16.py) the twin trains without a GradScaler",
    "unfrozen": "(freeze.py) the twin trains every parameter, the frozen ones too",
    "one_group": "(groups.py) the twin puts every parameter in one group, as without `groups`",
    "world_sum": "(ddp.py) gradients summed over the replicas, not averaged",
    "same_rows": "(ddp.py) every replica reads the first rows of each global micro-batch",
    "local_clip": "(ddp.py) each replica clips its own gradients before they are averaged",
    "sync_every": "(ddp.py) DDP all-reduces every micro-step (no no_sync): a different sum, "
                  "seen only by the exact AdamW comparison",
    "trace": "(ddp.py) one weight hash of dtl's rank-1.trace.jsonl read as 0000000000000000",
    "swiglu": "(layers.py) SwiGLU's silu on the up projection instead of the gate",
    "nesterov": "(layers.py) plain momentum instead of Nesterov's (resmlp_nesterov)",
    "mse": "(layers.py) cross_entropy instead of the mean squared error (regression_mse)",
    "rope": "(layers.py) no rotary position embeddings",
    "rope_theta": "(layers.py) rope_theta the default 10000 instead of the file's",
    "gqa_repeat": "(layers.py) key/value heads tiled (repeat) instead of each serving "
                  "consecutive query heads (repeat_interleave)",
    "untied": "(layers.py) the output layer a copy of the embedding, trained on its own",
    "class_token_end": "(layers.py) the class token put after the sequence, not before it",
    "mean_patches": "(layers.py) the mean over the patches only, not the class token",
    "token_offsets": "(layers.py) random token windows only at multiples of the context",
    "token_split": "(layers.py) the first token windows held out instead of the last",
    "token_wrap": "(layers.py) in-order token windows run on into the windows an epoch skips",
    "leaky_slope": "(layers.py) the first leaky_relu's slope 0.1 instead of 0.2 (conv_groups_lion)",
    "cycle_momentum": "(layers.py) OneCycleLR's default momentum cycling (Lion's β1) left on",
    "align_corners": "(layers.py) bilinear upsampling without align_corners (upsample_nll_adafactor)",
    "hf_warmup": "(layers.py) constant_with_warmup one step ahead: (s + 1) / warmup",
    "lion_order": "(layers.py) Lion's momentum updated before the sign is taken, not after",
    "pos_weight": "(layers.py) binary_cross_entropy without its pos_weight (bce_multilabel)",
    "adafactor_d": "(layers.py) Adafactor's clipping threshold d the default 1 (bce_multilabel)",
    "huber_delta": "(layers.py) the Huber loss at delta 1, not the file's (huber_regression)",
    "crop_swap": "(images.py) each random crop's top and left offsets swapped",
    "zoo_relu": "(zoo.py) ResNet-18's BasicBlock with a ReLU before the residual sum",
    "zoo_stride": "(zoo.py) ResNet-50's stride in the first 1x1 convolution (v1), not the 3x3",
    "zoo_untied": "(zoo.py) GPT-2's output layer a copy of wte, trained on its own",
    "plain_momentum": "(diloco.py) the outer SGD's momentum without Nesterov",
    "no_outer_lr": "(diloco.py) the outer SGD at lr 1, not the file's outer_lr",
    "no_delay": "(diloco.py) streaming DiLoCo's changes land at once, not a step later",
    "fp32_changes": "(diloco.py) streaming DiLoCo's changes summed in float32, not bfloat16",
}


def sabotaged(name):
    """True when the self-check asks the twin to get `name` wrong."""
    assert name in SABOTAGES, name
    return name in SABOTAGE


def case_arguments(doc, cases, what):
    """The command line of a twin script (`DTL WORKDIR [CASE ...]`, every
    case by default), checked: the binary exists, the cases are known; then
    any sabotage asked for is announced."""
    import argparse
    import comparison as cmp

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help=f"{what} to run (default: all): " + ", ".join(cases))
    args = parser.parse_args()
    unknown = [c for c in args.cases if c not in cases]
    if unknown:
        parser.error(f"unknown case {unknown}; the cases are {', '.join(cases)}")
    cmp.require_binary(parser, args.dtl)
    announce_sabotage()
    return args


def announce_sabotage():
    unknown = SABOTAGE - SABOTAGES.keys()
    if unknown:
        sys.exit(f"DTL_TWIN_SABOTAGE: unknown {sorted(unknown)}; known: {sorted(SABOTAGES)}")
    for name in sorted(SABOTAGE):
        print(f"!! DTL_TWIN_SABOTAGE: {SABOTAGES[name]} — this run must FAIL")


# ---------------------------------------------------------------------------
# Layers of the language that torch.nn has no module for.
# ---------------------------------------------------------------------------
class PosEmbedding(nn.Module):
    """`pos_embedding(max_len, dim)`: a learned vector per position added to
    [B, T, dim], T ≤ max_len; weight [max_len, dim] ~ N(0, 0.02²)."""

    def __init__(self, max_len, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        return x + self.weight[: x.shape[1]]


class SelfAttention(nn.MultiheadAttention):
    """`attention(dim, heads, causal: false)` as a stage: multi-head
    self-attention of [B, T, dim], which the language defines as
    nn.MultiheadAttention (batch_first) of x with itself; a causal mask
    keeps each position from the ones after it."""

    def __init__(self, dim, heads, causal=False):
        super().__init__(dim, heads, batch_first=True)
        self.causal = causal
        self.written_out = False  # see forward_written_out

    def forward(self, x):
        if self.written_out:
            return self.forward_written_out(x)
        mask = None
        if self.causal:
            mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        return super().forward(x, x, x, need_weights=False, attn_mask=mask,
                               is_causal=self.causal)[0]

    def forward_written_out(self, x):
        """The same attention written out from its definition, on the
        [B, T, dim] layout: q, k, v = the in-projection's three chunks, each
        split into heads, scaled dot-product attention per head, the heads
        joined and projected out.

        nn.MultiheadAttention computes this on a [T, B, dim] layout, whose
        matrix products round differently in the last bit (the ~3e-7 per
        step of twins.py). Under bf16 such last-bit differences flip
        bfloat16 roundings and grow over a few steps into 1e-3, which would
        hide a real difference; bf16.py therefore uses this form, and checks
        it against nn.MultiheadAttention's own forward in float64
        (attention_forms_agree)."""
        b, t, d = x.shape
        heads = self.num_heads
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        y = y.transpose(1, 2).reshape(b, t, d)
        return F.linear(y, self.out_proj.weight, self.out_proj.bias)


class GroupedAttention(nn.Module):
    """`attention(dim, heads, causal, kv_heads, bias, rope, rope_theta)` in
    full, written from the language reference: `in_proj_weight` [rows, dim]
    holds the query rows (heads · head_dim), then the key rows and the value
    rows (kv_heads · head_dim each), rows = (heads + 2 kv_heads) head_dim,
    Xavier-uniform; `in_proj_bias` [rows] zeros and `out_proj` an
    nn.Linear(dim, dim) with a zero bias, both only with `bias`.

    Each key/value head serves heads / kv_heads consecutive query heads
    (repeat_interleave on the head dimension); with `rope` queries and keys
    are rotated as Hugging Face's LLaMA rotates them (rotate-half, inverse
    frequencies theta^(−2i/head_dim) in float32)."""

    def __init__(self, dim, heads, causal=False, kv_heads=0, bias=True, rope=False,
                 rope_theta=10000.0):
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads or heads
        self.head_dim = dim // heads
        self.causal, self.rope, self.rope_theta = causal, rope, rope_theta
        rows = (heads + 2 * self.kv_heads) * self.head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(rows, dim))
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(rows))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(dim, dim, bias=bias)  # U(±1/√dim), as PyTorch's
        if bias:
            nn.init.zeros_(self.out_proj.bias)

    def rope_tables(self, t):
        """cos and sin of position × inverse frequency, [t, head_dim], each
        frequency twice (Hugging Face's LlamaRotaryEmbedding)."""
        hd = self.head_dim
        theta = 10000.0 if sabotaged("rope_theta") else self.rope_theta
        inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
        angles = torch.outer(torch.arange(t).float(), inv_freq)
        emb = torch.cat([angles, angles], dim=-1)
        return emb.cos(), emb.sin()

    @staticmethod
    def rotate_half(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([-x2, x1], dim=-1)

    def forward(self, x):
        b, t, d = x.shape
        h, kv, hd = self.heads, self.kv_heads, self.head_dim
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.split([h * hd, kv * hd, kv * hd], dim=-1)
        q = q.reshape(b, t, h, hd).transpose(1, 2)
        k = k.reshape(b, t, kv, hd).transpose(1, 2)
        v = v.reshape(b, t, kv, hd).transpose(1, 2)
        if self.rope and not sabotaged("rope"):
            cos, sin = self.rope_tables(t)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
        if kv != h:
            if sabotaged("gqa_repeat"):
                k, v = k.repeat(1, h // kv, 1, 1), v.repeat(1, h // kv, 1, 1)
            else:
                k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class ClassToken(nn.Module):
    """`class_token(dim)`: a learned vector (`weight` [1, 1, dim], zeros)
    put before the sequence, [B, T, dim] → [B, T + 1, dim]."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x):
        token = self.weight.expand(x.shape[0], 1, x.shape[2])
        if sabotaged("class_token_end"):
            return torch.cat([x, token], dim=1)
        return torch.cat([token, x], dim=1)


def attention_forms_agree():
    """max relative difference, in float64, between nn.MultiheadAttention's
    forward and SelfAttention.forward_written_out (random weights and input,
    causal and not, biases non-zero)."""
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for causal in (False, True):
        attention = SelfAttention(16, 4, causal).double()
        with torch.no_grad():
            for p in attention.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
        x = torch.randn(3, 7, 16, generator=generator, dtype=torch.float64)
        reference = attention(x)
        attention.written_out = True
        written = attention(x)
        worst = max(worst, ((written - reference).abs().max() / reference.abs().max()).item())
    return worst


# ---------------------------------------------------------------------------
# Data, as the data block describes it.
# ---------------------------------------------------------------------------
@dataclass
class Data:
    """Every row of a data source in file order, plus the split settings."""

    features: torch.Tensor  # [rows, *shape]
    targets: torch.Tensor  # [rows] or [rows, T] class indices
    valid: float = 0.2
    shuffle: bool = True
    # f(x, epoch, place of x[0] in the epoch) -> x: training rows' random
    # transforms (images.py); f(x) -> x: every row's normalisation.
    augment: object = None
    normalize: object = None


def csv_source(path, label=-1, header=False, target="class"):
    """A numeric CSV (gzip when the name ends in .gz): features as float32
    and the label column as int64 classes, or with `target = "float"` as
    float32 values [rows, 1]."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", skiprows=1 if header else 0, ndmin=2)
    label = label % table.shape[1]
    features = np.delete(table, label, axis=1).astype(np.float32)
    if target == "float":
        return torch.from_numpy(features), torch.from_numpy(
            table[:, label:label + 1].astype(np.float32))
    return torch.from_numpy(features), torch.from_numpy(table[:, label].astype(np.int64))


@dataclass
class TokenData:
    """A token file (`tokens(path, context, dtype)`): the ids in file order."""

    tokens: torch.Tensor  # [n] int64
    context: int
    valid: float = 0.2
    shuffle: bool = True

    def layout(self):
        """(training windows, the token they start at, the held-out windows'
        starts): of the (n − 1) // T windows the last round(windows · valid)
        are held out, window i starting at token i · T."""
        t = self.context
        windows = (len(self.tokens) - 1) // t
        held = dtl_order.held_out(windows, self.valid)
        train = windows - held
        if sabotaged("token_split"):
            return train, held * t, [i * t for i in range(held)]
        return train, 0, [(train + i) * t for i in range(held)]

    def windows(self, starts):
        """Inputs tokens[s : s+T] and targets tokens[s+1 : s+T+1] for each
        start s: [n, T] int64 each."""
        t = self.context
        if not starts:
            return torch.zeros(0, t, dtype=torch.int64), torch.zeros(0, t, dtype=torch.int64)
        rows = torch.stack([self.tokens[s: s + t + 1] for s in starts])
        return rows[:, :t], rows[:, 1:]


def token_file(path, dtype, context, valid, shuffle=True):
    """A flat little-endian file of token ids (nanoGPT's train.bin)."""
    ids = np.fromfile(path, dtype={"uint16": "<u2", "uint32": "<u4"}[dtype])
    return TokenData(torch.from_numpy(ids.astype(np.int64)), context, valid, shuffle)


def digits(shape, scale, valid, shuffle=True):
    """data/digits.csv.gz: 64 pixel columns then the digit; `scale`
    multiplies every feature (in float32, as a tensor times a scalar),
    `shape` lays a row out."""
    x, y = csv_source(REPO / "data/digits.csv.gz")
    return Data((x * scale).reshape([-1] + list(shape)), y, valid, shuffle)


def text_windows(path, context, encoding, valid, shuffle=True):
    """A text cut into windows of `context` tokens: row i reads tokens
    [iT, iT+T) and predicts [iT+1, iT+T+1). Tokens are characters numbered in
    code-point order (`chars`) or bytes (`bytes`, 256 classes)."""
    raw = Path(path).read_bytes()
    if encoding == "bytes":
        ids = list(raw)
    else:
        text = raw.decode("utf-8")
        vocab = sorted(set(text))
        number = {c: i for i, c in enumerate(vocab)}
        ids = [number[c] for c in text]
    rows = (len(ids) - 1) // context
    tokens = torch.tensor(ids[: rows * context + 1], dtype=torch.int64)
    x = tokens[: rows * context].reshape(rows, context)
    y = tokens[1: rows * context + 1].reshape(rows, context)
    return Data(x, y, valid, shuffle)


# ---------------------------------------------------------------------------
# The train block.
# ---------------------------------------------------------------------------
@dataclass
class Recipe:
    """A train block's settings, every default spelt out by the twin."""

    steps: int
    micro_batch: int
    optimizer: str  # "sgd" | "adam" | "adamw" | "lion" | "adafactor"
    lr: float
    optimizer_args: dict  # the remaining arguments, defaults included
    accumulate: int = 1
    warmup: int = 0
    # ("constant",) | ("step", every, gamma) | ("cosine", min_lr) | ("linear", end_factor)
    # | ("one_cycle", dict of OneCycleLR's arguments) | ("constant_with_warmup", steps)
    schedule: tuple = ("constant",)
    clip: tuple = None  # None | ("norm", max, p), p = 2.0 or math.inf | ("value", v)
    label_smoothing: float = 0.0
    # "cross_entropy" | "mse" | "nll" | "binary_cross_entropy" | "huber" | "smooth_l1"
    loss: str = "cross_entropy"
    loss_args: dict = None  # pos_weight, delta, beta
    seed: int = 0
    eval_every: int = 0

    def __post_init__(self):
        """Applies the self-check's deliberate mistakes (see SABOTAGES)."""
        args = self.optimizer_args
        if sabotaged("weight_decay"):
            args["weight_decay"] = 2 * args.get("weight_decay", 0.0) or 0.01
        if sabotaged("beta2") and "betas" in args:
            args["betas"] = (args["betas"][0], 0.99)
        if sabotaged("noclip"):
            self.clip = None
        if sabotaged("lr"):
            self.lr *= 1.001


def lr_at(recipe, k):
    """docs/language.md, "Learning-rate schedules": step k (from 1) uses
    lr·k/warmup during the warm-up; after it, with t = k − warmup − 1 and
    T = steps − warmup, the decay's formula."""
    lr, warmup = recipe.lr, recipe.warmup
    if k <= warmup:
        return lr * k / warmup
    t = k - warmup - 1
    total = max(recipe.steps - warmup, 1)
    kind = recipe.schedule[0]
    if kind == "constant":
        return lr
    if kind == "step":
        _, every, gamma = recipe.schedule
        return lr * gamma ** (t // every)
    if kind == "cosine":
        min_lr = recipe.schedule[1]
        return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * t / total)) / 2
    if kind == "linear":
        end = recipe.schedule[1]
        return lr * (1 - (1 - end) * t / total)
    raise ValueError(recipe.schedule)


class PaperLion(torch.optim.Optimizer):
    """Lion as Chen et al. 2023 write it (Algorithm 2), every product and sum
    its own tensor operation, the momentum m starting at zero:

        c = β1·m + (1 − β1)·g
        p ← p·(1 − lr·λ) − lr·sign(c)        (λ: weight_decay)
        m ← β2·m + (1 − β2)·g

    torch.optim has no Lion; this is written from the paper, not from dtl."""

    def __init__(self, params, lr, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "m" not in state:
                    state["m"] = torch.zeros_like(p)
                m = state["m"]
                if sabotaged("lion_order"):
                    m.copy_(beta2 * m + (1 - beta2) * g)
                c = beta1 * m + (1 - beta1) * g
                p.mul_(1 - lr * wd)
                p.sub_(lr * torch.sign(c))
                if not sabotaged("lion_order"):
                    m.copy_(beta2 * m + (1 - beta2) * g)


def make_optimizer(recipe, params):
    """torch.optim's optimizer (Lion: PaperLion); foreach=False picks the
    single-tensor code path (what PyTorch uses on CPU anyway), whose
    rounding dtl reproduces."""
    if recipe.optimizer == "lion":
        return PaperLion(params, lr=recipe.lr, **recipe.optimizer_args)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "adafactor": torch.optim.Adafactor}
    return cls[recipe.optimizer](params, lr=recipe.lr, foreach=False, **recipe.optimizer_args)


def make_scheduler(recipe, optimizer):
    """PyTorch's scheduler for the schedules docs/language.md defines as
    one (None for those lr_at computes): OneCycleLR with the optimizer's lr
    as max_lr, over all the steps, without momentum cycling; Hugging Face's
    get_constant_schedule_with_warmup as the LambdaLR it is
    (transformers/optimization.py): step s (from 0) scaled by s / warmup
    below warmup, else 1."""
    kind = recipe.schedule[0]
    if kind == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=recipe.steps,
            cycle_momentum=sabotaged("cycle_momentum"), **recipe.schedule[1])
    if kind == "constant_with_warmup":
        warmup = recipe.schedule[1]

        def lr_lambda(current_step):
            if sabotaged("hf_warmup"):
                current_step += 1
            if current_step < warmup:
                return float(current_step) / float(max(1.0, warmup))
            return 1.0

        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    return None


CLASS_LOSSES = ("cross_entropy", "nll")


def loss_fn(recipe, output, target, reduction="mean"):
    """cross_entropy or the negative log-likelihood over every predicted
    label ([B, ..., C] against [B, ...]); the mean squared error, binary
    cross-entropy on logits, Huber or smooth L1 of real-valued targets
    ([B, *t] against [B, *t])."""
    args = recipe.loss_args or {}
    output = output.float()
    if recipe.loss == "mse":
        return F.mse_loss(output, target, reduction=reduction)
    if recipe.loss == "binary_cross_entropy":
        pos_weight = args.get("pos_weight")
        if sabotaged("pos_weight"):
            pos_weight = None
        if pos_weight is not None:
            pos_weight = torch.tensor(pos_weight, dtype=torch.float32)
        return F.binary_cross_entropy_with_logits(output, target, pos_weight=pos_weight,
                                                  reduction=reduction)
    if recipe.loss == "huber":
        delta = 1.0 if sabotaged("huber_delta") else args["delta"]
        return F.huber_loss(output, target, delta=delta, reduction=reduction)
    if recipe.loss == "smooth_l1":
        return F.smooth_l1_loss(output, target, beta=args["beta"], reduction=reduction)
    classes = output.shape[-1]
    if recipe.loss == "nll":
        return F.nll_loss(output.reshape(-1, classes), target.reshape(-1), reduction=reduction)
    return F.cross_entropy(output.reshape(-1, classes), target.reshape(-1),
                           label_smoothing=recipe.label_smoothing, reduction=reduction)


@dataclass
class TwinRun:
    steps: list  # per step: {"step", "loss", "lr", "grad_norm"}
    evals: list  # {"step", "eval_loss", "eval_accuracy", "eval_rows"}
    state: dict  # the final state_dict
    seconds: float


def evaluate(model, recipe, x, y, step, autocast):
    """Mean loss over every held-out target and arg-max accuracy (none for
    real-valued targets)."""
    model.eval()
    with torch.no_grad(), autocast():
        out = model(x).float()
        total = loss_fn(recipe, out, y, reduction="sum")
        hits = (out.argmax(-1) == y).sum().item() if recipe.loss in CLASS_LOSSES else None
    model.train()
    return {"step": step, "eval_loss": total.item() / y.numel(),
            "eval_accuracy": None if hits is None else hits / y.numel(),
            "eval_rows": x.shape[0]}


def batch_stream(data, recipe):
    """(a function giving the next training micro-batch (x, y), the held-out
    x, the held-out y), for a table (Data) or a token file (TokenData)."""
    if isinstance(data, TokenData):
        train_windows, first, valid_starts = data.layout()
        order = dtl_order.TokenOrder(train_windows, data.context, recipe.micro_batch,
                                     recipe.seed, data.shuffle)
        read = itertools.count()  # windows read so far, for the token_wrap sabotage

        def next_windows():
            starts = order.next()
            if sabotaged("token_offsets"):
                starts = [s - s % data.context for s in starts]
            if sabotaged("token_wrap") and not data.shuffle:
                starts = [next(read) % train_windows * data.context for _ in starts]
            return data.windows([first + s for s in starts])

        return (next_windows, *data.windows(valid_starts))
    train_rows, valid_rows = dtl_order.split(len(data.targets), data.valid, recipe.seed,
                                             data.shuffle)
    x_train, y_train = data.features[train_rows], data.targets[train_rows]
    batches = dtl_order.BatchOrder(len(train_rows), recipe.micro_batch, recipe.seed,
                                   data.shuffle)

    def next_rows():
        idx = torch.tensor(batches.next())
        x = x_train[idx]
        if data.augment is not None:
            x = data.augment(x, batches.epoch, batches.position - recipe.micro_batch)
        return normalize(x), y_train[idx]

    def normalize(x):
        return x if data.normalize is None else data.normalize(x)

    return next_rows, normalize(data.features[valid_rows]), data.targets[valid_rows]


def train(model, data, recipe, autocast=contextlib.nullcontext, scaler=None, groups=None):
    """Trains `model` as `dtl run` trains its file; `autocast` wraps every
    forward pass (bf16.py, fp16.py); `scaler`, a torch.amp.GradScaler,
    scales the losses and unscales the gradients before clipping, skips the
    steps whose gradients overflow and moves its scale (fp16.py); `groups`,
    torch.optim parameter groups (a dict each, with an `lr_scale` that
    multiplies the step's rate) instead of every parameter in one
    (groups.py)."""
    started = time.perf_counter()
    next_batch, x_valid, y_valid = batch_stream(data, recipe)
    params = list(model.parameters())
    optimizer = make_optimizer(recipe, groups if groups is not None else params)
    scheduler = make_scheduler(recipe, optimizer)
    model.train()
    steps, evals = [], []
    for k in range(1, recipe.steps + 1):
        torch.manual_seed(dtl_order.dropout_seed(recipe.seed, k))
        loss_sum = 0.0
        for _ in range(recipe.accumulate):
            x, y = next_batch()
            with autocast():
                out = model(x)
            loss = loss_fn(recipe, out, y) * (1.0 / recipe.accumulate)
            (scaler.scale(loss) if scaler else loss).backward()
            loss_sum += loss.item()
        scale = None
        if scaler:
            scale = scaler.get_scale()
            scaler.unscale_(optimizer)
        grads = [p.grad for p in params if p.grad is not None]
        if recipe.clip and recipe.clip[0] == "norm":
            _, max_norm, norm_type = recipe.clip
            grad_norm = nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type).item()
        else:
            grad_norm = nn.utils.get_total_norm(grads, 2.0).item()
            if recipe.clip:
                nn.utils.clip_grad_value_(params, recipe.clip[1])
        if scheduler is None:
            lr = lr_at(recipe, k)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
        else:
            lr = optimizer.param_groups[0]["lr"]
        record = {"step": k, "loss": loss_sum, "lr": lr, "grad_norm": grad_norm}
        if scaler:
            scaler.step(optimizer)
            scaler.update()
            record["loss_scale"] = scale
            if scaler.get_scale() < scale:
                record["skipped"] = True
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad()
        steps.append(record)
        if (recipe.eval_every and k % recipe.eval_every == 0) or k == recipe.steps:
            if len(y_valid):
                evals.append(evaluate(model, recipe, x_valid, y_valid, k, autocast))
    state = {n: t.detach().clone() for n, t in model.state_dict().items()}
    return TwinRun(steps, evals, state, time.perf_counter() - started)


def save_init(model, path):
    """The twin's initial state_dict (PyTorch's seeded initialisers) as
    safetensors, for `dtl run --init`; without the tensors a sabotaged twin
    names in `not_in_init` (which dtl would refuse as unknown)."""
    skip = getattr(model, "not_in_init", ())
    save_file({n: t.detach().clone().contiguous() for n, t in model.state_dict().items()
               if n not in skip}, str(path))
