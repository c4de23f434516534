"""A Hugging Face LLaMA checkpoint loaded into dtl's LLaMA by name:
`init = weights(path, fuse: [...], rename: [...])`.

    python tests/reference/hf_llama.py prepare WORKDIR
    python tests/reference/hf_llama.py compare WORKDIR PREDICTIONS BOUND

`prepare` builds transformers' own LlamaForCausalLM (a small config with
grouped-query attention, rotary embeddings, RMSNorm, SwiGLU and an untied
output layer; random weights seeded, no hub needed), saves it with
`save_pretrained` (the safetensors file the hub serves: `model.`-prefixed
names, separate `q_proj`, `k_proj` and `v_proj`), writes the architecture
of examples/zoo/tinyllama.dtl at this size with the name map in its
`init`, a token file for its data block, three rows of ids (ids.npy) and
transformers' logits for them (logits.npy).

`compare` reads `dtl predict`'s JSON lines and prints the largest absolute
difference from transformers' logits; it fails above BOUND.
"""

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_gpt2 import main, write_language_case

VOCABULARY, CONTEXT, WIDTH, LAYERS, HEADS, KV_HEADS, HIDDEN = 96, 16, 32, 2, 4, 2, 64

DTL = f"""
// examples/zoo/tinyllama.dtl at {WIDTH} wide, {LAYERS} blocks, {HEADS} query
// heads sharing {KV_HEADS} key/value heads, a feed-forward of {HIDDEN}.
module SwiGLU(d: int, hidden: int) {{
  gate_proj = linear(d, hidden, bias: false)
  up_proj = linear(d, hidden, bias: false)
  down_proj = linear(hidden, d, bias: false)
  forward(x: [B, T, d]) -> [B, T, d] {{
    let h = (x |> gate_proj |> silu) * (x |> up_proj)
    h |> down_proj
  }}
}}

module Decoder(d: int, heads: int, kv_heads: int, hidden: int) {{
  input_layernorm = rms_norm(d, eps: 1e-5)
  self_attn = attention(d, heads, causal: true, kv_heads: kv_heads, rope: true, bias: false)
  post_attention_layernorm = rms_norm(d, eps: 1e-5)
  mlp = SwiGLU(d, hidden)
  forward(x: [B, T, d]) -> [B, T, d] {{
    let a = x + (x |> input_layernorm |> self_attn)
    a + (a |> post_attention_layernorm |> mlp)
  }}
}}

model TinyLlama {{
  embed_tokens = embedding({VOCABULARY}, {WIDTH})
  norm = rms_norm({WIDTH}, eps: 1e-5)
  lm_head = linear({WIDTH}, {VOCABULARY}, bias: false)
  forward(x: [B, {CONTEXT}]) -> [B, {CONTEXT}, {VOCABULARY}] {{
    x
      |> embed_tokens
      |> repeat {LAYERS} {{ Decoder({WIDTH}, {HEADS}, {KV_HEADS}, {HIDDEN}) }}
      |> norm
      |> lm_head
  }}
}}

data book {{
  source = tokens("tokens.u16.bin", context: {CONTEXT}, dtype: "uint16")
}}

train {{
  model = TinyLlama
  data = book
  loss = cross_entropy
  optimizer = adamw(lr: 1e-4)
  micro_batch = 2
  steps = 1
  // Hugging Face's separate projections and names onto dtl's.
  init = weights("llama/model.safetensors",
    fuse: [["q_proj.weight", "k_proj.weight", "v_proj.weight", "in_proj_weight"]],
    rename: [
      ["model.layers.", "0."],
      ["model.", ""],
      ["self_attn.o_proj.", "self_attn.out_proj."]
    ])
}}
"""


def prepare(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(
        vocab_size=VOCABULARY,
        hidden_size=WIDTH,
        intermediate_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=CONTEXT,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    # The initialisers leave the norms at one: random gains test them too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.uniform_(0.5, 1.5)
    write_language_case(work, model, ("llama", "tiny_llama.dtl", DTL), (VOCABULARY, CONTEXT))


if __name__ == "__main__":
    main(prepare)
