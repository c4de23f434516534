"""dtl's `images(...)` source and its transforms against torchvision, step by
step.

    python tests/reference/images.py DTL_BINARY WORKDIR [--steps N]

Writes an image folder with Pillow (three classes whose names sort with a
capital first, as torchvision sorts them; PNGs in RGB, RGBA, palette and
greyscale modes, BMPs, one class with a subfolder, a text file that is
not an image; JPEG decoding is compared on its own, by
compiler/tests/images.rs), reads it with torchvision's `ImageFolder` and
`ToTensor`, and trains a small CNN on it in dtl and in a hand-written twin,
with `random_crop = 2`, `horizontal_flip = 0.5` and `mean`/`std`. The twin
crops and flips with torchvision.transforms.functional (`pad`, `crop`,
`hflip`) at the offsets dtl draws for each sample (dtl_order.augment_draw:
the one thing shared) and normalises with `transforms.Normalize`. Compared
bit for bit (measured bitwise on 2026-12-04; the tolerance is 0): every
step's loss, learning rate and gradient norm, the evaluations, the final
weights. A greyscale run (`channels: 1`, PIL's `convert("L")`) is compared
the same way.

With DTL_TWIN_SABOTAGE=crop_swap the twin swaps each crop's top and left
offsets: the losses differ from the first step.

Exit status 0 when all holds, 1 with the failures listed, 2 on usage errors.
"""

import argparse
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import dtl_order
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn
from torchvision import datasets, transforms

import twins

STEPS = 40
SEED = 0
PADDING, FLIP = 2, 0.5
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
CLASSES = ["Zebra", "ant", "bee"]  # ImageFolder's order: "Z" sorts before "a"


def write_folder(root):
    """16 images a class, 12×12, a class-coloured pattern plus noise, as
    PNG (RGB, RGBA, palette, greyscale) and BMP; `ant` has a subfolder;
    one text file a class."""
    rng = np.random.default_rng(7)
    for c, name in enumerate(CLASSES):
        folder = root / name
        (folder / "more").mkdir(parents=True)
        (folder / "README.txt").write_text("not an image\n")
        for i in range(16):
            base = np.zeros((12, 12, 3))
            base[..., c] = np.linspace(40, 220, 12)[None, :]
            pixels = np.clip(base + rng.normal(0, 40, (12, 12, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels, "RGB")
            mode = i % 5
            where = folder / "more" if (name == "ant" and i >= 12) else folder
            if mode == 0:
                image.save(where / f"{i:02d}.png")
            elif mode == 1:
                image.putalpha(Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)))
                image.save(where / f"{i:02d}.png")
            elif mode == 2:
                image.quantize(16).save(where / f"{i:02d}.png")
            elif mode == 3:
                image.convert("L").save(where / f"{i:02d}.png")
            else:
                image.save(where / f"{i:02d}.bmp")


def dtl_file(workdir, channels):
    text = f"""
model Pics {{
  forward(x: [B, {channels}, 12, 12]) -> [B, 3] {{
    x |> conv2d({channels}, 8, 3, padding: 1) |> relu |> max_pool2d(2) |> flatten |> linear(288, 3)
  }}
}}
data pics {{
  source = images("pics", size: [12, 12], channels: {channels})
  random_crop = {PADDING}
  horizontal_flip = {FLIP}
  mean = {MEAN[:channels]}
  std = {STD[:channels]}
  valid = 0.25
}}
train {{
  model = Pics
  data = pics
  loss = cross_entropy
  optimizer = adamw(lr: 3e-3, weight_decay: 0.01)
  micro_batch = 8
  steps = {STEPS}
  eval_every = 10
}}
"""
    path = workdir / f"pics_{channels}.dtl"
    path.write_text(text)
    return path


def augment(x, epoch, first):
    """RandomCrop(12, padding=2) then RandomHorizontalFlip(0.5), at dtl's
    draws for each sample's place in the epoch."""
    rows = []
    for j, row in enumerate(x):
        top, left, flipped = dtl_order.augment_draw(SEED, epoch, first + j, PADDING, FLIP)
        if kit.sabotaged("crop_swap"):
            top, left = left, top
        row = TF.crop(TF.pad(row, PADDING), top, left, 12, 12)
        rows.append(TF.hflip(row) if flipped else row)
    return torch.stack(rows)


def compare(binary, workdir, channels, steps):
    to_tensor = [transforms.Grayscale()] if channels == 1 else []
    folder = datasets.ImageFolder(workdir / "pics",
                                  transform=transforms.Compose(to_tensor + [transforms.ToTensor()]))
    c = cmp.Comparison(f"images({channels} channels) vs torchvision ImageFolder")
    if folder.classes != CLASSES:
        c.fail(f"ImageFolder's classes {folder.classes}, expected {CLASSES}")
    x = torch.stack([folder[i][0] for i in range(len(folder))])
    y = torch.tensor(folder.targets)
    normalize = transforms.Normalize(MEAN[:channels], STD[:channels])
    data = kit.Data(x, y, valid=0.25, augment=augment, normalize=normalize)
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(288, 3))
    init = workdir / f"init_{channels}.safetensors"
    kit.save_init(model, init)
    recipe = kit.Recipe(steps=steps, micro_batch=8, optimizer="adamw", lr=3e-3,
                        optimizer_args=dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
                        seed=SEED, eval_every=10)
    ours = cmp.run_dtl(binary, dtl_file(workdir, channels), workdir / f"dtl_{channels}",
                       init=init, sets=[f"train.steps={steps}"])
    theirs = kit.train(model, data, recipe)
    print(f"images, {channels} channel(s), {len(folder)} images: {steps} steps, "
          f"dtl {ours.seconds:.1f} s, twin {theirs.seconds:.1f} s")
    cmp.compare_steps(c, ours.steps, theirs.steps, twins.BITWISE)
    cmp.compare_evals(c, ours.evals, theirs.evals, twins.BITWISE)
    cmp.compare_weights(c, cmp.read_safetensors(ours.out / "model.safetensors"), theirs.state,
                        twins.BITWISE)
    c.print()
    return c


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    cmp.require_binary(parser, args.dtl)
    kit.announce_sabotage()
    args.workdir.mkdir(parents=True, exist_ok=True)
    write_folder(args.workdir / "pics")
    comparisons = [compare(args.dtl.resolve(), args.workdir, channels, args.steps)
                   for channels in (3, 1)]
    cmp.finish(comparisons)


if __name__ == "__main__":
    sys.exit(main())
