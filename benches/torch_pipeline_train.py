"""The PyTorch side of benches/pipeline.py: benches/pipe_mlp.dtl written by
hand in torch.nn, cut into pipeline stages and trained with
torch.distributed.pipelining over gloo, one process per stage
(torch.multiprocessing), on CPU; prints rank 0's training speed as JSON.

    python torch_pipeline_train.py --split 6 --schedule 1f1b --steps 20 [--threads 1] [--init W]
    python torch_pipeline_train.py --split 4,6,8 --schedule gpipe --micro-batches 8 --steps 20
    python torch_pipeline_train.py --write-init W.safetensors

Everything is spelt out from the .dtl file: linear(64, 1024) |> relu, four
times linear(1024, 1024) |> relu, linear(1024, 10), as an nn.Sequential
whose indices are dtl's layer names (`0`, `1`, … `10`, so the state_dict
names are the plan's); the digits, scaled by 0.0625, 20% held out (dtl's
split and epoch order, tests/reference/dtl_order.py); AdamW (lr 1e-3,
betas (0.9, 0.999), eps 1e-8, weight decay 0.01, the single-tensor path
PyTorch takes on CPU); micro_batch 256, accumulate 1, clip = norm(1.0);
seed 0.

The pipeline: `--split` names the layers where stages 2, 3, … begin, as
dtl's `parallel.split` does (the driver gives both the same list); stage s
is `nn.Sequential` indices split[s-1] … split[s]-1, built by hand into a
`PipelineStage` (its input and output shapes given, so no shape inference
runs), driven by `ScheduleGPipe` or `Schedule1F1B` with `--micro-batches`
pieces of the 256 rows. Its loss_fn is the mean cross-entropy of a piece
and the schedule divides the gradients by the number of pieces
(`scale_grads`), which is dtl's `loss_scale` = 1 / pieces (exactly: a power
of two). Stage 0 reads the rows, the last stage their labels.

After the schedule, every stage does what dtl's step program does after its
`pipeline` op: one all-reduce over the stages of the squared gradient norm
(clip_grad_norm_'s over the whole model, which no stage can compute alone)
and of the step's loss (the mean over pieces, known on the last stage;
dtl shares it with every stage), then clipping by that global norm
(clip_grad_norm_'s formula), AdamW, zero_grad.

Only the training loop is timed, as dtl times its own: rank 0's wall time
over every step after a barrier that follows the set-up (process group,
data, model, stage, schedule), the first step (the schedule's buffers and
its first exchange with the neighbours) and each batch's selection
included.

Prints one line (rank 0): {"stages", "schedule", "micro_batches", "steps",
"train_seconds", "steps_per_second", "threads", "first_loss",
"final_loss"}.
"""

import argparse
import datetime
import json
import math
import os
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
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe  # noqa: E402

import dtl_order  # noqa: E402
import twin_kit  # noqa: E402  (the digits loader)

SEED = 0
WIDTH = 1024
MICRO_BATCH = 256
MAX_NORM = 1.0
SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
# A peer that has died or hangs ends the run after this long, not never.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=300)


def pipe_mlp():
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Linear(64, WIDTH), nn.ReLU(),
        nn.Linear(WIDTH, WIDTH), nn.ReLU(),
        nn.Linear(WIDTH, WIDTH), nn.ReLU(),
        nn.Linear(WIDTH, WIDTH), nn.ReLU(),
        nn.Linear(WIDTH, WIDTH), nn.ReLU(),
        nn.Linear(WIDTH, 10))


def stage_layers(model, split, stage):
    """Stage `stage`'s slice of the Sequential; slicing keeps the indices as
    names, so its state_dict names are the whole model's."""
    cuts = [0] + split + [len(model)]
    return model[cuts[stage]:cuts[stage + 1]]


def widths(layers):
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    return linears[0].in_features, linears[-1].out_features


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clip_coefficient(norm):
    """clip_grad_norm_'s factor: max / (norm + 1e-6), at most 1."""
    return min(1.0, MAX_NORM / (norm + 1e-6))


def stage_rank(rank, split, schedule_name, micro_batches, port, steps, threads, init, out):
    torch.set_num_threads(threads)
    stages = len(split) + 1
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=stages, timeout=COLLECTIVE_TIMEOUT)
    try:
        data = twin_kit.digits(shape=[64], scale=0.0625, valid=0.2)
        train_rows, _ = dtl_order.split(len(data.targets), data.valid, SEED)
        x_train, y_train = data.features[train_rows], data.targets[train_rows]
        batches = dtl_order.BatchOrder(len(train_rows), MICRO_BATCH, SEED)
        model = pipe_mlp()
        if init:
            model.load_state_dict(load_file(init))
        layers = stage_layers(model, split, rank)
        del model
        piece = MICRO_BATCH // micro_batches
        width_in, width_out = widths(layers)
        stage = PipelineStage(layers, rank, stages, torch.device("cpu"),
                              input_args=torch.empty(piece, width_in, device="meta"),
                              output_args=torch.empty(piece, width_out, device="meta"))
        schedule = SCHEDULES[schedule_name](
            stage, micro_batches, loss_fn=lambda out, y: F.cross_entropy(out, y))
        params = list(layers.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                      weight_decay=0.01, foreach=False)
        layers.train()
        first, last = rank == 0, rank == stages - 1
        losses = []
        dist.barrier()
        started = time.perf_counter()
        for _ in range(steps):
            idx = torch.tensor(batches.next())
            pieces = []
            if first:
                schedule.step(x_train[idx], return_outputs=False)
            elif last:
                schedule.step(target=y_train[idx], losses=pieces, return_outputs=False)
            else:
                schedule.step(return_outputs=False)
            # clip_grad_norm_ over the whole model: this stage's share of the
            # squared norm, summed over the stages with the step's loss.
            own = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad, 2.0) for p in params]), 2.0)
            loss = sum(p.item() for p in pieces) / micro_batches if last else 0.0
            shared = torch.tensor([own.item() ** 2, loss], dtype=torch.float64)
            dist.all_reduce(shared)
            coefficient = clip_coefficient(math.sqrt(shared[0].item()))
            for p in params:
                p.grad.mul_(coefficient)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(shared[1].item())
        seconds = time.perf_counter() - started
        if rank == 0:
            Path(out).write_text(json.dumps({
                "stages": stages, "schedule": schedule_name, "micro_batches": micro_batches,
                "steps": steps, "train_seconds": seconds, "steps_per_second": steps / seconds,
                "threads": torch.get_num_threads(), "first_loss": losses[0],
                "final_loss": losses[-1]}))
    finally:
        dist.destroy_process_group()


def split_list(text):
    try:
        split = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of layer indices: {text!r}")
    if not split or split != sorted(set(split)) or split[0] < 1 or split[-1] > 10:
        raise argparse.ArgumentTypeError(
            f"stages must begin at increasing layers 1 … 10: {text!r}")
    return split


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=split_list, default=[6],
                        help="layers where stages 2, 3, … begin (default 6: two stages)")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="1f1b")
    parser.add_argument("--micro-batches", type=int, default=8,
                        help="pieces each micro-batch of 256 rows is cut into")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--init", help="initial weights (safetensors, state_dict names)")
    parser.add_argument("--write-init", metavar="PATH",
                        help="only write the seeded initial weights to PATH")
    args = parser.parse_args()
    if args.write_init:
        save_file({n: t.contiguous() for n, t in pipe_mlp().state_dict().items()},
                  args.write_init)
        return
    if args.micro_batches < 1 or MICRO_BATCH % args.micro_batches:
        parser.error(f"--micro-batches must divide {MICRO_BATCH}")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    stages = len(args.split) + 1
    with tempfile.TemporaryDirectory(prefix="dtl-pipeline-bench-") as work:
        out = Path(work) / "rank0.json"
        # Forked, not spawned: the ranks start with torch already imported
        # instead of importing it again each (seconds per process on a busy
        # 2-core machine). Nothing in this process has started a thread
        # pool before the fork.
        mp.start_processes(stage_rank, args=(args.split, args.schedule, args.micro_batches,
                                             free_port(), args.steps, args.threads, args.init,
                                             str(out)),
                           nprocs=stages, join=True, start_method="fork")
        print(out.read_text())


if __name__ == "__main__":
    main()
