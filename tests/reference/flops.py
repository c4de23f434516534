"""dtl's FLOP estimates against PyTorch's own count, on the hand-written twins.

    python tests/reference/flops.py DTL_BINARY WORKDIR

`dtl explain FILE --format json` gives every layer's forward FLOPs per
sample (docs/plan.md: a multiply-add is two FLOPs). PyTorch's
`torch.utils.flop_counter.FlopCounterMode` counts the FLOPs of the matrix
products and convolutions a forward pass runs (addmm, mm, bmm, convolution,
scaled_dot_product_attention; element-wise operations, norms and pooling are
not counted). So the sum of dtl's estimates over its matrix-product layers
(linear, conv1d, conv2d, conv_transpose2d, attention: projections, scores
and their weighted sum) must equal FlopCounterMode's total for one sample through the twin,
exactly: both count 2·m·n·k per product. The twins are the ones of
twins.py, written from the `.dtl` files by hand, so the count does not come
from dtl's plan.

Exit status 0 when every model agrees, 1 with the differences listed, 2 on
usage errors.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import twin_kit as kit  # sets the thread environment before torch loads
import comparison as cmp
import layers
import twins
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

# dtl's layer kinds whose FLOPs are matrix products (what PyTorch counts).
PRODUCTS = {"linear", "conv1d", "conv2d", "conv_transpose2d", "attention"}


def dtl_product_flops(binary, dtl_file):
    """dtl's forward FLOPs per sample over its matrix-product layers, and
    over all layers."""
    done = subprocess.run([str(binary), "explain", str(dtl_file), "--format", "json"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"FAIL: dtl explain {dtl_file} exited {done.returncode}:\n{done.stderr}")
    layers = json.loads(done.stdout)["layers"]
    products = sum(layer["forward_flops"] for layer in layers if layer["kind"] in PRODUCTS)
    return products, sum(layer["forward_flops"] for layer in layers)


def math_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
    """scaled_dot_product_attention by its definition, as matrix products
    FlopCounterMode counts (on the CPU it does not count the fused kernel)."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        repeat = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(repeat, -3), v.repeat_interleave(repeat, -3)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if is_causal:
        t, s = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(t, s, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        scores = scores + attn_mask
    return torch.matmul(scores.softmax(-1), v)


def torch_flops(model, sample):
    """FlopCounterMode's total for one forward pass of `sample` (eval mode).
    Attention runs written out (twin_kit.SelfAttention.forward_written_out:
    its projections and score products as separate operations), with
    scaled_dot_product_attention as its definition's two products:
    nn.MultiheadAttention's eval-mode fast path and the CPU's fused
    attention kernel are operations FlopCounterMode does not see into."""
    for module in model.modules():
        if isinstance(module, kit.SelfAttention):
            module.written_out = True
    model.eval()
    counter = FlopCounterMode(display=False)
    fused = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = math_attention
    try:
        with torch.no_grad(), counter:
            model(sample)
    finally:
        F.scaled_dot_product_attention = fused
    return counter.get_total_flops()


def one_sample(data):
    """The first row, as a batch of one: of a table's features, or the
    first window of a token file."""
    if isinstance(data, kit.TokenData):
        x, _ = data.windows([0])
        return x
    return data.features[:1]


def models(workdir):
    """(name, .dtl file, twin, data) of twins.py's four twins and of the
    layers.py cases with other products: conv1d, strided conv2d patches,
    grouped-query attention, conv2d with groups, dilation and rectangular
    sizes, conv_transpose2d (conv_groups_lion), convolutions between
    upsamplings (upsample_nll_adafactor)."""
    for name, (build, _) in twins.TWINS.items():
        dtl_file, model, data, _ = build(1)
        yield name, kit.REPO / dtl_file, model, data
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("conv1d_pools", "vit_head", "tiny_llama", "conv_groups_lion",
                 "upsample_nll_adafactor"):
        case = layers.CASES[name]
        dtl_file = layers.HERE / f"{name}.dtl"
        if case.files:
            # The file names its data files relative to itself.
            case.files(workdir)
            dtl_file = Path(shutil.copy(dtl_file, workdir / dtl_file.name))
            model, data, _ = case.twin(workdir)
        else:
            model, data, _ = case.twin()
        yield name, dtl_file, model, data


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dtl", type=Path, help="the dtl binary")
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args()
    cmp.require_binary(parser, args.dtl)
    failures = []
    for name, dtl_file, model, data in models(args.workdir):
        ours, everything = dtl_product_flops(args.dtl, dtl_file)
        theirs = torch_flops(model, one_sample(data))
        mark = "ok" if ours == theirs else "MISMATCH"
        print(f"{name:<12} dtl {ours:>12,} (all layers {everything:,})  "
              f"FlopCounterMode {theirs:>12,}  {mark}")
        if ours != theirs:
            failures.append(f"{name}: dtl counts {ours} FLOPs in matrix products, "
                            f"PyTorch {theirs}")
    if failures:
        print("\nFAIL:\n  - " + "\n  - ".join(failures))
        sys.exit(1)
    print("\nevery model's matrix-product FLOPs agree with FlopCounterMode")


if __name__ == "__main__":
    sys.exit(main())
