"""What reading an image folder with random crops, flips and normalisation
costs a training step (issue 20: the transforms must not slow a step).

Writes a CIFAR-sized folder (10 classes × 300 PNGs of 32×32 RGB) and
trains one small CNN on it four ways, best of N each:

- dtl, `images(...)` with `random_crop = 4`, `horizontal_flip = 0.5`,
  `mean`/`std` (decoded and transformed on the data thread);
- dtl, the same pixels normalised and preloaded from a .npy table;
- PyTorch, torchvision `ImageFolder` with RandomCrop, RandomHorizontalFlip,
  ToTensor and Normalize through a `DataLoader` (one worker process);
- PyTorch, the same normalised pixels preloaded as one tensor.

It prints the share of dtl's training time its steps spent waiting for
the data thread (`data_wait_seconds` over `train_seconds` in
summary.json: the direct measure of what decoding and transforming cost
the steps), each run's training steps per second (dtl's from
summary.json, PyTorch's timed around its loop) and the ratios:
transformed over preloaded for each tool, and dtl over PyTorch with the
transforms. The two dtl runs' step times differ by the data's values too
(the normalised pixels are other numbers for the CPU's arithmetic), so
the wait share is the figure to read for the data thread.

    .venv/bin/python benches/augment.py [--steps 300] [--repeat 3] [--json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import dtl_binary, thread_env

os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

torch.set_num_threads(1)
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
MICRO = 64


def write_folder(root):
    rng = np.random.default_rng(0)
    pixels, labels = [], []
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(300):
            image = np.clip(rng.normal(100 + 10 * c, 50, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image, "RGB").save(root / f"class{c}" / f"{i:04d}.png")
            pixels.append(image.transpose(2, 0, 1))
            labels.append(c)
    # The preloaded runs read the pixels normalised as the transformed
    # runs' are (less the crops and flips): the same kind of numbers.
    x = np.stack(pixels).astype(np.float32) / 255
    x = (x - np.float32(MEAN)[:, None, None]) / np.float32(STD)[:, None, None]
    np.save(root.parent / "x.npy", x.astype(np.float32))
    np.save(root.parent / "y.npy", np.array(labels, np.int64))


MODEL = """
model Cnn {
  forward(x: [B, 3, 32, 32]) -> [B, 10] {
    x |> conv2d(3, 32, 3, padding: 1) |> relu |> max_pool2d(2)
      |> conv2d(32, 64, 3, padding: 1) |> relu |> max_pool2d(2)
      |> flatten |> linear(4096, 10)
  }
}
"""


def dtl_file(folder, transformed, steps):
    if transformed:
        data = f"""source = images("pics", size: [32, 32])
  random_crop = 4
  horizontal_flip = 0.5
  mean = {MEAN}
  std = {STD}"""
    else:
        data = 'source = npy(features: "x.npy", labels: "y.npy")'
    text = MODEL + f"""
data pics {{
  {data}
  valid = 0
}}
train {{ model = Cnn; data = pics; loss = cross_entropy; optimizer = adamw(lr: 1e-3)
        micro_batch = {MICRO}; steps = {steps} }}
"""
    path = folder / ("transformed.dtl" if transformed else "preloaded.dtl")
    path.write_text(text)
    return path


def run_dtl(binary, folder, transformed, steps):
    out = folder / ("out_t" if transformed else "out_p")
    subprocess.run([str(binary), "run", str(dtl_file(folder, transformed, steps)), "--quiet",
                    "--device", "cpu", "--out", str(out), "--overwrite", "--no-tensorboard"],
                   check=True, env=thread_env(1), stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return summary["steps_per_second"], summary["data_wait_seconds"] / summary["train_seconds"]


def torch_model():
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4096, 10))


def run_torch(folder, transformed, steps):
    torch.manual_seed(0)
    model = torch_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if transformed:
        chain = transforms.Compose([transforms.RandomCrop(32, padding=4),
                                    transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        loader = torch.utils.data.DataLoader(datasets.ImageFolder(folder / "pics", chain),
                                             batch_size=MICRO, shuffle=True, num_workers=1,
                                             drop_last=True, persistent_workers=True)
    else:
        x = torch.from_numpy(np.load(folder / "x.npy"))
        y = torch.from_numpy(np.load(folder / "y.npy"))
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                             batch_size=MICRO, shuffle=True, drop_last=True)
    done = 0
    started = None
    while done < steps:
        for xb, yb in loader:
            if started is None:
                started = time.perf_counter()  # after the first batch, as dtl's train time
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                break
    return (steps - 1) / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    binary = dtl_binary()
    print(f"# dtl binary: {binary}", file=sys.stderr)
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_folder(folder / "pics")
        for _ in range(args.repeat):
            for transformed in (True, False):
                speed, wait = run_dtl(binary, folder, transformed, args.steps)
                if speed > best.get(("dtl", transformed), 0.0):
                    best[("dtl", transformed)] = speed
                    best[("wait", transformed)] = wait
                key = ("torch", transformed)
                best[key] = max(best.get(key, 0.0), run_torch(folder, transformed, args.steps))
    result = {
        "dtl_transformed_data_wait_share": best[("wait", True)],
        "dtl_preloaded_data_wait_share": best[("wait", False)],
        "dtl_transformed_steps_per_s": best[("dtl", True)],
        "dtl_preloaded_steps_per_s": best[("dtl", False)],
        "torch_transformed_steps_per_s": best[("torch", True)],
        "torch_preloaded_steps_per_s": best[("torch", False)],
    }
    result["dtl_transformed_over_preloaded"] = (result["dtl_transformed_steps_per_s"]
                                                / result["dtl_preloaded_steps_per_s"])
    result["torch_transformed_over_preloaded"] = (result["torch_transformed_steps_per_s"]
                                                  / result["torch_preloaded_steps_per_s"])
    result["dtl_over_torch_transformed"] = (result["dtl_transformed_steps_per_s"]
                                            / result["torch_transformed_steps_per_s"])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:36s} {v:8.3f}")


if __name__ == "__main__":
    main()
