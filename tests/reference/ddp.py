"""dtl's data parallelism against PyTorch's DistributedDataParallel and against
one dtl process with the global batch, step for step.

    python tests/reference/ddp.py DTL_BINARY WORKDIR [--world D] [--case sgd|adamw|all]

The experiment is tests/reference/layers/ddp_mlp.dtl: linear(64, 64) |> relu
|> linear(64, 10) on the digits, no dropout, micro_batch = 8, accumulate = 2,
clip = norm(1.0), `parallel { data = 2 }`. Case `sgd` runs the file as
written (SGD with momentum and weight decay); case `adamw` swaps the
optimizer on the command line (`--set train.optimizer=adamw(...)`), the one
setting the twin changes for it too. The 60 steps cross an epoch boundary
inside step 45 (1438 training rows make 89 global micro-batches of 16, the
last 14 rows skipped). For each case the script:

1. builds the twin (torch.nn, PyTorch's seeded initialisers) and saves its
   state_dict to WORKDIR/CASE/init.safetensors;
2. runs `DTL_BINARY run FILE --quiet --device cpu --trace --init ...
   --set parallel.data=D`: dtl starts D ranks itself through mpirun;
3. runs dtl once more in one process with the same global batch:
   `--set parallel.data=1 --set train.micro_batch=8·D`;
4. trains the twin under torch.distributed (gloo, D processes from
   torch.multiprocessing.spawn on a free localhost port) wrapped in
   DistributedDataParallel: replica g reads rows g·8 … g·8+7 of every
   global micro-batch of 8·D rows of dtl's epoch order (dtl_order.py),
   accumulates the first micro-step under `model.no_sync()` so that DDP
   all-reduces only on the last, then clip_grad_norm_ on the averaged
   gradients, optimizer step; the step's loss is averaged over the replicas
   (the sum of each replica's micro-step losses, as metrics.jsonl has it);
5. compares dtl×D with DDP and dtl×D with dtl×1: per step loss, gradient
   norm before clipping and lr, the final evaluation, every final weight
   (dtl's model.safetensors against DDP rank 0's state_dict; max |difference|
   over the tensor's largest magnitude); and checks that DDP's replicas end
   bit-identical and that dtl's ranks held bit-identical weights after every
   step (the `weights` hash of each rank-K.trace.jsonl).

Tolerances, relative (weights: max |difference| over the tensor's largest
magnitude), at most 10× the worst measured: 5e-6 for every quantity
(worst 6.9e-7), AdamW's weights 3.6e-6 (worst 3.6e-7 at D = 2, 2.0e-6 at
D = 4), and AdamW against DDP at D = 2, which must agree exactly (0).
Measured on the 2-core development machine (torch 2.11.0 CPU, Open MPI
5.0.11, a debug build of dtl), 60 steps; gloo's sums are not always ordered
alike, so two runs differ (2026-11-30 and 2026-12-04):

    D = 2            loss          grad_norm     eval_loss     weights
    sgd   vs DDP     3.6e-7 6.6e-7 2.3e-7 6.9e-7 0      3.7e-7 3.8e-7 5.7e-7
    sgd   vs dtl×1   1.8e-7 5.5e-7 2.5e-7 5.1e-7 9.3e-8 2.8e-7 3.8e-7 4.9e-7
    adamw vs DDP     0             0             0             0
    adamw vs dtl×1   1.2e-7 1.3e-7 1.6e-7 1.6e-7 0      0      3.6e-7 2.3e-7
    D = 4 (--world 4, 2026-11-30): at most 6.3e-7 (sgd grad_norm vs DDP);
    AdamW's weights 2.0e-6 vs DDP, 1.6e-6 vs dtl×1.

Why AdamW against DDP is exact at D = 2: both run the same libtorch kernels
on the same rows, and the average of two gradients is exact whichever side
divides (DDP divides each replica's gradient by D before its all-reduce,
dtl divides the sum after; by a power of two) and whichever order the sum
of two numbers takes. So any change to what is summed — an all-reduce on
an accumulating micro-step (DTL_TWIN_SABOTAGE=sync_every, 7e-8), a
different shard — shows. SGD is not exact against DDP for a reason that is
not parallel at all: dtl's SGD computes `grad + weight_decay·param` and
`param − lr·d_p` as a product then a sum, torch.optim.SGD as
`add(..., alpha=)`, which rounds once (fused); one process with the same
twin differs from dtl×1 the same way (first at step 4, 1.8e-7 in the
weights after 60 steps). Against dtl×1 the rows of a micro-batch are summed
as one block of 8·D instead of D blocks of 8: last-bit differences, which
Adam divides by its own tiny second moment where a gradient almost cancels
and turns into steps of up to lr; SGD moves such a weight by lr times the
bit. Hence the looser AdamW weight bound, which is for that and nothing
else: the losses stay within 1e-6. Beyond D = 2 the all-reduce's order of
sums (MPI vs gloo) differs too, and AdamW against DDP falls under the same
bounds as against dtl×1.

The whole script (both cases, world 2) takes about 16 s here.

Exit status 0 when everything agrees, 1 with the mismatches listed, 2 on
usage errors. DTL_TWIN_SABOTAGE makes the DDP twin (or the reading of dtl's
traces) deliberately wrong, so that a run shows the checks fail: ddp.py's
own world_sum (gradients summed, not averaged), same_rows (every replica
reads the first 8 rows of each global micro-batch), local_clip (each
replica clips before the average), sync_every (no `no_sync`: caught only by
the exact AdamW comparison), trace (one of rank 1's weight hashes
doctored), and twin_kit's lr, noclip, weight_decay.
"""

import argparse
import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import dtl_order
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

DTL_FILE = Path(__file__).resolve().parent / "layers" / "ddp_mlp.dtl"
MICRO_BATCH = 8  # per replica, the file's train.micro_batch

CASES = ("sgd", "adamw")
TOLERANCE = 5e-6  # relative: loss, gradient norm, lr, evaluation, SGD's weights
ADAMW_WEIGHTS = 3.6e-6  # AdamW's weights, except against DDP at D = 2 (see the module doc)
# The evaluation where the steps are exact: dtl's replicas each evaluate
# their half of the held-out rows and add the sums, the twin evaluates them
# all at once, and a product over 179 rows need not round as one over 359
# does (seen on an AVX-512 Xeon, 2026-12-05: 5.2e-8). 10× that.
SPLIT_EVAL = 5.3e-7


def tolerances(case, world, against):
    """(steps and evaluation, weights) tolerances of dtl×D against `against`
    ("ddp" or "single"). AdamW against DDP at D = 2 is exact: the same
    kernels, the same sums (see the module doc)."""
    if case == "adamw" and against == "ddp" and world == 2:
        return 0.0, 0.0
    if case == "adamw":
        return TOLERANCE, ADAMW_WEIGHTS
    return TOLERANCE, TOLERANCE


# ---------------------------------------------------------------------------
# The twin of layers/ddp_mlp.dtl, every constant spelt out.
# ---------------------------------------------------------------------------
def twin(case):
    """(model, data, recipe, dtl --set overrides) for CASE; the model with
    PyTorch's initialisers seeded by the train block's seed."""
    seed = 3
    torch.manual_seed(seed)
    # model Net: x |> linear(64, 64) |> relu |> linear(64, 10)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    # data digits: csv(label: -1), scale 0.0625, valid 0.2
    data = kit.digits(shape=[64], scale=0.0625, valid=0.2)
    if case == "sgd":
        optimizer, lr = "sgd", 0.1
        args = dict(momentum=0.9, dampening=0.0, weight_decay=1e-4, nesterov=False)
        sets = []
    else:
        optimizer, lr = "adamw", 3e-3
        args = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        sets = ["train.optimizer=adamw(lr: 3e-3, weight_decay: 0.01)"]
    recipe = kit.Recipe(steps=60, micro_batch=MICRO_BATCH, accumulate=2,
                        optimizer=optimizer, lr=lr, optimizer_args=args,
                        clip=("norm", 1.0, 2.0), seed=seed)
    return model, data, recipe, sets


# ---------------------------------------------------------------------------
# The DDP side: one process per replica.
# ---------------------------------------------------------------------------
def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_rows(global_batch, replica, micro_batch):
    """The rows replica g reads of a global micro-batch: a contiguous
    g·m … (g+1)·m − 1 (docs/plan.md, `sharding`)."""
    if kit.sabotaged("same_rows"):
        replica = 0
    return global_batch[replica * micro_batch:(replica + 1) * micro_batch]


def ddp_replica(rank, world, port, jobs):
    """Replica `rank` of `world`: for each (case, init, out) of `jobs`, trains
    the case under DDP from `init` and saves its step records, evaluation
    and final state_dict to OUT/rank-R.pt. One process group for all cases:
    starting the processes (importing torch) is most of the time."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        for case, init, out in jobs:
            record = ddp_train(rank, world, case, init)
            torch.save(record, out / f"rank-{rank}.pt")
    finally:
        dist.destroy_process_group()


def ddp_train(rank, world, case, init):
    """{"steps", "evals", "state"} of replica `rank` trained on CASE."""
    model, data, recipe, _ = twin(case)
    model.load_state_dict(load_file(str(init)))
    ddp = DistributedDataParallel(model)
    train_rows, valid_rows = dtl_order.split(len(data.targets), data.valid, recipe.seed)
    x_train, y_train = data.features[train_rows], data.targets[train_rows]
    # One order for all replicas: global micro-batches of D·m rows.
    batches = dtl_order.BatchOrder(len(train_rows), world * recipe.micro_batch, recipe.seed)
    params = list(model.parameters())
    optimizer = kit.make_optimizer(recipe, params)
    local_clip = kit.sabotaged("local_clip")
    steps = []
    for k in range(1, recipe.steps + 1):
        loss_sum = 0.0
        for micro in range(recipe.accumulate):
            # DDP all-reduces in the backward of the step's last micro-batch
            # only; before it, gradients accumulate locally (no_sync).
            # (local_clip all-reduces by hand after clipping.)
            all_reduce = micro == recipe.accumulate - 1 or kit.sabotaged("sync_every")
            sync = ddp.no_sync() if local_clip or not all_reduce else contextlib.nullcontext()
            idx = torch.tensor(replica_rows(batches.next(), rank, recipe.micro_batch))
            with sync:
                loss = kit.loss_fn(recipe, ddp(x_train[idx]), y_train[idx])
                loss = loss * (1.0 / recipe.accumulate)
                loss.backward()
            loss_sum += loss.item()
        if local_clip:
            nn.utils.clip_grad_norm_(params, 1.0)  # the file's clip = norm(1.0)
            for p in params:
                dist.all_reduce(p.grad)
                p.grad.div_(world)
        if kit.sabotaged("world_sum"):
            for p in params:
                p.grad.mul_(world)
        if recipe.clip:  # None only under DTL_TWIN_SABOTAGE=noclip
            _, max_norm, norm_type = recipe.clip
            grad_norm = nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type).item()
        else:
            grad_norm = nn.utils.get_total_norm([p.grad for p in params], 2.0).item()
        lr = kit.lr_at(recipe, k)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad()
        # metrics.jsonl's loss: the replicas' step losses averaged.
        mean_loss = torch.tensor([loss_sum], dtype=torch.float64)
        dist.all_reduce(mean_loss)
        steps.append({"step": k, "loss": mean_loss.item() / world, "lr": lr,
                      "grad_norm": grad_norm})
    evals = [kit.evaluate(model, recipe, data.features[valid_rows], data.targets[valid_rows],
                          recipe.steps, contextlib.nullcontext)]
    state = {n: t.detach().clone() for n, t in model.state_dict().items()}
    return {"steps": steps, "evals": evals, "state": state}


def run_ddp(world, jobs):
    """Trains every (case, init, out) of `jobs` under DDP with `world`
    processes; returns the seconds the spawn took. Each OUT then holds
    rank-R.pt for every replica R."""
    for _, _, out in jobs:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("rank-*.pt"):
            stale.unlink()
    started = time.perf_counter()
    mp.spawn(ddp_replica, args=(world, free_port(), jobs), nprocs=world, join=True)
    return time.perf_counter() - started


def read_ddp(world, out):
    """Every replica's {"steps", "evals", "state"}, by rank."""
    return [torch.load(out / f"rank-{r}.pt") for r in range(world)]


# ---------------------------------------------------------------------------
# Checks of each side on its own.
# ---------------------------------------------------------------------------
def check_replicas_equal(c, states):
    """DDP's replicas must end with the same weights, to the bit."""
    worst, where = 0.0, "-"
    for rank, state in enumerate(states[1:], start=1):
        for name, tensor in state.items():
            d = (tensor.double() - states[0][name].double()).abs().max().item()
            if not d <= worst:
                worst, where = d, f"rank {rank} `{name}`"
    c.check("replicas", worst, where, 0.0)


def check_dtl_ranks(c, out, world, steps):
    """summary.json names D ranks; every rank wrote its log and a trace with
    one record per step; the weight hashes agree across ranks at every step."""
    summary = json.loads((out / "summary.json").read_text())
    if summary.get("world_size") != world:
        c.fail(f"summary.json: world_size {summary.get('world_size')}, expected {world}")
    traces = []
    for rank in range(world):
        if not (out / f"rank-{rank}.log").is_file():
            c.fail(f"rank-{rank}.log is missing")
        path = out / f"rank-{rank}.trace.jsonl"
        if not path.is_file():
            c.fail(f"{path.name} is missing")
            return
        records = [json.loads(line) for line in path.read_text().splitlines()]
        if rank == 1 and kit.sabotaged("trace"):
            records[len(records) // 2]["weights"] = "0" * 16
        hashes = {r["step"]: r["weights"] for r in records if "weights" in r}
        if sorted(hashes) != list(range(1, steps + 1)):
            c.fail(f"{path.name}: weight hashes for steps {sorted(hashes)[:3]}…"
                   f"{sorted(hashes)[-3:]} ({len(hashes)}), expected 1…{steps}")
        traces.append(hashes)
    differing = [k for k in range(1, steps + 1)
                 if len({t.get(k) for t in traces}) != 1]
    if differing:
        c.fail(f"ranks' weight hashes differ at steps {differing[:10]}"
               f"{' …' if len(differing) > 10 else ''} (first: "
               + ", ".join(f"rank {r} {t.get(differing[0])}" for r, t in enumerate(traces))
               + ")")
    print(f"  dtl ranks: {world} traces, {steps} steps each, weight hashes "
          f"{'equal at every step' if not differing else 'DIFFER'}")


# ---------------------------------------------------------------------------
# The cases.
# ---------------------------------------------------------------------------
def run_dtl_case(case, binary, workdir, world):
    """dtl×D (its own mpirun, traced) and dtl×1 with the global batch, from
    the twin's initial weights, saved to WORKDIR/init.safetensors."""
    model, _, _, sets = twin(case)
    workdir.mkdir(parents=True, exist_ok=True)
    init = workdir / "init.safetensors"
    kit.save_init(model, init)
    parallel = cmp.run_dtl(binary, DTL_FILE, workdir / f"dtl-world{world}", init=init,
                           sets=sets + [f"parallel.data={world}"], flags=["--trace"])
    single = cmp.run_dtl(binary, DTL_FILE, workdir / "dtl-world1", init=init,
                         sets=sets + ["parallel.data=1",
                                      f"train.micro_batch={world * MICRO_BATCH}"])
    return init, parallel, single


def compare_case(case, world, parallel, single, replicas):
    tol, weights_tol = tolerances(case, world, "ddp")
    steps = len(replicas[0]["steps"])
    ddp = replicas[0]
    against_ddp = cmp.Comparison(f"{case}: dtl×{world} vs DDP×{world}")
    cmp.compare_steps(against_ddp, parallel.steps, ddp["steps"], tol)
    cmp.compare_evals(against_ddp, parallel.evals, ddp["evals"], max(tol, SPLIT_EVAL))
    parallel_weights = cmp.read_safetensors(parallel.out / "model.safetensors")
    cmp.compare_weights(against_ddp, parallel_weights, ddp["state"], weights_tol)
    check_replicas_equal(against_ddp, [r["state"] for r in replicas])

    against_single = cmp.Comparison(f"{case}: dtl×{world} vs dtl×1 (micro_batch "
                                     f"{world * MICRO_BATCH})")
    tol, weights_tol = tolerances(case, world, "single")
    cmp.compare_steps(against_single, parallel.steps, single.steps, tol)
    cmp.compare_evals(against_single, parallel.evals, single.evals, tol)
    cmp.compare_weights(against_single, parallel_weights,
                        cmp.read_safetensors(single.out / "model.safetensors"), weights_tol)

    print(f"\n{case}: {steps} steps, world {world}; dtl×{world} {parallel.seconds:.1f} s, "
          f"dtl×1 {single.seconds:.1f} s (wall, start-up included)")
    for c in (against_ddp, against_single):
        print(f" {c.name}, worst relative differences ('twin': the right-hand side):")
        c.print()
    ranks = cmp.Comparison(f"{case}: dtl×{world}'s ranks")
    check_dtl_ranks(ranks, parallel.out, world, steps)
    return [against_ddp, against_single, ranks]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--world", type=int, default=2,
                        help="data-parallel replicas, for dtl and DDP alike (default 2)")
    parser.add_argument("--case", choices=[*CASES, "all"], default="all",
                        help="sgd: the file as written; adamw: its optimizer swapped "
                        "(default: both)")
    args = parser.parse_args()
    if args.world < 2:
        parser.error("--world must be at least 2")
    cmp.require_binary(parser, args.dtl)
    kit.announce_sabotage()
    cases = list(CASES) if args.case == "all" else [args.case]
    dtl_runs = {case: run_dtl_case(case, args.dtl.resolve(), args.workdir / case, args.world)
                for case in cases}
    jobs = [(case, dtl_runs[case][0], args.workdir / case / "ddp") for case in cases]
    seconds = run_ddp(args.world, jobs)
    print(f"DDP×{args.world} (gloo): {', '.join(cases)} in {seconds:.1f} s (wall, start-up "
          f"included)")
    comparisons = []
    for case, _, out in jobs:
        _, parallel, single = dtl_runs[case]
        comparisons += compare_case(case, args.world, parallel, single, read_ddp(args.world, out))
    cmp.finish(comparisons)


if __name__ == "__main__":
    sys.exit(main())
