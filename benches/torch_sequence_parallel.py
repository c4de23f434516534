"""The PyTorch peer of `parallel { tensor = T; sequence = true }` on
examples/gpu/gpt_char.dtl: benches/gpt_char_torch.py's GPT character model
split Megatron-style over `--world` gloo processes on CPU with PyTorch's
own tensor parallelism (torch.distributed.tensor.parallel, torchtitan
style); prints rank 0's training speed and every step's loss as JSON.

    python torch_sequence_parallel.py --world 2 --steps 300 [--threads 1]
        [--micro-batch 32] [--init W.safetensors] [--no-sequence] [--save W.safetensors]

The model, data and optimiser are gpt_char_torch.py's, imported, not
copied: its modules, dtl's parameter names, its seeded initialisers or
`--init` (dtl's names, loaded strict into the single-process layout), the
book's windows, dtl's split (10% held out) and epoch order, AdamW (lr 6e-4,
betas (0.9, 0.999), eps 1e-8, weight decay 0.01, single-tensor), seed 0.
The `--world` processes are one tensor-parallel group, not replicas: every
rank reads the same rows, the micro-batch of one replica.

dtl's attention has one packed in_proj_weight [3·512, 512] (and bias), q,
k and v stacked; after loading, each attention's packed projection becomes
three nn.Linear (q, k, v: its row blocks), so that ColwiseParallel splits
each by heads. The plan given to `parallelize_module` over a CPU device
mesh (`--no-sequence` in brackets):
  embedding(70, 512)  RowwiseParallel: split by vocabulary (35 rows a
                      rank at T = 2), its sum reduce-scattered over the
                      sequence [all-reduced];
  pos_embedding, the blocks' norm1 and norm2, the final layer_norm
                      SequenceParallel: replicated weights applied to each
                      rank's half of the sequence (dimension 1); the
                      position embedding is no norm, but `x + weight[:T]`
                      with x Shard(1) propagates as Shard(1), each rank
                      adding its rows [plain modules on the whole sequence];
  attn                PrepareModuleInput: the sequence all-gathered once
                      for q, k and v, whose input gradients add up as a
                      partial sum reduce-scattered once [all-reduced once];
  attn.q, .k, .v      ColwiseParallel: 4 of the 8 heads a rank at T = 2;
  attn.out_proj, proj RowwiseParallel, output Shard(1): reduce-scattered
                      over the sequence [Replicate: all-reduced];
  fc                  ColwiseParallel, input Shard(1): all-gathered [-];
  linear(512, 70)     ColwiseParallel, input Shard(1), output a DTensor
                      sharded by class (35 a rank), the cross-entropy taken
                      from the sharded scores under `loss_parallel`.
The residual stream between the split layers is each rank's local part.

The loop, per step: the batch (indexed on every rank), forward,
cross-entropy over every position, backward, the loss read, the gradients
brought to their parameters' layouts, clipped at norm 1.0 over all
parameters, AdamW's step, zero_grad. DTensor leaves the gradients of the
replicated weights applied to a sequence part (the norms') as partial sums:
they are all-reduced here, one by one, as Megatron all-reduces its
sequence-parallel norms' gradients (left partial, AdamW would reduce each
again in every op that reads it, and clip_grad_norm_'s foreach scaling
leaves a Partial DTensor unscaled in torch 2.11, a silent error). With
sequence parallelism every parameter is then a DTensor on the one mesh and
`clip_grad_norm_` adds the norm up itself; with `--no-sequence` the norms
and the position embedding stay plain tensors, which clip_grad_norm_
cannot mix with DTensors, so the norm is added up by hand as
torch_ddp_train.py's clip_split does (shards' squares all-reduced,
replicated tensors' counted once).

Only the training loop is timed: rank 0's wall time over every step after a
barrier that follows the set-up (process group, data, model, plan).
CommDebugMode counts the collectives of the last step, within the timed
loop (DTensor's, the gradients' and the hand-written clip's).

`--save PATH` writes the trained weights, gathered, under dtl's names (q,
k, v packed again), for comparison with `dtl run`'s model.safetensors.

Prints one line (rank 0): {"world", "steps", "sequence", "micro_batch",
"threads", "train_seconds", "steps_per_second", "first_loss", "final_loss",
"losses" (every step's), "collectives_per_step", "collective_counts" (per
op), "peak_rss_bytes" (the largest rank's peak resident memory)}.
"""

import argparse
import json
import math
import os
import resource
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpt_char_torch as twin  # noqa: E402  (also puts tests/reference on the path)
import dtl_order  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.tensor import DTensor, Replicate, Shard  # noqa: E402
from torch.distributed.tensor.debug import CommDebugMode  # noqa: E402
from torch.distributed.tensor.parallel import (ColwiseParallel,  # noqa: E402
                                               PrepareModuleInput, RowwiseParallel,
                                               SequenceParallel, loss_parallel,
                                               parallelize_module)

from torch_ddp_train import clip_split, spawn_ranks  # noqa: E402


class SplitAttention(nn.Module):
    """gpt_char_torch's CausalSelfAttention with its packed projection
    unpacked: q, k, v are the row blocks of in_proj_weight/in_proj_bias.
    The heads are counted from the local width, so a rank holding a
    column shard of q, k, v runs its own heads."""

    def __init__(self, packed):
        super().__init__()
        dim = packed.out_proj.in_features
        self.head_dim = dim // packed.heads
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        with torch.no_grad():
            for i, linear in enumerate((self.q, self.k, self.v)):
                linear.weight.copy_(packed.in_proj_weight[i * dim:(i + 1) * dim])
                linear.bias.copy_(packed.in_proj_bias[i * dim:(i + 1) * dim])
        self.out_proj = packed.out_proj

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (f(x).reshape(b, t, -1, self.head_dim).transpose(1, 2)
                   for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))


def dtl_named(model):
    """The model's full weights under dtl's names, q, k, v packed again
    (every rank takes part in gathering the shards)."""
    full = {n: (t.full_tensor() if isinstance(t, DTensor) else t).detach()
            for n, t in model.state_dict().items()}
    out = {}
    for name, t in full.items():
        head, _, leaf = name.rpartition(".")
        if head.endswith(".attn.q"):
            base = head[:-2]
            out[f"{base}.in_proj_{leaf}"] = torch.cat(
                [full[f"{base}.{n}.{leaf}"] for n in "qkv"])
        elif not head.endswith((".attn.k", ".attn.v")):
            out[name] = t
    return out


def tp_plan(sequence):
    """parallelize_module's plan over gpt_char()'s names (see the docstring)."""
    between = Shard(1) if sequence else Replicate()
    plan = {"0": RowwiseParallel(input_layouts=Replicate(), output_layouts=between),
            "4": ColwiseParallel(input_layouts=between, output_layouts=Shard(-1),
                                 use_local_output=False)}
    if sequence:
        plan["1"] = plan["3"] = SequenceParallel(use_local_output=True)
    for k in range(twin.LAYERS):
        block = f"2.{k}"
        if sequence:
            plan[f"{block}.norm1"] = plan[f"{block}.norm2"] = SequenceParallel(
                use_local_output=True)
        # One DTensor input for q, k and v: their input gradients are added up
        # as partial sums and reduced once (reduce-scattered) [all-reduced].
        plan[f"{block}.attn"] = PrepareModuleInput(
            input_layouts=(between,), desired_input_layouts=(Replicate(),))
        for n in "qkv":
            plan[f"{block}.attn.{n}"] = ColwiseParallel()
        plan[f"{block}.attn.out_proj"] = RowwiseParallel(output_layouts=between)
        plan[f"{block}.fc"] = ColwiseParallel(input_layouts=between)
        plan[f"{block}.proj"] = RowwiseParallel(output_layouts=between)
    return plan


def rank_main(rank, world, port, args, out):
    torch.set_num_threads(args.threads)
    # CommDebugMode's module hooks see the embedding's integer input.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = twin.book()
        train_rows, _ = dtl_order.split(len(x), twin.VALID, twin.SEED)
        x_train, y_train = x[train_rows], y[train_rows]
        order = dtl_order.BatchOrder(len(train_rows), args.micro_batch, twin.SEED)

        model = twin.gpt_char()
        if args.init:
            model.load_state_dict(twin.load_file(args.init), strict=True)
        for block in model[2]:
            block.attn = SplitAttention(block.attn)
        # Every rank built the same weights (the seed or --init), as
        # SequenceParallel's replicated weights (from_local) assume.
        parallelize_module(model, init_device_mesh("cpu", (world,)), tp_plan(args.sequence))
        params = list(model.parameters())
        all_dtensors = all(isinstance(p, DTensor) for p in params)
        optimizer = torch.optim.AdamW(params, lr=twin.LR, betas=twin.BETAS, eps=twin.EPS,
                                      weight_decay=twin.WEIGHT_DECAY, foreach=False)
        model.train()

        losses, counts = [], {}
        dist.barrier()
        started = time.perf_counter()
        for step in range(args.steps):
            counting = CommDebugMode() if step == args.steps - 1 else None
            if counting:
                counting.__enter__()
            idx = torch.tensor(order.next())
            logits = model(x_train[idx])
            with loss_parallel():
                loss = F.cross_entropy(logits.reshape(-1, twin.VOCABULARY),
                                       y_train[idx].reshape(-1))
                loss.backward()
            losses.append(loss.full_tensor().item())
            # To the parameters' layouts: the norms' partial sums all-reduced,
            # the embedding's whole-table gradient cut to this rank's rows.
            for p in params:
                if isinstance(p.grad, DTensor) and p.grad.placements != p.placements:
                    p.grad = p.grad.redistribute(placements=p.placements)
            if all_dtensors:
                nn.utils.clip_grad_norm_(params, twin.CLIP)
            else:
                clip_split(params, twin.CLIP)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if counting:
                counting.__exit__(None, None, None)
                counts = {str(op): n for op, n in counting.get_comm_counts().items()}
            if not math.isfinite(losses[-1]):
                raise SystemExit(f"step {step + 1}: loss {losses[-1]}")
        seconds = time.perf_counter() - started

        # ru_maxrss is KiB on Linux; the largest over the ranks.
        peak = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024],
                            dtype=torch.float64)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        weights = dtl_named(model) if args.save else None
        if rank == 0:
            if args.save:
                twin.save_file({n: t.contiguous() for n, t in weights.items()}, args.save)
            Path(out).write_text(json.dumps({
                "world": world, "steps": args.steps, "sequence": args.sequence,
                "micro_batch": args.micro_batch, "threads": torch.get_num_threads(),
                "train_seconds": seconds, "steps_per_second": args.steps / seconds,
                "first_loss": losses[0], "final_loss": losses[-1], "losses": losses,
                "collectives_per_step": sum(counts.values()),
                "collective_counts": counts, "peak_rss_bytes": int(peak.item())}))
    finally:
        dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2, help="the tensor-parallel degree")
    parser.add_argument("--steps", type=int, default=twin.STEPS)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--micro-batch", type=int, default=twin.MICRO_BATCH)
    parser.add_argument("--init", help="initial weights (safetensors, dtl's names), strict")
    parser.add_argument("--no-sequence", dest="sequence", action="store_false",
                        help="plain tensor parallelism: norms replicated, sums all-reduced")
    parser.add_argument("--save", metavar="PATH",
                        help="write the trained weights (dtl's names) to PATH")
    args = parser.parse_args()
    if args.steps < 1 or args.micro_batch < 1:
        parser.error("--steps and --micro-batch must be at least 1")
    if twin.HEADS % args.world or (args.sequence and twin.CONTEXT % args.world):
        parser.error(f"--world {args.world} must divide the heads and (with sequence "
                     "parallelism) the context")
    spawn_ranks(rank_main, args.world, lambda port, out: (args.world, port, args, out))

if __name__ == "__main__":
    main()
