"""Pipeline parallelism on CPU: the bubble of `dtl run` at 1, 2 and 4 stages
against `dtl explain`'s prediction, dtl against torch.distributed.pipelining
on the same split, and each rank's peak memory against explain's estimate.

    .venv/bin/python benches/pipeline.py [--steps 20] [--repeat 2] [--stages 2,4] [--json]

The model is benches/pipe_mlp.dtl (four hidden layers of width 1024 on the
digits, 4.3 M parameters, AdamW, micro_batch 256, norm clipping, no
dropout), cut with `--set parallel.…` into the layouts below; 8 pipeline
pieces of 32 rows. Its PyTorch twin is benches/torch_pipeline_train.py.
`--repeat` times, in turn (interleaved, so that all see the same machine
noise), each its own process(es), MKL_NUM_THREADS = OMP_NUM_THREADS =
`--threads` per rank, all from the same initial weights (the twin's,
handed to dtl with --init):

- dtl, 1 stage: the whole micro-batch of 256 rows in one pass;
- dtl, 1 stage, 8 pieces: micro_batch 32, accumulate 8, the same rows and
  the same 32-row passes as the pipeline's pieces: the reference a
  pipeline's time per step is divided by;
- dtl, P stages, GPipe and 1F1B, for P in `--stages` (dtl starts the P
  ranks through mpirun, oversubscribing when P exceeds the cores), split
  at layer 6 for 2 stages and at 4, 6, 8 for 4 (one or two hidden layers
  each);
- torch, P stages, ScheduleGPipe and Schedule1F1B over gloo, the same split
  and pieces.

Steps/s is the training loop only, timed inside the processes (dtl's
summary.json `steps_per_second`, rank 0; PyTorch's rank 0 from a barrier
after set-up); the best of the repeats counts. The bubble is explain's
(`bubble` in `dtl explain --format json`); with P ranks on P cores the
predicted time per step, relative to the 8-piece single stage, is
1 / (P · (1 − bubble)).

Memory (`--memory-width`, default 4096; 0 skips it): the same file with its
width 1024 replaced, so that parameters, gradients and AdamW's moments
(hundreds of MiB per stage) dominate libtorch's fixed cost, run for 2
steps without --init (dtl reads a whole --init file on every rank) in
each layout, every rank under a wrapper that takes its peak RSS from
wait4(2); again at width 16 for the fixed cost of the same ranks (libtorch,
MPI, data, code). Compared with explain's per-stage estimate. See
benches/README.md.
"""

import argparse
import ctypes
import importlib.metadata
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_common import require_dtl, thread_env

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "benches" / "pipe_mlp.dtl"
TWIN = ROOT / "benches" / "torch_pipeline_train.py"
WIDTH = 1024  # the file's hidden width, which the memory runs replace
MICRO_BATCH = 256  # the file's train.micro_batch
PIECES = 8  # parallel.micro_batches of every pipelined layout
# Where stages 2, 3, … begin (dtl's layer names, the twin's Sequential
# indices): every stage one or two of the four equal hidden layers.
SPLITS = {2: ["6"], 4: ["4", "6", "8"]}
SCHEDULES = {"gpipe": ("gpipe", "GPipe"), "1f1b": ("one_f_one_b", "1F1B")}
MEMORY_STEPS = 2
FIXED_WIDTH = 16
MiB = 1 << 20


@dataclass
class Layout:
    key: str
    label: str
    stages: int
    schedule: str | None  # a key of SCHEDULES; None for one stage
    sets: list


def layouts(stage_counts):
    one = ["parallel.pipeline=1", "parallel.micro_batches=1", "parallel.split=auto"]
    found = [
        Layout("1", "1 stage", 1, None, one),
        Layout("1x8", f"1 stage, {PIECES} pieces", 1, None,
               one + [f"train.micro_batch={MICRO_BATCH // PIECES}", f"train.accumulate={PIECES}"]),
    ]
    for stages in stage_counts:
        split = "[" + ", ".join(f'"{s}"' for s in SPLITS[stages]) + "]"
        for key, (dtl_name, label) in SCHEDULES.items():
            found.append(Layout(f"{stages}-{key}", f"{stages} stages, {label}", stages, key, [
                f"parallel.pipeline={stages}", f"parallel.micro_batches={PIECES}",
                f"parallel.schedule={dtl_name}", f"parallel.split={split}"]))
    return found


def rank_env(threads):
    env = thread_env(threads)
    # Open MPI refuses root without these (dtl sets them for the mpirun it
    # starts; the memory runs' wrapper starts it the same way).
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


# ---------------------------------------------------------------------------
# Processes: every command in its own session, with a deadline; on time-out
# or Ctrl-C the whole group goes (mpirun ends its ranks on SIGTERM).


def stop_group(pid):
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.05)


def run(cmd, env, timeout, what):
    """(stdout, peak RSS in KiB of the process itself) of a command that
    must succeed within `timeout` seconds."""
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    stop_group(proc.pid)
                    err.seek(0)
                    raise SystemExit(f"{what}: still running after {timeout:.0f} s, stopped:\n"
                                     f"  {shlex.join(cmd)}\n{err.read()[-3000:]}")
                time.sleep(0.05)
        except BaseException:
            if proc.returncode is None:
                stop_group(proc.pid)
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n  {shlex.join(cmd)}\n"
                         f"{stderr[-3000:]}{stdout[-2000:]}")
    return stdout, usage.ru_maxrss


# ---------------------------------------------------------------------------
# Per-rank peak RSS: DTL_MPIRUN names a shim that puts a wrapper before each
# rank on dtl's own mpirun command line; the wrapper waits for its rank with
# wait4(2) and writes its ru_maxrss. Two hidden modes of this file.


def mpirun_shim(argv):
    """`--mpirun-shim REAL_MPIRUN RSS_DIR DTL MPIRUN_ARGS...`: dtl's mpirun
    arguments end with its own executable (`current_exe`) and the rank's
    arguments; the wrapper goes in front of the executable."""
    real, rss_dir, dtl, args = argv[0], argv[1], os.path.realpath(argv[2]), argv[3:]
    at = next((i for i, a in enumerate(args) if os.path.realpath(a) == dtl), None)
    if at is None:
        raise SystemExit(f"pipeline.py --mpirun-shim: {dtl} is not on mpirun's command line "
                         f"{args}")
    wrapper = [sys.executable, str(Path(__file__).resolve()), "--rank-rss", rss_dir, "--"]
    os.execv(real, [real] + args[:at] + wrapper + args[at:])


def die_with_parent():
    """The rank dies with its wrapper (prctl PR_SET_PDEATHSIG), so a stopped
    job leaves nothing behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def rank_rss(argv):
    """`--rank-rss RSS_DIR -- PROGRAM ARGS...`: runs one rank, writes
    RSS_DIR/rank-K.json with its peak RSS, exits with its status."""
    rss_dir, command = argv[0], argv[2:]
    rank = os.environ.get("OMPI_COMM_WORLD_RANK") or os.environ.get("PMIX_RANK") or "unknown"
    child = subprocess.Popen(command, preexec_fn=die_with_parent)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = code = os.waitstatus_to_exitcode(status)
    Path(rss_dir, f"rank-{rank}.json").write_text(
        json.dumps({"rank": int(rank), "max_rss_kib": usage.ru_maxrss}))
    sys.exit(code if code >= 0 else 128 - code)


def real_mpirun():
    """The mpirun dtl would use: DTL_MPIRUN, the virtualenv's, PATH's."""
    if os.environ.get("DTL_MPIRUN"):
        return Path(os.environ["DTL_MPIRUN"])
    venv = ROOT / ".venv" / "bin" / "mpirun"
    if venv.exists():
        return venv
    found = shutil.which("mpirun")
    if not found:
        raise SystemExit("no mpirun for the memory runs (DTL_MPIRUN, .venv/bin/mpirun, PATH)")
    return Path(found)


def write_shim(work, rss_dir, dtl):
    shim = Path(work) / "mpirun-shim"
    shim.write_text("#!/bin/sh\nexec " + shlex.join([
        sys.executable, str(Path(__file__).resolve()), "--mpirun-shim", str(real_mpirun()),
        str(rss_dir), str(dtl)]) + ' "$@"\n')
    shim.chmod(0o755)
    return shim


# ---------------------------------------------------------------------------
# dtl


def sets(layout, extra=()):
    out = []
    for s in list(layout.sets) + list(extra):
        out += ["--set", s]
    return out


def dtl_json(dtl, command, file, layout, extra, env, timeout):
    stdout, _ = run([dtl, command, file, "--format", "json", *sets(layout, extra)], env,
                    timeout, f"dtl {command} ({layout.label})")
    return json.loads(stdout)


def check_plan(plan, layout):
    """The plan is the layout asked for: its degrees, schedule and cuts."""
    got = plan["topology"]["parallelism"]
    stages = plan["topology"]["stages"]
    problems = []
    if got["pipeline"] != layout.stages or len(stages) != layout.stages:
        problems.append(f"{got['pipeline']} stages")
    if layout.stages > 1:
        if got["micro_batches"] != PIECES:
            problems.append(f"{got['micro_batches']} pieces")
        if got["schedule"] != SCHEDULES[layout.schedule][0]:
            problems.append(f"schedule {got['schedule']}")
        firsts = [plan["model"]["nodes"][s["first_node"]]["name"] for s in stages[1:]]
        if firsts != SPLITS[layout.stages]:
            problems.append(f"stages beginning at {firsts}")
    if problems:
        raise SystemExit(f"dtl's plan for {layout.label} is not the layout asked for: "
                         + ", ".join(problems))


def dtl_run(dtl, file, layout, steps, out, env, timeout, init=None, extra=()):
    """{"steps_per_second", "first_loss", "final_loss"} of one `dtl run`, and
    the launcher's own peak RSS (the one rank of a 1-stage run)."""
    cmd = [dtl, "run", file, "--device", "cpu", "-q", "--out", out, "--overwrite",
           *sets(layout, [f"train.steps={steps}", *extra])]
    if init:
        cmd += ["--init", init]
    _, rss = run(cmd, env, timeout, f"dtl run ({layout.label})")
    summary = json.loads((Path(out) / "summary.json").read_text())
    if summary["steps"] != steps or summary.get("world_size", 1) != layout.stages:
        raise SystemExit(f"dtl ran {summary['steps']} steps on {summary.get('world_size')} "
                         f"ranks, not {steps} on {layout.stages}")
    speed = summary.get("steps_per_second") or steps / summary["train_seconds"]
    return {"steps_per_second": speed, "first_loss": summary["first_loss"],
            "final_loss": summary["final_loss"]}, rss


def torch_run(layout, steps, threads, init, env, timeout):
    split = ",".join(SPLITS[layout.stages])
    stdout, _ = run([sys.executable, TWIN, "--split", split, "--schedule", layout.schedule,
                     "--micro-batches", PIECES, "--steps", steps, "--threads", threads,
                     "--init", init], env, timeout, f"torch ({layout.label})")
    result = json.loads(stdout.strip().splitlines()[-1])
    if result["steps"] != steps or result["stages"] != layout.stages:
        raise SystemExit(f"the torch twin ran {result}, not {steps} steps on {layout.stages}")
    return {k: result[k] for k in ("steps_per_second", "first_loss", "final_loss")}


# ---------------------------------------------------------------------------
# The three parts


def same_start(result, first, what):
    """Every run starts from the same weights on the same rows: its first
    loss must be the first run's."""
    if abs(result["first_loss"] - first) > 1e-5 * abs(first):
        raise SystemExit(f"{what} starts at loss {result['first_loss']!r}, the first dtl run at "
                         f"{first!r}: the runs do not do the same work")


def speed(dtl, chosen, args, env, work):
    """The timed runs, interleaved; the best of the repeats per layout."""
    init = Path(work) / "init.safetensors"
    run([sys.executable, TWIN, "--write-init", init], env, args.timeout, "the twin's weights")
    runs = {layout.key: {"dtl": [], "torch": []} for layout in chosen}
    first = None
    for i in range(args.repeat):
        for layout in chosen:
            result, _ = dtl_run(dtl, MODEL, layout, args.steps, Path(work) / layout.key, env,
                                args.timeout, init=init)
            first = result["first_loss"] if first is None else first
            same_start(result, first, f"dtl ({layout.label})")
            runs[layout.key]["dtl"].append(result)
            if layout.stages > 1:
                result = torch_run(layout, args.steps, args.threads, init, env, args.timeout)
                same_start(result, first, f"torch ({layout.label})")
                runs[layout.key]["torch"].append(result)
        print(f"run {i + 1}/{args.repeat}: " + ", ".join(
            f"{key} {r['dtl'][-1]['steps_per_second']:.2f}"
            + (f"/{r['torch'][-1]['steps_per_second']:.2f}" if r["torch"] else "")
            for key, r in runs.items()) + " steps/s (dtl/torch)", file=sys.stderr)
    return {key: {tool: max(results, key=lambda x: x["steps_per_second"])
                  for tool, results in r.items() if results}
            for key, r in runs.items()}


def widened(work, width):
    """benches/pipe_mlp.dtl with its hidden width replaced, in `work`."""
    text, replaced = re.subn(rf"\b{WIDTH}\b", str(width), MODEL.read_text())
    if not replaced:
        raise SystemExit(f"{MODEL} has no width {WIDTH} to replace: update WIDTH here")
    file = Path(work) / f"pipe_mlp_{width}.dtl"
    file.write_text(text)
    return file


def rank_peaks(dtl, file, layout, extra, env, work, timeout):
    """{rank: peak RSS in KiB} of a short `dtl run` of `file`."""
    tag = f"{layout.key}-{file.stem}"
    rss_dir = Path(work) / f"rss-{tag}"
    rss_dir.mkdir()
    env = dict(env, DTL_MPIRUN=str(write_shim(work, rss_dir, dtl)))
    _, own = dtl_run(dtl, file, layout, MEMORY_STEPS, Path(work) / f"mem-{tag}", env, timeout,
                     extra=extra)
    if layout.stages == 1:
        return {0: own}  # no mpirun: the process dtl_run waited for
    ranks = {r["rank"]: r["max_rss_kib"]
             for r in (json.loads(p.read_text()) for p in rss_dir.glob("rank-*.json"))}
    if sorted(ranks) != list(range(layout.stages)):
        raise SystemExit(f"memory run of {layout.label}: the peak RSS of ranks {sorted(ranks)}, "
                         f"not of 0 … {layout.stages - 1}")
    return ranks


def memory(dtl, chosen, width, env, work, timeout):
    """Each rank's peak RSS at `width` and at FIXED_WIDTH against explain's
    estimate for its stage at `width`."""
    big, small = widened(work, width), widened(work, FIXED_WIDTH)
    # The copies live in `work`: the data path is given whole.
    source = [f'data.digits.source=csv("{ROOT / "data" / "digits.csv.gz"}", label: -1)']
    rows = []
    for layout in chosen:
        if layout.key == "1x8":
            continue
        peaks = rank_peaks(dtl, big, layout, source, env, work, timeout)
        fixed = rank_peaks(dtl, small, layout, source, env, work, timeout)
        explained = dtl_json(dtl, "explain", big, layout, source, env, timeout)
        plan = dtl_json(dtl, "compile", big, layout, source, env, timeout)
        largest = max(math.prod(p["shape"]) for p in plan["model"]["parameters"])
        for stage in explained["stages"]:
            rank = stage["stage"]  # data = 1: rank r runs stage r
            rows.append({
                "layout": layout.label, "rank": rank,
                "estimate_bytes": stage["memory"]["total"],
                # Part of the estimate: what rank 0 receives at the end from
                # the other stages to write one unsharded model.safetensors.
                "gathered_bytes": stage["memory"].get("gathered", 0),
                "largest_tensor_bytes": 4 * largest,
                "rss_bytes": peaks[rank] * 1024, "fixed_bytes": fixed[rank] * 1024,
            })
    return rows


# ---------------------------------------------------------------------------


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--mpirun-shim":
        return mpirun_shim(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--rank-rss":
        return rank_rss(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per timed run")
    parser.add_argument("--repeat", type=int, default=2,
                        help="timed runs per layout; the best counts")
    parser.add_argument("--stages", default="2,4",
                        help=f"pipeline stage counts to run, of {sorted(SPLITS)} (1 always runs)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--memory-width", type=int, default=4096,
                        help="hidden width of the memory runs (0: no memory runs)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds any one command may take before it is stopped")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.steps < 1 or args.repeat < 1 or args.threads < 1 or args.memory_width < 0:
        parser.error("--steps, --repeat and --threads must be at least 1, --memory-width ≥ 0")
    try:
        stage_counts = sorted({int(s) for s in args.stages.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--stages: not a list of numbers: {args.stages!r}")
    if not set(stage_counts) <= set(SPLITS):
        parser.error(f"--stages: this model is split for {sorted(SPLITS)} stages only")

    dtl = require_dtl()
    env = rank_env(args.threads)
    chosen = layouts(stage_counts)
    with tempfile.TemporaryDirectory(prefix="dtl-pipeline-bench-") as work:
        bubble = {}
        for layout in chosen:
            check_plan(dtl_json(dtl, "compile", MODEL, layout, [], env, args.timeout), layout)
            bubble[layout.key] = dtl_json(dtl, "explain", MODEL, layout, [], env,
                                          args.timeout)["bubble"]
        best = speed(dtl, chosen, args, env, work)
        mem = memory(dtl, chosen, args.memory_width, env, work, args.timeout) \
            if args.memory_width else []

    reference = best["1x8"]["dtl"]["steps_per_second"]
    cores = len(os.sched_getaffinity(0))  # as dtl counts them for --oversubscribe
    rows = []
    for layout in chosen:
        d, t = best[layout.key]["dtl"], best[layout.key].get("torch")
        b = bubble[layout.key]
        rows.append({
            "layout": layout.label, "ranks": layout.stages, "schedule": layout.schedule,
            "oversubscribed": layout.stages > cores, "bubble": b,
            "dtl_steps_per_second": d["steps_per_second"],
            "time_per_step_vs_1_stage": reference / d["steps_per_second"],
            "predicted_time_per_step_vs_1_stage": 1 / (layout.stages * (1 - b)),
            "torch_steps_per_second": t and t["steps_per_second"],
            "dtl_over_torch": t and d["steps_per_second"] / t["steps_per_second"],
            "first_loss": d["first_loss"],
            "dtl_final_loss": d["final_loss"], "torch_final_loss": t and t["final_loss"],
        })
    for m in mem:
        m["rss_over_estimate"] = m["rss_bytes"] / m["estimate_bytes"]
        m["model_over_estimate"] = (m["rss_bytes"] - m["fixed_bytes"]) / m["estimate_bytes"]
    report = {
        "dtl": str(dtl), "torch": importlib.metadata.version("torch"),
        "model": str(MODEL.relative_to(ROOT)), "threads_per_rank": args.threads, "cpus": cores,
        "steps": args.steps, "repeat": args.repeat, "pieces": PIECES,
        "piece_rows": MICRO_BATCH // PIECES, "results": rows,
        "memory_width": args.memory_width, "memory_steps": MEMORY_STEPS,
        "fixed_width": FIXED_WIDTH, "memory": mem,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


def print_table(report):
    def opt(value, fmt):
        return "—" if value is None else format(value, fmt)

    print(f"dtl: {report['dtl']}   torch {report['torch']}   {report['model']}   "
          f"{report['threads_per_rank']} thread(s) per rank, {report['cpus']} CPUs   "
          f"{report['steps']} steps, best of {report['repeat']}   {report['pieces']} pieces "
          f"of {report['piece_rows']} rows")
    head = "{:<20} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11}"
    print(head.format("layout", "ranks", "bubble", "dtl st/s", "t/t1", "t/t1 pred",
                      "torch st/s", "dtl/torch", "dtl loss", "torch loss"))
    for r in report["results"]:
        star = " *" if r["oversubscribed"] else ""
        print(head.format(r["layout"] + star, r["ranks"], f"{r['bubble']:.0%}",
                          f"{r['dtl_steps_per_second']:.2f}",
                          f"{r['time_per_step_vs_1_stage']:.3f}",
                          f"{r['predicted_time_per_step_vs_1_stage']:.3f}"
                          if r["ranks"] > 1 else "—",
                          opt(r["torch_steps_per_second"], ".2f"),
                          opt(r["dtl_over_torch"], ".2f"),
                          f"{r['dtl_final_loss']:.6f}", opt(r["torch_final_loss"], ".6f")))
    print(f"t/t1: time per step over the 1-stage run in {report['pieces']}-piece passes; "
          "predicted 1 / (P (1 - bubble)), P ranks on P cores")
    if any(r["oversubscribed"] for r in report["results"]):
        print(f"* more ranks than the {report['cpus']} CPUs: the ranks share cores, so the best "
              f"possible t/t1 is 1/{report['cpus']}, and a rank's bubble is another's compute")
    if not report["memory"]:
        return
    largest = report["memory"][0]["largest_tensor_bytes"] / MiB
    print(f"\npeak RSS per rank (wait4) at width {report['memory_width']}, "
          f"{report['memory_steps']} steps; fixed: the same rank at width "
          f"{report['fixed_width']}; MiB")
    head = "{:<20} {:>4} {:>9} {:>9} {:>8} {:>10} {:>8} {:>15} {:>9}"
    print(head.format("layout", "rank", "estimate", "RSS", "fixed", "RSS-fixed", "RSS/est",
                      "(RSS-fixed)/est", "gathered"))
    for m in report["memory"]:
        print(head.format(m["layout"], m["rank"], f"{m['estimate_bytes'] / MiB:.1f}",
                          f"{m['rss_bytes'] / MiB:.1f}", f"{m['fixed_bytes'] / MiB:.1f}",
                          f"{(m['rss_bytes'] - m['fixed_bytes']) / MiB:.1f}",
                          f"{m['rss_over_estimate']:.2f}", f"{m['model_over_estimate']:.2f}",
                          f"{m['gathered_bytes'] / MiB:.1f}" if m["gathered_bytes"] else "—"))
    print("estimate: dtl explain's memory of the rank's stage (parameters, gradients, AdamW's "
          "moments, activations in flight,\nand on rank 0 the other stages' weights it gathers "
          "at the end: the gathered column).\nNot in it: temporaries (the optimizer step's, and "
          "one tensor copied while model.safetensors is written),\nat most small multiples of "
          f"the largest tensor ({largest:.1f} MiB).")


if __name__ == "__main__":
    main()
