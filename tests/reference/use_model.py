"""A trained dtl model used from PyTorch, to check `dtl predict`, `dtl eval`
and `dtl generate` (tests/tracking.rs).

    python use_model.py predict PLAN.json WEIGHTS ROWS.csv PREDICTIONS.jsonl OUT.json
        ROWS.csv holds features then the label. Runs the plan-driven PyTorch
        model (torch_reference.PlanModel) on the rows and writes: the largest
        difference between its outputs and dtl's predictions, scikit-learn's
        metrics of dtl's predicted classes and probabilities against the
        labels, and PyTorch's mean cross-entropy.
    python use_model.py load PLAN.json WEIGHTS
        Loads the weights into the plan-driven PyTorch model with
        strict=True (`dtl export`'s file, tests/sharded.rs); fails if they
        do not fit.
    python use_model.py generate PLAN.json WEIGHTS PROMPT_IDS N OUT.json
        Greedy continuation, every token computed over the last T tokens
        (nanoGPT's loop): the new ids.
"""

import json
import os
import sys

os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from torch_reference import PlanModel  # noqa: E402

torch.set_num_threads(1)


def model_of(plan_path, weights_path):
    with open(plan_path) as f:
        plan = json.load(f)
    model = PlanModel(plan["model"])
    model.load_state_dict(load_file(weights_path), strict=True)
    model.eval()
    return plan, model


def predict(plan_path, weights_path, rows_path, predictions_path, out_path):
    from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

    plan, model = model_of(plan_path, weights_path)
    with open(rows_path) as f:
        rows = [[float(c) for c in line.split(",")] for line in f if line.strip()]
    features = torch.tensor([r[:-1] for r in rows], dtype=torch.float32) * plan["data"]["scale"]
    labels = [int(r[-1]) for r in rows]
    with open(predictions_path) as f:
        ours = [json.loads(line) for line in f if line.strip()]
    with torch.no_grad():
        theirs = model(features.reshape([len(rows)] + plan["data"]["sample_shape"]))
    outputs = torch.tensor([p["output"] for p in ours], dtype=torch.float64)
    probabilities = [p["probabilities"] for p in ours]
    classes = [p["class"] for p in ours]
    result = {
        "output_difference": (outputs - theirs.double()).abs().max().item(),
        "torch_loss": F.cross_entropy(theirs, torch.tensor(labels)).item(),
        "accuracy": accuracy_score(labels, classes),
        "f1_macro": f1_score(labels, classes, average="macro"),
        "f1_micro": f1_score(labels, classes, average="micro"),
        "top3": top_k_accuracy_score(labels, probabilities, k=3, labels=list(range(len(probabilities[0])))),
    }
    with open(out_path, "w") as f:
        json.dump(result, f)


def generate(plan_path, weights_path, prompt_ids, tokens, out_path):
    plan, model = model_of(plan_path, weights_path)
    window = plan["model"]["input"][1]
    ids = [int(i) for i in prompt_ids.split(",")]
    new = []
    with torch.no_grad():
        for _ in range(int(tokens)):
            x = torch.tensor([ids[-window:]], dtype=torch.float32)
            scores = model(x)[0, -1]
            nxt = int(scores.argmax())
            ids.append(nxt)
            new.append(nxt)
    with open(out_path, "w") as f:
        json.dump(new, f)


def load(plan_path, weights_path):
    model_of(plan_path, weights_path)


if __name__ == "__main__":
    {"predict": predict, "generate": generate, "load": load}[sys.argv[1]](*sys.argv[2:])
