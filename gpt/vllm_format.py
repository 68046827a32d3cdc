"""The folder vLLM serves with the nanochat plugin (vllm_nanochat/ at the repository's root): `to_vllm` writes any
member of the family, every feature included.

- model.safetensors (or shards with an index): the model's own state_dict under nanochat's names, nothing cropped or
  renamed (the plugin maps the names onto vLLM's layers and cuts the padded vocab's logits itself).
- config.json: architectures ["NanoChatFamilyForCausalLM"], model_type "nanochat_family" (transformers' own
  "nanochat" is the tutorial's forward, and would load these weights as another model), and every switch as a value
  the plugin reads: per-layer windows, the layers with a value embedding, the backout layer, q/k scale, softcap, ...
  The member that wrote the weights is named for people ("nanochat_commit"); the plugin never reads it.
- generation_config.json, tokenizer.json and tokenizer_config.json as for transformers (gpt/hf_format.py), which is
  what vLLM's tokenizer loads, offline, with the chat template.
"""
from __future__ import annotations

from pathlib import Path

import torch

from gpt.checkpoint import CheckpointError
from gpt.hf_format import (DEFAULT_SHARD_BYTES, NORM_EPS, special_token_ids, write_generation_config, write_json,
                           write_safetensors, write_tokenizer)
from gpt.nanochat import GPT
from gpt.tokenizer import Tokenizer

# vllm_nanochat/config.py's names (tests/test_vllm_plugin.py holds the two together: gpt/ cannot import the plugin)
MODEL_TYPE = "nanochat_family"
ARCHITECTURE = "NanoChatFamilyForCausalLM"
DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def vllm_config(model: GPT, tokenizer: Tokenizer, dtype: torch.dtype) -> dict:
    """config.json for vllm_nanochat: the shapes, and what each switch of the model's member makes the forward do."""
    c, f = model.config, model.features
    layers = range(c.n_layer)
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "nanochat_commit": model.member.name,
        "vocab_size": c.vocab_size,
        "padded_vocab_size": model.padded_vocab,
        "hidden_size": c.n_embd,
        "intermediate_size": model.transformer.h[0].mlp.c_fc.weight.size(0),
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.n_embd // c.n_head,
        "max_position_embeddings": c.sequence_len,
        "rotary_positions": model.rotary_seq_len,
        "rope_theta": model.rotary_base,
        "rotary_bf16": f.rotary_bf16,
        "window_sizes": model.window_sizes,
        "value_embed_layers": [i for i in layers if model.has_value_embedding(i)],
        "ve_gate_channels": f.ve_gate_channels,
        "ve_gate_scale": f.ve_gate_scale,
        "qk_scale": f.qk_scale,
        "lambdas": f.lambdas,
        "smear": f.smear,
        "smear_channels": model.smear_gate.weight.size(1) if f.smear else 0,
        "backout_layer": model.backout_layer,
        "final_logit_softcapping": model.softcap,
        "softcap_fp32": f.softcap_fp32,
        "rms_norm_eps": NORM_EPS,
        "tie_word_embeddings": False,
        **special_token_ids(tokenizer),
        "dtype": DTYPES[dtype],
    }


def to_vllm(model: GPT, tokenizer: Tokenizer, out_dir: str | Path, *, dtype: torch.dtype | None = None,
            max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
    """Write `model` and `tokenizer` as a folder vLLM serves with vllm_nanochat. dtype: stored weights (default: the
    model's). Returns the files written."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model
    if not isinstance(model, GPT):
        raise CheckpointError(f"only a nanochat GPT converts for vLLM, not {type(model).__name__}")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise CheckpointError(f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                              f"{model.config.vocab_size}")
    model.check_fused()  # a weight replaced after fuse_qkv() would be written but not be what the model computes
    state_dict = model.state_dict()
    dtype = dtype or state_dict["lm_head.weight"].dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype} cannot be stored; use one of {list(DTYPES)}")
    out = Path(out_dir)
    written = write_safetensors(state_dict, out, dtype, max_shard_bytes)
    written += [write_json(out / "config.json", vllm_config(model, tokenizer, dtype)),
                write_generation_config(tokenizer, out)]
    return written + write_tokenizer(tokenizer, out, model.config.sequence_len)
