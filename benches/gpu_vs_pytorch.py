"""Training speed and peak GPU memory of dtl against PyTorch on one GPU: the
GPT-style character model of examples/gpu/gpt_char.dtl against its
hand-written twin (benches/gpt_char_torch.py), in eager mode and under
torch.compile, in fp32, tf32 and bf16.

    python benches/gpu_vs_pytorch.py [--steps 300] [--skip 10] [--repeat 1]
                                     [--precisions fp32,tf32,bf16] [--no-compile]
                                     [--micro-batch 32] [--device cuda] [--json]

Binary: DTL_BIN, else target/release/dtl, else target/debug/dtl. Python:
this interpreter (its torch is the one dtl must load: LD_LIBRARY_PATH is set
to its torch/lib for the dtl runs).

For each precision, R times in turn (interleaved, so that all see the same
machine noise), all from the same initial weights (the twin's seeded
initialisers, `--write-init`, handed to dtl with `--init`):

  dtl      `dtl run examples/gpu/gpt_char.dtl --device cuda --init W
            --set train.precision=P` (steps/s from its summary.json: the
            training loop only, the first step included)
  eager    gpt_char_torch.py --precision P
  compile  gpt_char_torch.py --precision P --compile (not for tf32 unless
            asked: --compile-precisions)

bf16 is dtl's `precision = bf16` against torch.autocast(bfloat16); tf32 is
dtl's `precision = tf32` against torch.set_float32_matmul_precision("high").

Steps/s counts every step, the first included (compilation for the compiled
model); "steady" leaves out the first --skip steps (PyTorch's runs only:
dtl reports one figure). Peak GPU memory is the whole process's, sampled
from nvidia-smi every 50 ms for both tools alike (CUDA context included);
PyTorch's own torch.cuda.max_memory_allocated is in --json.

The first step's loss of dtl and of eager PyTorch must agree (same weights,
same first batch): within 1e-4 relative in fp32, 1e-2 in tf32 and bf16; a
larger difference stops the benchmark, since the two programs would not be
doing the same work. With `--device cpu` (and a small --micro-batch and
--steps) the whole driver runs without a GPU, as a smoke test; memory is
then not measured.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_common import dtl_binary

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "gpu" / "gpt_char.dtl"
TWIN = ROOT / "benches" / "gpt_char_torch.py"
MIB = 1024 * 1024
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 1e-2}


def torch_env():
    """dtl loads libtorch from this Python's torch (the version it was built
    against: 2.11.0)."""
    import torch
    env = dict(os.environ)
    lib = str(Path(torch.__file__).parent / "lib")
    env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


class GpuMemory:
    """The largest GPU memory nvidia-smi reports for one process while it
    runs (MiB), sampled every 50 ms in a thread."""

    def __init__(self, pid):
        self.pid, self.peak, self.done = str(pid), 0, threading.Event()
        self.smi = shutil.which("nvidia-smi")
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while self.smi and not self.done.is_set():
            try:
                out = subprocess.run(
                    [self.smi, "--query-compute-apps=pid,used_memory",
                     "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.TimeoutExpired):
                return
            for line in out.splitlines():
                fields = [f.strip() for f in line.split(",")]
                if len(fields) == 2 and fields[0] == self.pid and fields[1].isdigit():
                    self.peak = max(self.peak, int(fields[1]))
            self.done.wait(0.05)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.peak if self.smi else None


def run(cmd, env):
    """Runs cmd to the end; its stdout and peak GPU memory (MiB or None)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        memory = GpuMemory(proc.pid)
        proc.wait()
        peak = memory.stop()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{stderr}{stdout}")
    return stdout, peak


def dtl_run(args, precision, init, work, env):
    out = work / f"dtl-{precision}"
    sets = [f"train.steps={args.steps}", f"train.precision={precision}",
            f"train.micro_batch={args.micro_batch}"]
    cmd = [dtl_binary(), "run", MODEL, "--device", args.device, "--init", init, "-q",
           "--out", out, "--overwrite", *[a for s in sets for a in ("--set", s)]]
    _, peak = run(cmd, env)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == args.steps, summary
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    return {"steps_per_second": summary["steps_per_second"], "steady_steps_per_second": None,
            "first_loss": losses[0], "final_loss": losses[-1], "gpu_peak_mib": peak}


def torch_run(args, precision, compiled, init, env):
    cmd = [sys.executable, TWIN, "--device", args.device, "--precision", precision,
           "--steps", args.steps, "--skip", args.skip, "--micro-batch", args.micro_batch,
           "--init", init]
    if compiled:
        cmd.append("--compile")
    stdout, peak = run(cmd, env)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["steps"] == args.steps, result
    return {"steps_per_second": result["steps_per_second"],
            "steady_steps_per_second": result["steady_steps_per_second"],
            "first_loss": result["first_loss"], "final_loss": result["final_loss"],
            "gpu_peak_mib": peak,
            "torch_max_allocated_mib": (result["cuda_max_allocated_bytes"] / MIB
                                        if result["cuda_max_allocated_bytes"] else None)}


def best(runs):
    """The fastest of the repeats; the largest memory of them."""
    top = dict(max(runs, key=lambda r: r["steps_per_second"]))
    peaks = [r["gpu_peak_mib"] for r in runs if r["gpu_peak_mib"] is not None]
    top["gpu_peak_mib"] = max(peaks) if peaks else None
    return top


def ratio(a, b):
    return a / b if a and b else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip", type=int, default=10, help="steps left out of PyTorch's steady rate")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest counts")
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--precisions", default="fp32,tf32,bf16")
    parser.add_argument("--compile-precisions", default="fp32,bf16",
                        help="precisions that also run under torch.compile")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    precisions = [p for p in args.precisions.split(",") if p]
    for p in precisions:
        if p not in TOLERANCE:
            parser.error(f"unknown precision {p!r} (fp32, tf32, bf16)")
    compile_for = set() if args.no_compile else set(args.compile_precisions.split(","))
    if args.steps <= args.skip:
        parser.error("--steps must be larger than --skip")
    env = torch_env()
    dtl = dtl_binary()
    if not dtl.exists():
        raise SystemExit(f"{dtl} does not exist: cargo build --release (or set DTL_BIN)")

    report = {"dtl": str(dtl), "device": args.device, "steps": args.steps, "skip": args.skip,
              "repeat": args.repeat, "micro_batch": args.micro_batch, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        init = work / "init.safetensors"
        subprocess.run([sys.executable, TWIN, "--write-init", init], cwd=ROOT, env=env, check=True)
        for precision in precisions:
            runs = {"dtl": [], "eager": [], "compile": []}
            for i in range(args.repeat):
                runs["dtl"].append(dtl_run(args, precision, init, work, env))
                runs["eager"].append(torch_run(args, precision, False, init, env))
                if precision in compile_for:
                    runs["compile"].append(torch_run(args, precision, True, init, env))
                print(f"{precision} run {i + 1}/{args.repeat}: " + ", ".join(
                    f"{tool} {r[-1]['steps_per_second']:.2f} steps/s"
                    for tool, r in runs.items() if r), file=sys.stderr)
            row = {"precision": precision, **{t: best(r) for t, r in runs.items() if r}}
            d, e = row["dtl"], row["eager"]
            gap = abs(d["first_loss"] - e["first_loss"]) / abs(e["first_loss"])
            if gap > TOLERANCE[precision]:
                raise SystemExit(f"{precision}: dtl's first loss {d['first_loss']} and PyTorch's "
                                 f"{e['first_loss']} differ by {gap:.2e} (relative): the two "
                                 "programs do not do the same work")
            row["first_loss_gap"] = gap
            row["dtl_over_eager"] = ratio(d["steps_per_second"], e["steps_per_second"])
            row["dtl_over_eager_steady"] = ratio(d["steps_per_second"], e["steady_steps_per_second"])
            if "compile" in row:
                row["dtl_over_compile_steady"] = ratio(d["steps_per_second"],
                                                       row["compile"]["steady_steps_per_second"])
            row["memory_dtl_over_eager"] = ratio(d["gpu_peak_mib"], e["gpu_peak_mib"])
            report["results"].append(row)

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"dtl: {report['dtl']}   device {args.device}   GPT-style character model "
          f"(19.1 M parameters), micro-batch {args.micro_batch}, {args.steps} steps, "
          f"best of {args.repeat}")

    def f(x, spec=".1f"):
        return format(x, spec) if x is not None else "–"

    header = ("precision", "dtl st/s", "eager st/s", "(steady)", "compile st/s", "(steady)",
              "dtl/eager", "(steady)", "dtl/compile", "GPU MiB dtl", "eager", "compile")
    print("{:<9} {:>9} {:>10} {:>9} {:>12} {:>9} {:>9} {:>9} {:>11} {:>11} {:>7} {:>7}".format(*header))
    for r in report["results"]:
        d, e, c = r["dtl"], r["eager"], r.get("compile", {})
        print("{:<9} {:>9} {:>10} {:>9} {:>12} {:>9} {:>9} {:>9} {:>11} {:>11} {:>7} {:>7}".format(
            r["precision"], f(d["steps_per_second"], ".2f"), f(e["steps_per_second"], ".2f"),
            f(e["steady_steps_per_second"], ".2f"), f(c.get("steps_per_second"), ".2f"),
            f(c.get("steady_steps_per_second"), ".2f"), f(r["dtl_over_eager"], ".2f") + "x",
            f(r["dtl_over_eager_steady"], ".2f") + "x",
            (f(r["dtl_over_compile_steady"], ".2f") + "x") if "dtl_over_compile_steady" in r else "–",
            f(d["gpu_peak_mib"], "d"), f(e["gpu_peak_mib"], "d"), f(c.get("gpu_peak_mib"), "d")))
    print("first-step loss, dtl against eager (relative): " + ", ".join(
        f"{r['precision']} {r['first_loss_gap']:.1e}" for r in report["results"]))


if __name__ == "__main__":
    main()
