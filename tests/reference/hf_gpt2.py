"""A Hugging Face GPT-2 checkpoint loaded into dtl's GPT-2 by name:
`init = weights(path, transpose: [...], rename: [...])`.

    python tests/reference/hf_gpt2.py prepare WORKDIR
    python tests/reference/hf_gpt2.py compare WORKDIR PREDICTIONS

`prepare` builds transformers' own GPT2LMHeadModel (a small config, random
weights seeded, no hub needed), saves it with `save_pretrained` (the
safetensors file the hub serves: `transformer.`-prefixed names, Conv1D
weights stored [in, out], `lm_head` left out as tied to `wte`), writes the
same architecture as examples/zoo/gpt2_small.dtl at this size with the
name map in its `init`, a token file for its data block, three rows of ids
(ids.npy) and transformers' logits for them (logits.npy).

`compare` reads `dtl predict`'s JSON lines and prints the largest absolute
difference from transformers' logits; it fails above the bound given.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

VOCABULARY, CONTEXT, WIDTH, LAYERS, HEADS = 96, 16, 32, 2, 4

DTL = f"""
// examples/zoo/gpt2_small.dtl at {WIDTH} wide, {LAYERS} blocks, {HEADS} heads,
// with GPT-2's tanh GELU.
module Mlp(d: int) {{
  c_fc = linear(d, 4 * d)
  c_proj = linear(4 * d, d)
  forward(x: [B, T, d]) -> [B, T, d] {{
    x |> c_fc |> gelu(approximate: "tanh") |> c_proj |> dropout(0.1)
  }}
}}

module Block(d: int, heads: int) {{
  ln_1 = layer_norm(d)
  attn = attention(d, heads, causal: true)
  ln_2 = layer_norm(d)
  mlp = Mlp(d)
  forward(x: [B, T, d]) -> [B, T, d] {{
    let a = x + (x |> ln_1 |> attn |> dropout(0.1))
    a + (a |> ln_2 |> mlp)
  }}
}}

model TinyGPT2 {{
  wte = embedding({VOCABULARY}, {WIDTH})
  wpe = pos_embedding({CONTEXT}, {WIDTH})
  ln_f = layer_norm({WIDTH})
  forward(x: [B, {CONTEXT}]) -> [B, {CONTEXT}, {VOCABULARY}] {{
    x |> wte |> wpe |> dropout(0.1) |> repeat {LAYERS} {{ Block({WIDTH}, {HEADS}) }} |> ln_f |> tied(wte)
  }}
}}

data book {{
  source = tokens("tokens.u16.bin", context: {CONTEXT}, dtype: "uint16")
}}

train {{
  model = TinyGPT2
  data = book
  loss = cross_entropy
  optimizer = adamw(lr: 1e-4)
  micro_batch = 2
  steps = 1
  clip = norm(1.0)
  // Hugging Face's names and Conv1D layout onto dtl's.
  init = weights("gpt2/model.safetensors",
    transpose: ["*.c_attn.weight", "*.c_proj.weight", "*.c_fc.weight"],
    rename: [
      ["transformer.h.", "1."],
      ["transformer.", ""],
      [".c_attn.weight", ".in_proj_weight"],
      [".c_attn.bias", ".in_proj_bias"],
      ["attn.c_proj.", "attn.out_proj."]
    ])
}}
"""


def prepare(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    config = GPT2Config(
        vocab_size=VOCABULARY,
        n_positions=CONTEXT,
        n_embd=WIDTH,
        n_layer=LAYERS,
        n_head=HEADS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    assert config.activation_function == "gelu_new"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    write_language_case(work, model, ("gpt2", "tiny_gpt2.dtl", DTL), (VOCABULARY, CONTEXT))


def write_language_case(work: Path, model, names, sizes) -> None:
    """A next-token model's case in `work`: the model saved by
    `save_pretrained` in the folder `names[0]`, the dtl file `names[1]`
    with text `names[2]`, a token file for its data block, three rows of
    ids (ids.npy) and the model's logits for them (logits.npy); `sizes` is
    (vocabulary, context)."""
    folder, file, text = names
    vocabulary, context = sizes
    model.save_pretrained(work / folder)
    (work / file).write_text(text)
    generator = np.random.default_rng(0)
    generator.integers(0, vocabulary, 400).astype("<u2").tofile(work / "tokens.u16.bin")
    ids = generator.integers(0, vocabulary, (3, context)).astype(np.int64)
    np.save(work / "ids.npy", ids)
    with torch.no_grad():
        logits = model(torch.from_numpy(ids)).logits
    np.save(work / "logits.npy", logits.numpy().astype(np.float64))


def main(prepare) -> None:
    """`prepare WORKDIR` or `compare WORKDIR PREDICTIONS BOUND`."""
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
    else:
        compare(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))


def compare(work: Path, predictions: Path, bound: float) -> None:
    expected = np.load(work / "logits.npy")
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    got = np.array([row["output"] for row in rows]).reshape(expected.shape)
    worst = float(np.abs(got - expected).max())
    print(f"largest difference from transformers' logits: {worst:.3e}")
    if not worst <= bound:
        sys.exit(f"the logits differ by {worst:.3e}, over {bound:.1e}")


if __name__ == "__main__":
    main(prepare)
