"""dtl's DiLoCo groups against a hand-written PyTorch DiLoCo program, step
for step.

    python tests/reference/diloco.py DTL_BINARY WORKDIR

The experiment is tests/reference/layers/ddp_mlp.dtl (linear(64, 64) |>
relu |> linear(64, 10) on the digits, no dropout, micro_batch = 8,
accumulate = 2, clip = norm(1.0)) with AdamW as the inner optimizer and
`parallel { data = 4; groups = 2; sync = diloco(period: 4, outer_lr: 0.7,
outer_momentum: 0.9) }`: 2 groups of 2 replicas, 30 steps (the last period
partial: 30 = 7 × 4 + 2). dtl starts 4 ranks itself through mpirun.

The PyTorch side is one process with its own loop (DiLoCo, Douillard et
al. 2023, as docs/distributed.md states it):

- θ_global, a copy of the twin, with torch.optim.SGD(lr = 0.7, momentum =
  0.9, nesterov = True) as the outer optimizer;
- 2 groups, each a copy of the twin with its own torch.optim.AdamW. At
  step k every replica r (0 … 3; group r // 2) reads rows 8r … 8r + 7 of
  each global micro-batch of 32 rows in dtl's epoch order (dtl_order.py);
  a group's gradient is the mean of its replicas' (each replica's mean
  loss × 1/accumulate, backward), then clip_grad_norm_(1.0) and the AdamW
  step at lr(k);
- after steps 4, 8, … and after the last: θ_global's gradient is θ_global
  − the mean of the groups' weights, the outer SGD steps, and every group
  continues from θ_global (its AdamW state its own);
- the step's loss is the mean over the replicas; the gradient norm the
  mean over the replicas of each one's (its group's, before clipping).

Then the same with streaming DiLoCo (Douillard et al. 2025), `fragments:
2, delay: 1, outer_precision: bf16`, as docs/distributed.md states it:

- the parameters, in the model's order, cut into 2 runs of about equal
  values (a run closes once its values reach its share): `0.weight`, and
  `0.bias`, `2.weight`, `2.bias`;
- fragment f meets after steps (f + 1)·2, then every 4: fragment 0 after
  steps 2, 6, …, fragment 1 after 4, 8, …;
- a meeting after step s: each group's change θ_global − θ_group of the
  fragment, rounded to bfloat16, summed over the groups in bfloat16, and
  divided by the groups in float32; it lands after step s + 1 (the delay):
  the fragment's outer SGD step with that mean change, and every group
  takes θ_global for the fragment (the inner step between is let go);
- after the last step the change on the wire lands, and every fragment that
  did not meet right then meets at once.

Compared: every step's loss, gradient norm and learning rate, and the final
weights (dtl's model.safetensors against θ_global). Tolerances at most 10×
the worst measured (see TOLERANCE). DTL_TWIN_SABOTAGE=plain_momentum makes
the twin's outer SGD non-Nesterov, =no_outer_lr an outer_lr of 1,
=no_delay lands the streaming changes at once, =fp32_changes leaves them in
float32, so that a run shows the checks fail.
"""

import argparse
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import dtl_order
import torch
from safetensors.torch import load_file
from torch import nn

DTL_FILE = Path(__file__).resolve().parent / "layers" / "ddp_mlp.dtl"
MICRO_BATCH = 8
REPLICAS, GROUPS, PERIOD, STEPS = 4, 2, 4, 30
OUTER_LR, OUTER_MOMENTUM = 0.7, 0.9
# Relative; weights: max |difference| over the tensor's largest magnitude.
# 10× the worst measured on the 2-core development machine (torch 2.11.0
# CPU, Open MPI 5.0.11, a debug build of dtl; 2026-12-05): loss 1.0e-7,
# grad_norm 9.1e-8, weights 4.8e-7; the learning rates are equal. The
# rows of a group are summed as 2 blocks of 8 in both, but dtl sums the
# replicas' gradients over MPI and the twin in one tensor, and the
# outer step rounds lr·update and the subtraction apart where torch's SGD
# fuses them.
TOLERANCE = {"loss": 1.0e-6, "grad_norm": 9.1e-7, "lr": 0.0, "weights": 4.8e-6}
# Streaming (fragments 2, delay 1, bf16 changes), 10× the worst measured
# the same way: loss 3.5e-8, grad_norm 1.1e-7, weights 9.8e-8 (each
# group's change rounds to the same bfloat16 in both, and so does their
# sum).
STREAMING_TOLERANCE = {"loss": 3.5e-7, "grad_norm": 1.1e-6, "lr": 0.0, "weights": 9.8e-7}


def twin():
    """(model, data, recipe) of ddp_mlp.dtl with AdamW, every constant
    spelt out; the model with PyTorch's initialisers seeded by the seed."""
    seed = 3
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    data = kit.digits(shape=[64], scale=0.0625, valid=0.2)
    recipe = kit.Recipe(steps=STEPS, micro_batch=MICRO_BATCH, accumulate=2,
                        optimizer="adamw", lr=3e-3,
                        optimizer_args=dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
                        clip=("norm", 1.0, 2.0), seed=seed)
    return model, data, recipe


STREAMING = dict(fragments=2, delay=1, bf16=True)


def sets(streaming):
    """dtl's settings: DiLoCo, or streaming DiLoCo."""
    extra = ""
    if streaming:
        extra = (f", fragments: {STREAMING['fragments']}, delay: {STREAMING['delay']}, "
                 "outer_precision: bf16")
    return [
        "train.optimizer=adamw(lr: 3e-3, weight_decay: 0.01)",
        f"train.steps={STEPS}",
        f"parallel.data={REPLICAS}",
        f"parallel.groups={GROUPS}",
        f"parallel.sync=diloco(period: {PERIOD}, outer_lr: {OUTER_LR}, "
        f"outer_momentum: {OUTER_MOMENTUM}{extra})",
    ]


def fragments_of(params, count):
    """The parameters' indices cut into `count` runs in order, each closed
    once its values reach its share of the whole (and leaving one for each
    run after it)."""
    values = [p.numel() for p in params]
    total, runs, start, acc = sum(values), [], 0, 0
    for i, v in enumerate(values):
        acc += v
        closing = len(runs) + 1
        if closing == count:
            break
        left = len(values) - i - 1
        if (acc * count >= total * closing and left >= count - closing) or left == count - closing:
            runs.append(list(range(start, i + 1)))
            start = i + 1
    runs.append(list(range(start, len(values))))
    return runs


class Streaming:
    """The outer side of (streaming) DiLoCo over `groups` [(model,
    optimizer)], θ_global in `global_params` stepped by `outer`."""

    def __init__(self, groups, global_params, outer, fragments, delay, bf16):
        self.groups, self.global_params, self.outer = groups, global_params, outer
        self.fragments = fragments_of(global_params, fragments)
        self.after = [(f + 1) * PERIOD // fragments for f in range(fragments)]
        self.delay = 0 if kit.sabotaged("no_delay") else delay
        self.bf16 = bf16 and not kit.sabotaged("fp32_changes")
        self.in_flight = None  # (fragment, started, [mean change])

    def start(self, f, step):
        changes = []
        for i in self.fragments[f]:
            per_group = [self.global_params[i].detach() - list(m.parameters())[i].detach()
                         for m, _ in self.groups]
            if self.bf16:
                total = per_group[0].bfloat16()
                for change in per_group[1:]:
                    total = total + change.bfloat16()
                changes.append(total.float() / len(self.groups))
            else:
                changes.append(sum(per_group[1:], per_group[0]) / len(self.groups))
        self.in_flight = (f, step, changes)

    def land(self):
        f, _, changes = self.in_flight
        self.in_flight = None
        with torch.no_grad():
            for p in self.global_params:
                p.grad = None
            for i, change in zip(self.fragments[f], changes):
                self.global_params[i].grad = change.clone()
        # SGD skips parameters without a gradient: only the fragment moves
        # (its momentum buffers are its own).
        self.outer.step()
        self.outer.zero_grad()
        with torch.no_grad():
            for model_g, _ in self.groups:
                for i in self.fragments[f]:
                    list(model_g.parameters())[i].copy_(self.global_params[i])

    def after_step(self, step):
        if self.in_flight is not None and self.in_flight[1] + self.delay == step:
            self.land()
        for f, first in enumerate(self.after):
            if step >= first and (step - first) % PERIOD == 0:
                self.start(f, step)
                if self.delay == 0:
                    self.land()

    def finish(self, step):
        landing = None
        if self.in_flight is not None:
            landing = self.in_flight[0]
            self.land()
        for f, first in enumerate(self.after):
            landed_now = step >= first + self.delay and (step - first - self.delay) % PERIOD == 0
            if f != landing and not landed_now:
                self.start(f, step)
                self.land()


def train_twin(init, streaming):
    """{"steps", "state"}: the hand-written DiLoCo run from `init`
    (streaming DiLoCo with `streaming`)."""
    model, data, recipe = twin()
    model.load_state_dict(load_file(str(init)))
    outer_model = model
    groups = []
    for _ in range(GROUPS):
        copy, _, _ = twin()
        copy.load_state_dict(model.state_dict())
        groups.append((copy, kit.make_optimizer(recipe, list(copy.parameters()))))
    global_params = list(outer_model.parameters())
    nesterov = not kit.sabotaged("plain_momentum")
    outer_lr = 1.0 if kit.sabotaged("no_outer_lr") else OUTER_LR
    outer = torch.optim.SGD(global_params, lr=outer_lr, momentum=OUTER_MOMENTUM,
                            nesterov=nesterov)
    schedule = (dict(STREAMING) if streaming else dict(fragments=1, delay=0, bf16=False))
    meetings = Streaming(groups, global_params, outer, **schedule)
    train_rows, _ = dtl_order.split(len(data.targets), data.valid, recipe.seed)
    x_train, y_train = data.features[train_rows], data.targets[train_rows]
    batches = dtl_order.BatchOrder(len(train_rows), REPLICAS * MICRO_BATCH, recipe.seed)
    per_group = REPLICAS // GROUPS
    steps = []
    for k in range(1, STEPS + 1):
        micro = [batches.next() for _ in range(recipe.accumulate)]
        loss_sum, norms = 0.0, []
        lr = kit.lr_at(recipe, k)
        for g, (model_g, inner) in enumerate(groups):
            params = list(model_g.parameters())
            for replica in range(g * per_group, (g + 1) * per_group):
                for rows in micro:
                    idx = torch.tensor(rows[replica * MICRO_BATCH:(replica + 1) * MICRO_BATCH])
                    loss = kit.loss_fn(recipe, model_g(x_train[idx]), y_train[idx])
                    loss = loss * (1.0 / recipe.accumulate)
                    loss.backward()
                    loss_sum += loss.item()
            for p in params:
                p.grad.div_(per_group)
            _, max_norm, norm_type = recipe.clip
            norm = nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type).item()
            norms += [norm] * per_group
            for group in inner.param_groups:
                group["lr"] = lr
            inner.step()
            inner.zero_grad()
        meetings.after_step(k)
        if k == STEPS:
            meetings.finish(k)
        steps.append({"step": k, "loss": loss_sum / REPLICAS, "lr": lr,
                      "grad_norm": sum(norms) / REPLICAS})
    state = {n: t.detach().clone() for n, t in outer_model.state_dict().items()}
    return {"steps": steps, "state": state}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args()
    cmp.require_binary(parser, args.dtl)
    kit.announce_sabotage()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model, _, _ = twin()
    init = args.workdir / "init.safetensors"
    kit.save_init(model, init)
    comparisons = []
    for streaming, name, tolerance in [(False, "DiLoCo", TOLERANCE),
                                       (True, "streaming DiLoCo", STREAMING_TOLERANCE)]:
        run = cmp.run_dtl(args.dtl.resolve(), DTL_FILE, args.workdir / name.replace(" ", "_"),
                          init=init, sets=sets(streaming))
        reference = train_twin(init, streaming)
        c = cmp.Comparison(f"dtl {name} ({REPLICAS} replicas in {GROUPS} groups, period "
                           f"{PERIOD}) vs the PyTorch program")
        cmp.compare_steps(c, run.steps, reference["steps"], tolerance)
        cmp.compare_weights(c, cmp.read_safetensors(run.out / "model.safetensors"),
                            reference["state"], tolerance["weights"])
        print(f"{name}: {STEPS} steps; dtl {run.seconds:.1f} s (wall, start-up included); "
              "worst relative differences ('twin': the PyTorch program):")
        c.print()
        comparisons.append(c)
    cmp.finish(comparisons)


if __name__ == "__main__":
    sys.exit(main())
