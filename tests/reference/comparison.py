"""Running `dtl run` and comparing its records and saved weights with a
PyTorch twin's: per-step loss, gradient norm and lr, the evaluations, every
final parameter and buffer, and the dtypes of safetensors files. Used by
twins.py, layers.py and bf16.py; the twins themselves are in twin_kit.py.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn



# ---------------------------------------------------------------------------
# dtl's side.
# ---------------------------------------------------------------------------
@dataclass
class DtlRun:
    steps: list
    evals: list
    out: Path
    seconds: float


def require_binary(parser, path):
    """Usage error (exit 2) unless `path` is an executable file."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        parser.error(f"{path} is not an executable dtl binary")


def run_dtl(binary, dtl_file, out, init=None, sets=(), flags=()):
    """`dtl run FILE --quiet --device cpu --out OUT [--init W] [--set ...]
    [FLAGS ...]`, into a fresh OUT (no checkpoint of an earlier run can
    linger)."""
    shutil.rmtree(out, ignore_errors=True)
    command = [str(binary), "run", str(dtl_file), "--quiet", "--device", "cpu",
               "--out", str(out)]
    if init is not None:
        command += ["--init", str(init)]
    for s in sets:
        command += ["--set", s]
    command += [str(f) for f in flags]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"FAIL: `{' '.join(command)}` exited {done.returncode}:\n"
                 f"{done.stdout}{done.stderr}")
    records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    return DtlRun(steps, evals, Path(out), seconds)


def read_safetensors(path):
    """{name: tensor} of a safetensors file, in the file's dtypes."""
    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def safetensors_dtypes(path):
    """{name: dtype string} straight from a safetensors header (8-byte
    little-endian length, then JSON), without trusting any loader."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
    return {n: v["dtype"] for n, v in header.items() if n != "__metadata__"}


# ---------------------------------------------------------------------------
# Comparing.
# ---------------------------------------------------------------------------
def relative(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def tolerance_of(tolerance, quantity):
    """A quantity's tolerance: `tolerance` is one number for every quantity,
    or a dict by quantity (loss, grad_norm, lr, eval_loss, eval_accuracy,
    weights). 0 claims bitwise equality."""
    if isinstance(tolerance, dict):
        return tolerance[quantity]
    return tolerance


@dataclass
class Comparison:
    """Worst differences of one run pair, quantity by quantity, and every
    difference above its tolerance."""

    name: str
    rows: list = field(default_factory=list)  # (quantity, worst, where, tolerance)
    failures: list = field(default_factory=list)

    def check(self, quantity, worst, where, tolerance):
        self.rows.append((quantity, worst, where, tolerance))
        if not worst <= tolerance:  # NaN fails too
            self.failures.append(f"{self.name}: {quantity} differs by {worst:.3e} "
                                 f"(tolerance {tolerance:.0e}) at {where}")

    def fail(self, message):
        self.failures.append(f"{self.name}: {message}")

    def print(self):
        for quantity, worst, where, tolerance in self.rows:
            mark = "ok" if worst <= tolerance else "MISMATCH"
            print(f"  {quantity:<14} {worst:10.3e}  (tol {tolerance:.0e})  {mark:<8} "
                  f"worst at {where}")


def compare_steps(c, dtl_steps, twin_steps, tolerance, quantities=("loss", "grad_norm", "lr")):
    """Per step: dtl's record against the twin's, relative to the twin's."""
    if len(dtl_steps) != len(twin_steps):
        c.fail(f"dtl wrote {len(dtl_steps)} step records, the twin ran {len(twin_steps)} steps")
        return
    for quantity in quantities:
        worst, where, first = 0.0, "-", None
        bound = tolerance_of(tolerance, quantity)
        for ours, theirs in zip(dtl_steps, twin_steps):
            d = relative(ours[quantity], theirs[quantity])
            if first is None and not d <= bound:
                first = theirs["step"]
            if not d <= worst:  # keeps the first NaN
                worst, where = d, (f"step {theirs['step']}: dtl {ours[quantity]!r} "
                                   f"vs twin {theirs[quantity]!r}")
        if first is not None:
            where += f" (first above tolerance at step {first})"
        c.check(quantity, worst, where, bound)
    skipped = [r["step"] for r in dtl_steps if r.get("skipped")]
    if skipped:
        c.fail(f"dtl skipped steps {skipped}")


def accuracy_gap(a, b):
    """Absolute difference of two accuracies; none on both sides (real-valued
    targets) is no difference, none on one side is infinitely far."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    return abs(a - b)


def compare_evals(c, dtl_evals, twin_evals, tolerance):
    """Every evaluation (each `eval_every` steps and at the end): loss
    relative, accuracy absolute (an arg-max tie could flip a row; at 1e-5
    agreement none does)."""
    if not twin_evals or len(dtl_evals) != len(twin_evals):
        c.fail(f"dtl wrote {len(dtl_evals)} evaluation records, the twin {len(twin_evals)}")
        return
    worst = {"eval_loss": (-1.0, "-"), "eval_accuracy": (-1.0, "-")}
    for ours, theirs in zip(dtl_evals, twin_evals):
        if (ours["step"], ours["eval_rows"]) != (theirs["step"], theirs["eval_rows"]):
            c.fail(f"evaluation at step {ours['step']} on {ours['eval_rows']} rows, the "
                   f"twin's at step {theirs['step']} on {theirs['eval_rows']} rows")
        for quantity, measure in (("eval_loss", relative), ("eval_accuracy", accuracy_gap)):
            d = measure(ours.get(quantity), theirs.get(quantity))
            if not d <= worst[quantity][0]:
                worst[quantity] = (d, f"step {theirs['step']}: dtl {ours.get(quantity)!r} "
                                      f"vs twin {theirs.get(quantity)!r}")
    for quantity, (d, where) in worst.items():
        c.check(quantity, d, where, tolerance_of(tolerance, quantity))


def compare_weights(c, dtl_weights, twin_state, tolerance, loose=None):
    """Every parameter and buffer: the same names, shapes, float32 in dtl's
    file, and values within `tolerance` of the tensor's scale:
    max|dtl − twin| / max|twin| (elementwise ratios explode near zero).

    `loose` maps a name to (slice, absolute tolerance, label) for the parts
    of a tensor whose value is not determined by the arithmetic: attention's
    key bias (see key_bias_slices). They are left out of the scale-relative
    check, and compared on their own with the absolute bound when one is
    given (`None`: not compared here)."""
    loose = loose or {}
    names, theirs = set(dtl_weights), set(twin_state)
    if names != theirs:
        c.fail(f"tensor names differ: only in dtl {sorted(names - theirs)}, "
               f"only in the twin {sorted(theirs - names)}")
    worst, where = 0.0, "-"
    worst_loose, where_loose, bound, label = 0.0, "-", None, None
    for name in sorted(names & theirs):
        ours, ref = dtl_weights[name], twin_state[name]
        if ours.dtype != torch.float32:
            c.fail(f"dtl stored `{name}` as {ours.dtype}, not float32")
        if tuple(ours.shape) != tuple(ref.shape):
            c.fail(f"`{name}`: dtl shape {tuple(ours.shape)}, twin {tuple(ref.shape)}")
            continue
        ours, ref = ours.double(), ref.double()  # num_batches_tracked: int64 in PyTorch
        if ref.numel() == 0:
            continue
        scale = max(ref.abs().max().item(), 1e-12)
        diff = (ours - ref).abs()
        if name in loose:
            part, bound, label = loose[name]
            d = diff[part].max().item()
            if not d <= worst_loose:
                worst_loose, where_loose = d, f"`{name}`[{part.start}:{part.stop}]"
            diff = diff.clone()
            diff[part] = 0.0
        d = diff.max().item() / scale
        if not d <= worst:
            i = int(diff.argmax())
            worst, where = d, (f"`{name}` element {i}: dtl {ours.flatten()[i].item()!r} "
                               f"vs twin {ref.flatten()[i].item()!r}")
    c.check("weights", worst, where, tolerance_of(tolerance, "weights"))
    if bound is not None:
        c.check(label, worst_loose, where_loose + " (absolute)", bound)


def key_bias_slices(model):
    """The key part of every nn.MultiheadAttention's in_proj_bias, left out
    of the comparison with nn.MultiheadAttention (and compared instead, with
    every other weight and bitwise, by the twins on dtl's own layout).

    Adding the same vector to every key shifts each query's scores by a
    constant, which softmax removes: the key bias's gradient is zero in
    exact arithmetic, and what it gets is rounding. Adam divides that
    rounding by its own size and moves the key bias by up to about lr per
    step, in directions set by the last bits of the arithmetic and with no
    effect on any output. nn.MultiheadAttention computes on a [T, B, dim]
    layout whose products round otherwise than dtl's [B, T, dim], so the two
    end with different key biases (1.5e-3 apart here) and the same losses:
    the value is not a property of the computation, and a bound on it would
    check nothing. Where the rounding is the same on both sides — the twin's
    attention written out on dtl's layout (`--written-out-attention`) — the
    key bias is compared as every other weight, bitwise."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            d = module.embed_dim
            out[f"{name}.in_proj_bias"] = (slice(d, 2 * d), None, "key bias")
    return out


def finish(comparisons):
    """Prints every failure and exits 1 if there was one."""
    failures = [f for c in comparisons for f in c.failures]
    if failures:
        print("\nFAIL: dtl and its PyTorch twin disagree:")
        for f in failures:
            print(f"  - {f}")
        sys.exit(1)
    print("\nall comparisons within tolerance")
