"""The step predictor against this machine: predicted (`dtl explain
--cluster`) and measured (`dtl run`) step times of two models in a dozen
layouts each on 1 to 4 ranks, with the median and worst relative error and
Spearman's rank correlation between predicted and measured.

    .venv/bin/python benches/predict.py [--cluster clusters/local.yaml] [--calibrate] [--steps 20] [--json]

With `--calibrate` (or when the cluster file does not exist) the machine is
measured first (`dtl calibrate -o CLUSTER`), in the same run. The models are
benches/predict_mlp.dtl (3.4M parameters, synthetic rows) and
benches/predict_gpt.dtl (a 3.3M-parameter GPT on Moby-Dick's bytes), AdamW.
A measured step is the run's training seconds over its steps (summary.json,
rank 0), the first step's start-up included.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import ROOT, dtl_binary

MODELS = ["benches/predict_mlp.dtl", "benches/predict_gpt.dtl"]

# (name, --set settings): every layout of 1 to 4 ranks the two models take.
LAYOUTS = [
    ("1 rank", []),
    ("data 2", ["parallel.data=2"]),
    ("data 4", ["parallel.data=4"]),
    ("data 2, shard optimizer", ["parallel.data=2", "parallel.shard=optimizer"]),
    ("data 2, shard parameters", ["parallel.data=2", "parallel.shard=parameters"]),
    ("pipeline 2 × 2 pieces", ["parallel.pipeline=2", "parallel.micro_batches=2"]),
    ("pipeline 2 × 8 pieces", ["parallel.pipeline=2", "parallel.micro_batches=8"]),
    ("pipeline 4 × 4 pieces", ["parallel.pipeline=4", "parallel.micro_batches=4"]),
    ("tensor 2", ["parallel.tensor=2"]),
    ("tensor 4", ["parallel.tensor=4"]),
    ("data 2 × tensor 2", ["parallel.data=2", "parallel.tensor=2"]),
    ("data 2 × pipeline 2", ["parallel.data=2", "parallel.pipeline=2", "parallel.micro_batches=2"]),
]


def sets(settings):
    out = []
    for s in settings:
        out += ["--set", s]
    return out


def predicted(dtl, model, settings, cluster):
    cmd = [dtl, "explain", model, "--cluster", cluster, "--format", "json"] + sets(settings)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise SystemExit(f"{' '.join(cmd)}: {out.stderr}")
    return json.loads(out.stdout)["prediction"]["step_seconds"]


def measured(dtl, model, settings, steps, folder):
    cmd = [dtl, "run", model, "--device", "cpu", "-q", "--out", folder, "--overwrite",
           "--set", f"train.steps={steps}"] + sets(settings)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {out.stderr[-2000:]}")
    summary = json.loads((Path(folder) / "summary.json").read_text())
    return summary["train_seconds"] / summary["steps"]


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    for position, i in enumerate(order):
        r[i] = float(position)
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    mean = (n - 1) / 2
    cov = sum((x - mean) * (y - mean) for x, y in zip(ra, rb))
    var = sum((x - mean) ** 2 for x in ra)
    return cov / var


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cluster", default="clusters/local.yaml")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    dtl = str(dtl_binary())
    cluster = str((ROOT / args.cluster).resolve())
    if args.calibrate or not Path(cluster).exists():
        subprocess.run([dtl, "calibrate", "-o", cluster], cwd=ROOT, check=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            for name, settings in LAYOUTS:
                p = predicted(dtl, model, settings, cluster)
                m = measured(dtl, model, settings, args.steps, str(Path(tmp) / "run"))
                rows.append({"model": Path(model).stem, "layout": name,
                             "predicted_seconds": p, "measured_seconds": m,
                             "error": p / m - 1})
                if not args.json:
                    print(f"{Path(model).stem:12} {name:28} predicted {p * 1e3:8.1f} ms  "
                          f"measured {m * 1e3:8.1f} ms  {100 * (p / m - 1):+6.1f}%", flush=True)
    errors = [abs(r["error"]) for r in rows]
    result = {
        "rows": rows,
        "median_error": statistics.median(errors),
        "worst_error": max(errors),
        "spearman": spearman([r["predicted_seconds"] for r in rows],
                             [r["measured_seconds"] for r in rows]),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"median error {100 * result['median_error']:.1f}%, worst {100 * result['worst_error']:.1f}%, "
              f"Spearman {result['spearman']:.3f} over {len(rows)} runs")


if __name__ == "__main__":
    sys.exit(main())
