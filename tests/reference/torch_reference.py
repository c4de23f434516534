"""The same training run as `dtl run`, written in PyTorch.

Reads a compiled dtl plan (JSON), builds the equivalent network out of
torch.nn modules (nested so that its state_dict names are the plan's
parameter names), writes its initial weights to a safetensors file, then
trains it with torch.optim, torch.nn.utils.clip_grad_norm_ and the same data
order as dtl, and writes the loss of every optimizer step, and PyTorch's parameter count,
as JSON.

    python torch_reference.py PLAN.json INIT.safetensors LOSSES.json

The Rust test tests/reference.rs runs dtl from INIT.safetensors and compares
the losses. Nothing here is imported from dtl: it is an independent
reference for the plan's meaning.
"""

import gzip
import json
import math
import os
import sys

# One thread, as `dtl run` uses MKL: with two, PyTorch's matrix products
# round differently and the MLP is 7e-8 off instead of bit-identical.
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

# dtl's seeded orders (SplitMix64, the split, dropout seeds) are shared with
# the hand-written twins; see dtl_order.py.
from dtl_order import MASK64, SplitMix64, dropout_seed, held_out  # noqa: E402

torch.set_num_threads(1)


def load_data(data):
    """Features and targets of a csv or text source, as dtl reads them."""
    source = data["source"]
    assert source["format"] != "tokens", "a token file has no rows: see load_tokens"
    if source["format"] == "text":
        return load_text(source)
    assert source["format"] == "csv", source
    opener = gzip.open if source["path"].endswith(".gz") else open
    with opener(source["path"], "rt") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    if source["header"]:
        lines = lines[1:]
    rows = [[float(c) for c in line.split(",")] for line in lines]
    label_at = source["label_column"] % len(rows[0])
    if data["target"] == "float":
        labels = torch.tensor([[r[label_at]] for r in rows], dtype=torch.float32)
    else:
        labels = torch.tensor([int(r[label_at]) for r in rows])
    features = torch.tensor(
        [[v for i, v in enumerate(r) if i != label_at] for r in rows], dtype=torch.float32
    )
    features = (features * float(data["scale"])).reshape([len(rows)] + data["sample_shape"])
    return features, labels


def load_text(source):
    """Windows of `context` tokens, each predicting the next token."""
    with open(source["path"], "rb") as f:
        raw = f.read()
    if source["encoding"] == "bytes":
        ids = list(raw)
    else:
        text = raw.decode("utf-8")
        vocab = {c: i for i, c in enumerate(sorted(set(text)))}
        ids = [vocab[c] for c in text]
    t = source["context"]
    rows = (len(ids) - 1) // t
    tokens = torch.tensor(ids[: rows * t + 1])
    features = tokens[: rows * t].reshape(rows, t).to(torch.float32)
    labels = tokens[1: rows * t + 1].reshape(rows, t)
    return features, labels


def load_tokens(source):
    """A token file's ids (little-endian uint16 or uint32) as int64."""
    import numpy as np

    dtype = {"uint16": "<u2", "uint32": "<u4"}[source["dtype"]]
    return torch.from_numpy(np.fromfile(source["path"], dtype=dtype).astype("int64"))


class TokenBatches:
    """dtl's windows of a token file (runtime/src/data.rs `Batches`): the
    first (windows − held out) windows of T tokens train; with `shuffle`
    each micro-batch starts its windows at offsets below((train − 1)·T + 1)
    of the `seed + 1` generator, otherwise the training windows come in
    order, a new epoch when fewer than a micro-batch are left."""

    def __init__(self, tokens, context, valid_fraction, micro_batch, shuffle, seed):
        windows = (len(tokens) - 1) // context
        self.train = windows - held_out(windows, valid_fraction)
        assert micro_batch <= self.train, "micro_batch larger than the training windows"
        self.tokens, self.context = tokens, context
        self.micro_batch, self.shuffle = micro_batch, shuffle
        self.rng = SplitMix64((seed + 1) & MASK64)
        self.position = 0

    def next(self):
        t = self.context
        if self.position + self.micro_batch > self.train:
            self.position = 0
        if self.shuffle:
            last = (self.train - 1) * t
            starts = [self.rng.below(last + 1) for _ in range(self.micro_batch)]
        else:
            starts = [(self.position + i) * t for i in range(self.micro_batch)]
        self.position += self.micro_batch
        rows = torch.stack([self.tokens[s: s + t + 1] for s in starts])
        # dtl hands the ids to the model as float32, the targets as int64.
        return rows[:, :t].to(torch.float32), rows[:, 1:]


class Batches:
    """dtl's batch order (runtime/src/data.rs `Batches`): the training rows
    reshuffled whenever the next micro-batch would run past their end."""

    def __init__(self, features, labels, micro_batch, shuffle, seed):
        self.features, self.labels = features, labels
        self.order = list(range(features.shape[0]))
        self.micro_batch = micro_batch
        self.shuffle = shuffle
        self.rng = SplitMix64((seed + 1) & MASK64)
        self.position = len(self.order)  # forces a shuffle before the first batch

    def next(self):
        if self.position + self.micro_batch > len(self.order):
            if self.shuffle:
                self.rng.shuffle(self.order)
            self.position = 0
        idx = torch.tensor(self.order[self.position: self.position + self.micro_batch])
        self.position += self.micro_batch
        return self.features.index_select(0, idx), self.labels.index_select(0, idx)


def batches_for(plan):
    """dtl's micro-batches of the plan's training rows or windows."""
    data, train = plan["data"], plan["train"]
    if data["source"]["format"] == "tokens":
        return TokenBatches(load_tokens(data["source"]), data["source"]["context"],
                            data["valid_fraction"], train["micro_batch"], data["shuffle"],
                            train["seed"])
    x_train, y_train = training_split(plan)
    return Batches(x_train, y_train, train["micro_batch"], data["shuffle"], train["seed"])


def training_split(plan):
    """The training rows, split off the held-out ones as dtl does."""
    features, labels = load_data(plan["data"])
    rows = features.shape[0]
    order = list(range(rows))
    if plan["data"]["shuffle"]:  # `shuffle = false`: the last rows of the file
        SplitMix64(plan["train"]["seed"]).shuffle(order)
    valid_rows = held_out(rows, plan["data"]["valid_fraction"])
    keep = torch.tensor(order[: rows - valid_rows])
    return features[keep], labels[keep]


def loss_of(spec, output, target):
    kind = spec["kind"]
    if kind == "mse":
        return F.mse_loss(output, target)
    if kind == "binary_cross_entropy":
        weight = spec["pos_weight"]
        weight = None if weight is None else torch.tensor(weight, dtype=torch.float32)
        return F.binary_cross_entropy_with_logits(output, target, pos_weight=weight)
    if kind == "huber":
        return F.huber_loss(output, target, delta=spec["delta"])
    if kind == "smooth_l1":
        return F.smooth_l1_loss(output, target, beta=spec["beta"])
    classes = output.shape[-1]
    if kind == "nll":
        return F.nll_loss(output.reshape(-1, classes), target.reshape(-1))
    return F.cross_entropy(output.reshape(-1, classes), target.reshape(-1),
                           label_smoothing=spec["label_smoothing"])


def run_step(plan, step, model, params, optimizer, scheduler, batches):
    """Optimizer step `step` (from 1): the plan's step program, op by op."""
    train = plan["train"]
    torch.manual_seed(dropout_seed(train["seed"], step))
    total = 0.0
    for op in plan["step_program"]:
        kind = op["op"]
        if kind == "forward_backward":
            assert op["precision"] == "fp32", "the reference runs float32 only"
            for _ in range(op["micro_batches"]):
                x, y = batches.next()
                loss = loss_of(train["loss"], model(x), y) * op["loss_scale"]
                loss.backward()
                total += loss.item()  # dtl reads every micro-batch's loss too
        elif kind == "check_finite":
            assert math.isfinite(total), f"step {step}: loss {total}"
        elif kind == "clip_grad_norm":
            norm_type = math.inf if op["norm_type"] == "inf" else op["norm_type"]
            nn.utils.clip_grad_norm_(params, op["max_norm"], norm_type=norm_type)
        elif kind == "clip_grad_value":
            nn.utils.clip_grad_value_(params, op["clip_value"])
        elif kind == "optimizer_step":
            optimizer.step()
            scheduler.step()
        elif kind == "zero_grad":
            optimizer.zero_grad()
        else:
            raise ValueError(f"unknown step op {op}")
    return total


def build(plan):
    """The model with PyTorch's initial weights (seeded), its parameters in
    plan order, the optimizer and the schedule."""
    train = plan["train"]
    torch.manual_seed(train["seed"])
    model = PlanModel(plan["model"])
    named = dict(model.named_parameters())
    names = [p["name"] for p in plan["model"]["parameters"]]
    missing = [n for n in names if n not in named]
    assert not missing, f"plan parameters with no PyTorch counterpart: {missing}"
    params = [named[n] for n in names]
    optimizer = optimizer_for(train["optimizer"], params)
    scheduler = scheduler_for(train["schedule"], optimizer, train["steps"])
    return model, params, optimizer, scheduler


class PosEmbedding(nn.Module):
    def __init__(self, max_len, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_len, dim))

    def forward(self, x):
        return x + self.weight[: x.shape[1]]


class ClassToken(nn.Module):
    """A learned [1, 1, dim] vector put before the sequence."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x):
        return torch.cat([self.weight.expand(x.shape[0], 1, x.shape[2]), x], dim=1)


class Attention(nn.Module):
    """Self-attention beyond nn.MultiheadAttention: grouped key/value heads
    (`kv_heads` < `heads`, each serving heads / kv_heads consecutive query
    heads), optional biases, rotary embeddings of queries and keys
    (rotate-half, as Hugging Face's LLaMA). The packed in-projection's rows
    are the queries, then the keys, then the values."""

    def __init__(self, op):
        super().__init__()
        dim, self.heads, self.kv = op["dim"], op["heads"], op["kv_heads"]
        self.hd = dim // self.heads
        self.causal, self.theta = op["causal"], op.get("rope_theta")
        rows = (self.heads + 2 * self.kv) * self.hd
        self.in_proj_weight = nn.Parameter(torch.empty(rows, dim))
        nn.init.xavier_uniform_(self.in_proj_weight)
        if op["in_proj_bias"] is not None:
            self.in_proj_bias = nn.Parameter(torch.zeros(rows))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(dim, dim, bias=op["out_proj_bias"] is not None)

    def rotate(self, x):
        t, hd = x.shape[2], self.hd
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, hd, 2).float() / hd))
        angles = torch.outer(torch.arange(t).float(), inv_freq)
        emb = torch.cat([angles, angles], dim=-1)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * emb.cos() + torch.cat([-x2, x1], dim=-1) * emb.sin()

    def forward(self, x):
        b, t, d = x.shape
        sizes = [self.heads * self.hd, self.kv * self.hd, self.kv * self.hd]
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(sizes, dim=-1)
        q = q.reshape(b, t, self.heads, self.hd).transpose(1, 2)
        k, v = (z.reshape(b, t, self.kv, self.hd).transpose(1, 2) for z in (k, v))
        if self.theta is not None:
            q, k = self.rotate(q), self.rotate(k)
        group = self.heads // self.kv
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


def plain_multihead(op):
    """Whether an attention node is exactly nn.MultiheadAttention."""
    return (op["kv_heads"] == op["heads"] and op.get("rope_theta") is None
            and op["in_proj_bias"] is not None and op["out_proj_bias"] is not None)


def tied(node):
    """A linear node whose weight is another layer's (`tied(embed)`)."""
    op = node["op"]
    return op["kind"] == "linear" and op["weight"] != f"{node['name']}.weight"


def module_for(op, rank):
    """The torch.nn module holding a node's parameters, or None."""
    kind = op["kind"]
    if kind == "linear":
        return nn.Linear(op["in_features"], op["out_features"], bias=op["bias"] is not None)
    if kind in ("conv1d", "conv2d"):
        conv = nn.Conv1d if kind == "conv1d" else nn.Conv2d
        return conv(op["in_channels"], op["out_channels"], op["kernel"], stride=op["stride"],
                    padding=op["padding"], dilation=op["dilation"], groups=op["groups"],
                    bias=op["bias"] is not None)
    if kind == "conv_transpose2d":
        return nn.ConvTranspose2d(op["in_channels"], op["out_channels"], op["kernel"],
                                  stride=op["stride"], padding=op["padding"],
                                  output_padding=op["output_padding"], groups=op["groups"],
                                  bias=op["bias"] is not None, dilation=op["dilation"])
    if kind == "group_norm":
        return nn.GroupNorm(op["groups"], op["channels"], eps=op["eps"],
                            affine=op["weight"] is not None)
    if kind == "instance_norm":
        norm = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d}[rank]
        return norm(op["features"], eps=op["eps"], affine=op["weight"] is not None)
    if kind == "batch_norm":
        norm = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}[rank]
        return norm(op["features"], eps=op["eps"], momentum=op["momentum"])
    if kind == "layer_norm":
        return nn.LayerNorm(op["dim"], eps=op["eps"])
    if kind == "rms_norm":
        return nn.RMSNorm(op["dim"], eps=op["eps"])
    if kind == "embedding":
        return nn.Embedding(op["num_embeddings"], op["dim"])
    if kind == "pos_embedding":
        return PosEmbedding(op["max_len"], op["dim"])
    if kind == "attention":
        if plain_multihead(op):
            return nn.MultiheadAttention(op["dim"], op["heads"], batch_first=True)
        return Attention(op)
    if kind == "class_token":
        return ClassToken(op["dim"])
    return None


def functional(op, inputs, module, training):
    kind, x = op["kind"], inputs[0]
    if module is not None:
        if kind == "attention" and isinstance(module, nn.MultiheadAttention):
            t = x.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(t) if op["causal"] else None
            return module(x, x, x, need_weights=False, attn_mask=mask, is_causal=op["causal"])[0]
        if kind == "embedding":
            return module(x.long())
        return module(x)
    if kind == "dropout":
        return F.dropout(x, op["p"], training)
    if kind == "flatten":
        return x.flatten(1)
    if kind == "reshape":
        return x.reshape([x.shape[0]] + op["shape"])
    if kind == "transpose":
        return x.transpose(op["dim0"], op["dim1"])
    if kind == "softmax":
        return F.softmax(x, op["dim"])
    if kind == "log_softmax":
        return F.log_softmax(x, op["dim"])
    if kind == "leaky_relu":
        return F.leaky_relu(x, op["negative_slope"])
    if kind == "elu":
        return F.elu(x, op["alpha"])
    if kind == "upsample":
        align = op["align_corners"] if op["mode"] == "bilinear" else None
        if op.get("scale") is not None:
            return F.interpolate(x, scale_factor=tuple(op["scale"]), mode=op["mode"],
                                 align_corners=align)
        return F.interpolate(x, size=(op["height"], op["width"]), mode=op["mode"],
                             align_corners=align)
    if kind in ("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d"):
        pool = getattr(F, kind)
        return pool(x, op["kernel"], op["stride"], op["padding"])
    if kind == "adaptive_avg_pool1d":
        return F.adaptive_avg_pool1d(x, op["size"])
    if kind == "adaptive_avg_pool2d":
        return F.adaptive_avg_pool2d(x, (op["height"], op["width"]))
    if kind == "select":
        return x.select(op["dim"], op["index"])
    if kind == "mean":
        return x.mean(op["dim"])
    if kind == "add":
        return sum(inputs[1:], inputs[0])
    if kind == "mul":
        product = inputs[0]
        for other in inputs[1:]:
            product = product * other
        return product
    if kind == "concat":
        return torch.cat(inputs, op["dim"])
    return {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh,
            "sigmoid": torch.sigmoid}[kind](x)


class PlanModel(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.nodes = model["nodes"]
        self.result = model["result"]
        self.by_node = {}
        for index, node in enumerate(self.nodes):
            rank = len(self.nodes[node["inputs"][0]]["output"]) if node["inputs"] else 0
            if tied(node):
                continue  # uses the named layer's weight; see forward
            module = module_for(node["op"], rank)
            if module is not None:
                # A named layer used twice is one module applied twice.
                self.by_node[index] = self.attach(node["name"], module)

    def attach(self, path, module):
        parent = self
        *scopes, leaf = path.split(".")
        for scope in scopes:
            if scope not in parent._modules:
                parent.add_module(scope, nn.Module())
            parent = parent._modules[scope]
        if leaf not in parent._modules:
            parent.add_module(leaf, module)
        return parent._modules[leaf]

    def forward(self, x):
        values = []
        for index, node in enumerate(self.nodes):
            if node["op"]["kind"] == "input":
                values.append(x)
                continue
            inputs = [values[i] for i in node["inputs"]]
            if tied(node):
                # One parameter for both uses: autograd sums their gradients.
                values.append(F.linear(inputs[0], self.get_parameter(node["op"]["weight"])))
                continue
            values.append(functional(node["op"], inputs, self.by_node.get(index), self.training))
        return values[self.result]


def optimizer_for(spec, params):
    kind = spec["kind"]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=spec["lr"], momentum=spec["momentum"],
                               dampening=spec["dampening"], nesterov=spec["nesterov"],
                               weight_decay=spec["weight_decay"], foreach=False)
    if kind == "adafactor":
        return torch.optim.Adafactor(params, lr=spec["lr"], beta2_decay=spec["beta2_decay"],
                                     eps=tuple(spec["eps"]), d=spec["d"],
                                     weight_decay=spec["weight_decay"], foreach=False)
    if kind == "lion":
        # torch.optim has none: the paper's update, written by hand in
        # twin_kit (not from dtl).
        from twin_kit import PaperLion

        return PaperLion(params, lr=spec["lr"], betas=tuple(spec["betas"]),
                         weight_decay=spec["weight_decay"])
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(params, lr=spec["lr"], betas=tuple(spec["betas"]), eps=spec["eps"],
               weight_decay=spec["weight_decay"], foreach=False)


def scheduler_for(schedule, optimizer, steps):
    """PyTorch's own schedulers for dtl's schedule (warm-up by LinearLR)."""
    from torch.optim import lr_scheduler as sched

    warmup, decay = schedule["warmup"], schedule["decay"]
    after = steps - warmup
    kind = decay["kind"]
    if kind == "one_cycle":
        # max_lr is the optimizer's lr; the momentum is not cycled.
        return sched.OneCycleLR(optimizer, max_lr=optimizer.defaults["lr"], total_steps=steps,
                                pct_start=decay["pct_start"], anneal_strategy=decay["anneal"],
                                div_factor=decay["div_factor"],
                                final_div_factor=decay["final_div_factor"], cycle_momentum=False)
    if kind == "constant_with_warmup":
        # Hugging Face's get_constant_schedule_with_warmup.
        n = decay["warmup_steps"]
        return sched.LambdaLR(optimizer, lambda s: float(s) / float(max(1.0, n)) if s < n else 1.0)
    if kind == "constant":
        main_sched = sched.LambdaLR(optimizer, lambda t: 1.0)
    elif kind == "step":
        main_sched = sched.StepLR(optimizer, decay["every"], gamma=decay["gamma"])
    elif kind == "cosine":
        main_sched = sched.CosineAnnealingLR(optimizer, T_max=after, eta_min=decay["min_lr"])
    else:
        main_sched = sched.LinearLR(optimizer, 1.0, decay["end_factor"], total_iters=after)
    if warmup == 0:
        return main_sched
    warm = sched.LinearLR(optimizer, 1.0 / warmup, 1.0, total_iters=warmup - 1)
    return sched.SequentialLR(optimizer, [warm, main_sched], milestones=[warmup])


def main(plan_path, init_path, losses_path):
    with open(plan_path) as f:
        plan = json.load(f)
    train = plan["train"]
    model, params, optimizer, scheduler = build(plan)
    # Initial weights: PyTorch's own initialisers, handed to dtl.
    weights = {n: t.detach().clone().contiguous() for n, t in model.state_dict().items()}
    save_file(weights, init_path)

    batches = batches_for(plan)
    model.train()
    # `ema = D`: torch.optim.swa_utils.AveragedModel with the EMA
    # multi_avg_fn and use_buffers=True, updated after every step.
    decay = train.get("tracking", {}).get("ema")
    averaged = None
    if decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    losses = []
    for step in range(1, train["steps"] + 1):
        losses.append(run_step(plan, step, model, params, optimizer, scheduler, batches))
        if averaged is not None:
            averaged.update_parameters(model)
    with open(losses_path, "w") as f:
        json.dump({"losses": losses, "parameters": sum(p.numel() for p in model.parameters())}, f)
    if averaged is not None:
        weights = {n: t.detach().clone().contiguous() for n, t in averaged.module.state_dict().items()}
        save_file(weights, losses_path + ".ema.safetensors")


def load_strictly(plan_path, weights_path):
    """dtl's saved weights load into the PyTorch model with strict=True."""
    from safetensors.torch import load_file

    with open(plan_path) as f:
        plan = json.load(f)
    model = PlanModel(plan["model"])
    model.load_state_dict(load_file(weights_path), strict=True)


if __name__ == "__main__":
    if sys.argv[1] == "--load":
        load_strictly(*sys.argv[2:4])
    else:
        main(*sys.argv[1:4])
