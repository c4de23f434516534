"""The PyTorch side of benches/ddp_throughput.py: benches/wide_mlp.dtl written
by hand in torch.nn and trained under DistributedDataParallel (gloo) on
`--world` processes, on CPU; prints rank 0's training speed as JSON.

    python torch_ddp_train.py --world 2 --steps 300 [--threads 1] [--init W.safetensors] [--zero | --fsdp | --tensor]
    python torch_ddp_train.py --write-init W.safetensors

Everything is spelt out from the .dtl file: linear(64, 512) |> relu |>
linear(512, 512) |> relu |> linear(512, 10); the digits, scaled by 0.0625, 20%
held out (dtl's split and epoch order, tests/reference/dtl_order.py); AdamW
(lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01, the single-tensor
path PyTorch takes on CPU); micro_batch 32 per replica, accumulate 1,
clip_grad_norm_(1.0); seed 0. Replica g reads rows 32g … 32g+31 of every
global micro-batch of 32·world rows, as dtl's replicas do.

Only the training loop is timed, as dtl times its own: rank 0's wall time
over every step after a barrier that follows the set-up (process group,
data, model, DDP's initial broadcast), each batch's selection included. As
dtl writes each step's loss averaged over the replicas to metrics.jsonl,
each step here all-reduces its loss too.

With `--zero` (benches/sharded.py) the AdamW is wrapped in
torch.distributed.optim.ZeroRedundancyOptimizer, ZeRO-1 as PyTorch ships
it: each rank keeps the state of its share of the parameters (whole
tensors, balanced by size) and broadcasts its updated ones.

With `--fsdp` the model is not wrapped in DDP but sharded with FSDP2's
`fully_shard` over a CPU device mesh (ZeRO-3): the root module only, as
dtl's `shard = parameters` makes one unit of a model without blocks; the
parameters are DTensors, each rank holding its shard, gathered for forward
and again for backward (`reshard_after_forward`, the default), the
gradients reduce-scattered; AdamW and `clip_grad_norm_` work on the shards.

With `--tensor` (benches/tensor_parallel.py) the `--world` processes are
one tensor-parallel group, not replicas: the model is split with
`parallelize_module` over a CPU device mesh, its first linear
`ColwiseParallel`, its second `RowwiseParallel` (the layout dtl's `tensor
= T` picks), the last one whole; every rank reads the same rows, the
micro-batch of one replica. `clip_grad_norm_` cannot mix DTensors and
plain tensors, so the norm is added up by hand as a Megatron-style
program does: the shards' squares all-reduced over the group, the
replicated tensors' counted once. `collectives_per_step` is what
CommDebugMode counts during one step (the last).

Prints one line (rank 0): {"world", "steps", "train_seconds",
"steps_per_second", "threads", "first_loss", "final_loss",
"optimizer_state_bytes" (rank 0's, from the tensors its optimizer holds),
"peak_rss_bytes" (the largest rank's peak resident memory)}.
"""

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reference"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.optim import ZeroRedundancyOptimizer  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import dtl_order  # noqa: E402
import twin_kit  # noqa: E402  (the digits loader)

SEED = 0
MICRO_BATCH = 32
TEARDOWN_GRACE = 20  # seconds


def wide_mlp():
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state_bytes(optimizer):
    """Bytes of the state tensors an optimizer holds (its local one under
    ZeroRedundancyOptimizer, its shards of FSDP2's DTensors)."""
    inner = getattr(optimizer, "optim", optimizer)
    local = [getattr(t, "to_local", lambda t=t: t)() for state in inner.state.values()
             for t in state.values() if torch.is_tensor(t) and t.dim() > 0]
    return sum(t.numel() * t.element_size() for t in local)


def tensor_step_counter():
    """CommDebugMode, which counts DTensor's collectives."""
    from torch.distributed.tensor.debug import CommDebugMode
    return CommDebugMode()


def clip_split(params, max_norm):
    """clip_grad_norm_ over a tensor-parallel model by hand: each shard's
    squares summed over the group, each replicated tensor's once."""
    from torch.distributed.tensor import DTensor, Shard
    sharded = torch.zeros(1, dtype=torch.float32)
    whole = torch.zeros(1, dtype=torch.float32)
    grads = []
    for p in params:
        g = p.grad
        if isinstance(g, DTensor):
            local = g.to_local()
            if any(isinstance(pl, Shard) for pl in g.placements):
                sharded += local.pow(2).sum()
            else:
                whole += local.pow(2).sum()
            grads.append(local)
        else:
            whole += g.pow(2).sum()
            grads.append(g)
    dist.all_reduce(sharded)
    norm = (sharded + whole).sqrt()
    coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coefficient)


def replica(rank, world, port, steps, threads, init, out, mode=None):
    torch.set_num_threads(threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = twin_kit.digits(shape=[64], scale=0.0625, valid=0.2)
        train_rows, _ = dtl_order.split(len(data.targets), data.valid, SEED)
        x_train, y_train = data.features[train_rows], data.targets[train_rows]
        replicas = 1 if mode == "tensor" else world
        batches = dtl_order.BatchOrder(len(train_rows), replicas * MICRO_BATCH, SEED)
        model = wide_mlp()
        if init:
            model.load_state_dict(load_file(init))
        if mode == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard
            ddp = fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
        elif mode == "tensor":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel,
                                                           parallelize_module)
            ddp = parallelize_module(model, init_device_mesh("cpu", (world,)),
                                     {"0": ColwiseParallel(), "2": RowwiseParallel()})
        else:
            ddp = DistributedDataParallel(model)
        params = list(model.parameters())
        settings = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=False)
        if mode == "zero":
            optimizer = ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.AdamW,
                                                **settings)
        else:
            optimizer = torch.optim.AdamW(params, **settings)
        model.train()
        losses = []
        dist.barrier()
        started = time.perf_counter()
        counts = None
        for step in range(steps):
            counting = tensor_step_counter() if mode == "tensor" and step == steps - 1 else None
            if counting:
                counting.__enter__()
            global_batch = batches.next()
            place = 0 if mode == "tensor" else rank
            idx = torch.tensor(global_batch[place * MICRO_BATCH:(place + 1) * MICRO_BATCH])
            loss = F.cross_entropy(ddp(x_train[idx]), y_train[idx])
            loss.backward()
            if mode == "tensor":
                clip_split(params, 1.0)
            else:
                nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad()
            mean = torch.tensor([loss.item()], dtype=torch.float64)
            dist.all_reduce(mean)
            losses.append(mean.item() / world)
            if counting:
                counting.__exit__(None, None, None)
                counts = counting.get_total_counts()
        seconds = time.perf_counter() - started
        # ru_maxrss is KiB on Linux; the largest over the ranks.
        peak = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024],
                            dtype=torch.float64)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        if rank == 0:
            Path(out).write_text(json.dumps({
                "world": world, "steps": steps, "train_seconds": seconds,
                "steps_per_second": steps / seconds, "threads": torch.get_num_threads(),
                "first_loss": losses[0], "final_loss": losses[-1],
                "optimizer_state_bytes": state_bytes(optimizer),
                "peak_rss_bytes": int(peak.item()), "collectives_per_step": counts}))
    finally:
        dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--init", help="initial weights (safetensors, state_dict names)")
    parser.add_argument("--zero", action="store_true",
                        help="shard the optimizer state (ZeroRedundancyOptimizer)")
    parser.add_argument("--fsdp", action="store_true",
                        help="shard the parameters too (FSDP2's fully_shard, ZeRO-3)")
    parser.add_argument("--tensor", action="store_true",
                        help="split the layers over the ranks (parallelize_module)")
    parser.add_argument("--write-init", metavar="PATH",
                        help="only write the seeded initial weights to PATH")
    args = parser.parse_args()
    if args.write_init:
        save_file({n: t.contiguous() for n, t in wide_mlp().state_dict().items()},
                  args.write_init)
        return
    mode = "fsdp" if args.fsdp else "zero" if args.zero else "tensor" if args.tensor else None
    spawn_ranks(replica, args.world,
                lambda port, out: (args.world, port, args.steps, args.threads, args.init,
                                   out, mode))


def spawn_ranks(target, world, arguments):
    """Runs `target` on `world` processes (`arguments(port, out)` its
    arguments after the rank) and prints the JSON rank 0 writes to `out`.
    gloo's teardown has hung a rank after the result was written (4 ranks
    on 2 cores): the ranks get a grace period, then are ended (exit 3)."""
    with tempfile.TemporaryDirectory(prefix="dtl-torch-bench-") as work:
        out = Path(work) / "rank0.json"
        ranks = mp.spawn(target, args=arguments(free_port(), str(out)), nprocs=world,
                         join=False)
        written = None
        while not ranks.join(timeout=1):
            if out.exists():
                written = written or time.monotonic()
                if time.monotonic() - written > TEARDOWN_GRACE:
                    for process in ranks.processes:
                        if process.is_alive():
                            process.kill()
                    print(out.read_text())
                    print(f"a rank was still tearing down {TEARDOWN_GRACE} s after the "
                          "result: ended", file=sys.stderr)
                    sys.exit(3)
        print(out.read_text())


if __name__ == "__main__":
    main()
