"""A Hugging Face ViT checkpoint loaded into dtl's ViT by name:
`init = weights(path, fuse: [...], squeeze: [...], rename: [...])`.

    python tests/reference/hf_vit.py prepare WORKDIR
    python tests/reference/hf_vit.py compare WORKDIR PREDICTIONS BOUND

`prepare` builds transformers' own ViTForImageClassification (a small
config: 32x32 images in 8x8 patches, a class token, learned position
embeddings, pre-norm blocks, a linear head on the class token; random
weights seeded, no hub needed), saves it with `save_pretrained` (separate
query, key and value projections, `[1, tokens, width]` position
embeddings), writes the architecture of examples/zoo/vit_b16.dtl at this
size with the name map in its `init`, three images as rows of features
(images.npy) and transformers' logits for them (logits.npy).

`compare` reads `dtl predict`'s JSON lines and prints the largest absolute
difference from transformers' logits; it fails above BOUND.
"""

from pathlib import Path

import numpy as np
import torch
from transformers import ViTConfig, ViTForImageClassification

from hf_gpt2 import main

IMAGE, PATCH, WIDTH, LAYERS, HEADS, CLASSES = 32, 8, 32, 2, 4, 10
TOKENS = (IMAGE // PATCH) ** 2

DTL = f"""
// examples/zoo/vit_b16.dtl at {IMAGE}x{IMAGE} images in {PATCH}x{PATCH}
// patches, {WIDTH} wide, {LAYERS} blocks of {HEADS} heads, {CLASSES} classes.
module Mlp(d: int, hidden: int) {{
  forward(x: [B, T, d]) -> [B, T, d] {{
    x |> linear(d, hidden) |> gelu |> dropout(0.1) |> linear(hidden, d) |> dropout(0.1)
  }}
}}

module EncoderBlock(d: int, heads: int, hidden: int) {{
  ln_1 = layer_norm(d, eps: 1e-6)
  self_attention = attention(d, heads)
  ln_2 = layer_norm(d, eps: 1e-6)
  mlp = Mlp(d, hidden)
  forward(x: [B, T, d]) -> [B, T, d] {{
    let a = x + (x |> ln_1 |> self_attention |> dropout(0.1))
    a + (a |> ln_2 |> mlp)
  }}
}}

module Encoder(d: int, tokens: int) {{
  pos_embedding = pos_embedding(tokens, d)
  ln = layer_norm(d, eps: 1e-6)
  forward(x: [B, tokens, d]) -> [B, tokens, d] {{
    x
      |> pos_embedding |> dropout(0.1)
      |> repeat {LAYERS} {{ EncoderBlock(d, {HEADS}, 4 * d) }}
      |> ln
  }}
}}

model TinyViT {{
  conv_proj = conv2d(3, {WIDTH}, {PATCH}, stride: {PATCH})
  encoder = Encoder({WIDTH}, {TOKENS} + 1)
  head = linear({WIDTH}, {CLASSES})
  forward(x: [B, 3, {IMAGE}, {IMAGE}]) -> [B, {CLASSES}] {{
    x
      |> conv_proj
      |> reshape([{WIDTH}, {TOKENS}])
      |> transpose(1, 2)
      |> class_token({WIDTH})
      |> encoder
      |> select(1, 0)
      |> head
  }}
}}

data images {{
  source = synthetic(rows: 16, features: 3 * {IMAGE} * {IMAGE}, classes: {CLASSES})
  shape = [3, {IMAGE}, {IMAGE}]
}}

train {{
  model = TinyViT
  data = images
  loss = cross_entropy
  optimizer = adamw(lr: 1e-4)
  micro_batch = 2
  steps = 1
  // Hugging Face's separate projections, position embeddings and names
  // onto dtl's (the class token is the model's third layer, `2`).
  init = weights("vit/model.safetensors",
    fuse: [
      ["attention.attention.query.weight", "attention.attention.key.weight",
       "attention.attention.value.weight", "self_attention.in_proj_weight"],
      ["attention.attention.query.bias", "attention.attention.key.bias",
       "attention.attention.value.bias", "self_attention.in_proj_bias"]
    ],
    squeeze: ["*.position_embeddings"],
    rename: [
      ["vit.encoder.layer.", "encoder.1."],
      ["attention.output.dense.", "self_attention.out_proj."],
      ["layernorm_before.", "ln_1."],
      ["layernorm_after.", "ln_2."],
      ["intermediate.dense.", "mlp.0."],
      ["output.dense.", "mlp.3."],
      ["vit.embeddings.patch_embeddings.projection.", "conv_proj."],
      ["vit.embeddings.cls_token", "2.weight"],
      ["vit.embeddings.position_embeddings", "encoder.pos_embedding.weight"],
      ["vit.layernorm.", "encoder.ln."],
      ["classifier.", "head."]
    ])
}}
"""


def prepare(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    config = ViTConfig(
        image_size=IMAGE,
        patch_size=PATCH,
        num_channels=3,
        hidden_size=WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=4 * WIDTH,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
        num_labels=CLASSES,
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    # The initialisers leave the class token, the position embeddings and
    # the norms plain: random values test their mapping too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embeddings" in name and "projection" not in name:
                p.normal_(0.0, 0.5)
            if "layernorm" in name:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0.0, 0.1)
    model.save_pretrained(work / "vit")
    (work / "tiny_vit.dtl").write_text(DTL)
    images = np.random.default_rng(0).normal(size=(3, 3 * IMAGE * IMAGE)).astype(np.float32)
    np.save(work / "images.npy", images)
    with torch.no_grad():
        logits = model(torch.from_numpy(images).reshape(3, 3, IMAGE, IMAGE)).logits
    np.save(work / "logits.npy", logits.numpy().astype(np.float64))


if __name__ == "__main__":
    main(prepare)
