"""The PyTorch side of benches/gpu_vs_pytorch.py for examples/gpu/gpt_char.dtl:
the same GPT-style character model written by hand in torch.nn, trained as
`dtl run` trains the file, in eager mode or under torch.compile; prints its
training speed as JSON.

    python gpt_char_torch.py [--device cuda|cpu] [--precision fp32|tf32|bf16] [--compile]
                             [--steps 300] [--micro-batch 32] [--skip 10]
                             [--init W.safetensors] [--threads N]
    python gpt_char_torch.py --write-init W.safetensors
    python gpt_char_torch.py --check-plan PLAN.json

Everything is spelt out from the .dtl file, nothing read from dtl's plan:
embedding(70, 512) |> pos_embedding(256, 512) |> 6 pre-norm blocks (layer
norm, causal attention with 8 heads, layer norm, linear(512, 2048) |> gelu
|> linear(2048, 512), each with its residual sum) |> layer_norm(512) |>
linear(512, 70); Moby-Dick cut into windows of 256 characters (70 of them,
code-point order), 10% held out; AdamW (lr 6e-4, betas (0.9, 0.999), eps
1e-8, weight decay 0.01, PyTorch's default implementation for the device:
foreach on CUDA, single-tensor on CPU); micro_batch 32, accumulate 1,
clip_grad_norm_(1.0); seed 0. The parameters carry dtl's names (the
language reference defines them as the state_dict names of this nesting:
`0.weight`, `1.weight`, `2.K.norm1.weight`, `2.K.attn.in_proj_weight`, …,
`4.bias`), so weights move both ways: `--write-init` saves PyTorch's seeded
initialisers for `dtl run --init`, `--init` loads such a file (or a dtl
run's model.safetensors) with strict=True.

Attention is written out as dtl computes it (runtime/src/ops.rs): one
packed input projection, the heads split on the [B, T, dim] layout,
F.scaled_dot_product_attention(is_causal=True) (flash attention on a
recent GPU), the heads joined and projected out.

Batches: dtl's seeded split and epoch order (tests/reference/dtl_order.py),
so both tools read the same windows in the same order; from the same
initial weights the first step's loss must agree (the driver prints both).
Each batch is indexed on the CPU and copied to the device, as dtl's data
loader hands batches over.

`--precision tf32` sets torch.backends.cuda.matmul.fp32_precision = "tf32"
on CUDA, as dtl's `precision = tf32` does.

The loop, per step: the batch, forward (under torch.autocast(bfloat16) with
`--precision bf16`, PyTorch's mixed precision as a user writes it; dtl's
bf16 keeps activations between layers in float32, see benches/README.md),
cross-entropy on float32 logits over every position, backward, the loss
read (`.item()`), clip_grad_norm_ with its norm read (dtl writes both to
metrics.jsonl every step), optimizer step, zero_grad. No dropout, so no
per-step reseeding. `--compile` wraps the model (not the loss or the
optimizer) in torch.compile with its defaults.

Only the training loop is timed, as dtl times its own: from before the
first step's batch to the end of the last step (a device synchronisation
included). The first steps of a compiled model compile it; `--skip N`
reports, besides the all-steps figure, the steady rate over the steps after
the first N.

Prints one line: {"steps", "train_seconds", "steps_per_second",
"steady_steps_per_second", "skip", "first_step_seconds", "first_loss",
"final_loss", "device", "precision", "compile", "micro_batch",
"parameters", "threads", "cuda_max_allocated_bytes"}.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reference"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
try:
    from safetensors.torch import load_file, save_file  # noqa: E402
except ImportError:  # a GPU machine's bare Python: float32 tensors by hand
    def save_file(tensors, path):
        header, offset, blobs = {}, 0, []
        for name, t in tensors.items():
            blob = t.detach().float().contiguous().cpu().numpy().tobytes()
            header[name] = {"dtype": "F32", "shape": list(t.shape),
                            "data_offsets": [offset, offset + len(blob)]}
            offset += len(blob)
            blobs.append(blob)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        with open(path, "wb") as f:
            f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))

    def load_file(path):
        data = Path(path).read_bytes()
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] != "F32":
                raise SystemExit(f"{path}: {name} is {info['dtype']}, not F32")
            start, end = (8 + size + o for o in info["data_offsets"])
            out[name] = torch.frombuffer(bytearray(data[start:end]),
                                         dtype=torch.float32).reshape(info["shape"])
        return out
from torch import nn  # noqa: E402

import dtl_order  # noqa: E402

# The .dtl file's constants.
TEXT = ROOT / "data" / "moby_dick_1-5.txt"
VOCABULARY, CONTEXT, WIDTH, HEADS, LAYERS = 70, 256, 512, 8, 6
HIDDEN = 4 * WIDTH
VALID = 0.1
LR, BETAS, EPS, WEIGHT_DECAY = 6e-4, (0.9, 0.999), 1e-8, 0.01
MICRO_BATCH, STEPS, CLIP, SEED = 32, 300, 1.0, 0


class PosEmbedding(nn.Module):
    """`pos_embedding(max_len, dim)`: a learned vector per position added to
    [B, T, dim]; weight [max_len, dim] ~ N(0, 0.02²)."""

    def __init__(self, max_len, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        return x + self.weight[: x.shape[1]]


class CausalSelfAttention(nn.Module):
    """`attention(dim, heads, causal: true)`: nn.MultiheadAttention's
    parameters (`in_proj_weight` [3·dim, dim] Xavier-uniform, `in_proj_bias`
    zeros, `out_proj` a linear with a zero bias) on the [B, T, dim] layout."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """module Block(d, heads): norm1, attn, norm2, fc, proj;
        let a = x + (x |> norm1 |> attn)
        a + (a |> norm2 |> fc |> gelu |> proj)"""

    def __init__(self, d, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = CausalSelfAttention(d, heads)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x):
        a = x + self.attn(self.norm1(x))
        return a + self.proj(F.gelu(self.fc(self.norm2(a))))


def gpt_char():
    """model GptChar, its inline stages numbered as nn.Sequential numbers
    them (0 embedding, 1 pos_embedding, 2 the repeat, 3 layer_norm, 4 the
    head), with PyTorch's seeded initialisers."""
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Embedding(VOCABULARY, WIDTH),  # N(0, 1), the file's default std
        PosEmbedding(CONTEXT, WIDTH),
        nn.Sequential(*[Block(WIDTH, HEADS) for _ in range(LAYERS)]),
        nn.LayerNorm(WIDTH, eps=1e-5),
        nn.Linear(WIDTH, VOCABULARY))


def book():
    """data book: text(context: 256, encoding: "chars"): characters numbered
    in code-point order; window i reads [iT, iT+T) and predicts [iT+1,
    iT+T+1)."""
    text = TEXT.read_text(encoding="utf-8")
    vocab = sorted(set(text))
    assert len(vocab) == VOCABULARY, f"the book has {len(vocab)} characters, the model {VOCABULARY}"
    number = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([number[c] for c in text], dtype=torch.int64)
    rows = (len(ids) - 1) // CONTEXT
    x = ids[: rows * CONTEXT].reshape(rows, CONTEXT)
    y = ids[1: rows * CONTEXT + 1].reshape(rows, CONTEXT)
    return x, y


def check_plan(model, plan_path):
    """The twin's state_dict names and shapes against a dtl plan's
    parameter list; returns the differences (empty when they agree)."""
    plan = json.loads(Path(plan_path).read_text())
    theirs = {p["name"]: list(p["shape"]) for p in plan["model"]["parameters"]}
    ours = {n: list(t.shape) for n, t in model.state_dict().items()}
    problems = [f"only in dtl's plan: {n} {s}" for n, s in theirs.items() if n not in ours]
    problems += [f"only in the twin: {n} {s}" for n, s in ours.items() if n not in theirs]
    problems += [f"{n}: dtl {theirs[n]}, twin {s}" for n, s in ours.items()
                 if n in theirs and theirs[n] != s]
    return problems


def train(args):
    device = torch.device(args.device)
    model = gpt_char()
    if args.init:
        model.load_state_dict(load_file(args.init), strict=True)
    model.to(device)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS,
                                  weight_decay=WEIGHT_DECAY)
    forward = torch.compile(model) if args.compile else model
    if args.precision == "bf16":
        def autocast():
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    else:
        import contextlib
        autocast = contextlib.nullcontext
    if args.precision == "tf32" and device.type == "cuda":
        # dtl's `precision = tf32`: CUDA matrix products in TF32 (the CPU
        # has none, and dtl computes there in float32).
        torch.backends.cuda.matmul.fp32_precision = "tf32"

    x, y = book()
    train_rows, _ = dtl_order.split(len(x), VALID, SEED)
    x_train, y_train = x[train_rows], y[train_rows]
    order = dtl_order.BatchOrder(len(train_rows), args.micro_batch, SEED)
    model.train()

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    losses, ends = [], []
    synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        idx = torch.tensor(order.next())
        xb, yb = x_train[idx].to(device), y_train[idx].to(device)
        with autocast():
            logits = forward(xb)
        loss = F.cross_entropy(logits.float().reshape(-1, VOCABULARY), yb.reshape(-1))
        loss.backward()
        losses.append(loss.item())
        grad_norm = nn.utils.clip_grad_norm_(params, CLIP).item()
        if not (math.isfinite(losses[-1]) and math.isfinite(grad_norm)):
            raise SystemExit(f"step {len(losses)}: loss {losses[-1]}, grad norm {grad_norm}")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(time.perf_counter())
    synchronize()
    ends[-1] = time.perf_counter()
    seconds = ends[-1] - started
    skip = min(args.skip, args.steps - 1)
    steady = (args.steps - skip) / (ends[-1] - (ends[skip - 1] if skip else started))
    return {
        "steps": args.steps,
        "train_seconds": seconds,
        "steps_per_second": args.steps / seconds,
        "steady_steps_per_second": steady,
        "skip": skip,
        "first_step_seconds": ends[0] - started,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "device": str(device),
        "precision": args.precision,
        "compile": args.compile,
        "micro_batch": args.micro_batch,
        "parameters": sum(p.numel() for p in params),
        "threads": torch.get_num_threads(),
        "cuda_max_allocated_bytes": (torch.cuda.max_memory_allocated(device)
                                     if device.type == "cuda" else None),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--micro-batch", type=int, default=MICRO_BATCH,
                        help="rows per step (the file's 32; smaller for a CPU smoke run)")
    parser.add_argument("--skip", type=int, default=10,
                        help="steps left out of the steady rate (compilation)")
    parser.add_argument("--init", help="initial weights (safetensors, dtl's names), strict")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--write-init", metavar="PATH",
                        help="only write the seeded initial weights to PATH")
    parser.add_argument("--check-plan", metavar="PLAN",
                        help="only compare the parameter names and shapes with a plan "
                             "from `dtl compile --format json`")
    args = parser.parse_args()
    if args.steps < 1 or args.micro_batch < 1 or args.skip < 0:
        parser.error("--steps and --micro-batch must be at least 1, --skip at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.write_init:
        save_file({n: t.detach().contiguous() for n, t in gpt_char().state_dict().items()},
                  args.write_init)
        return
    if args.check_plan:
        problems = check_plan(gpt_char(), args.check_plan)
        if problems:
            sys.exit("the twin differs from dtl's plan:\n  " + "\n  ".join(problems))
        print("the twin's parameters are the plan's: names and shapes")
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    print(json.dumps(train(args)))


if __name__ == "__main__":
    main()
