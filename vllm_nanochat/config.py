"""config.json of a nanochat folder written by `python -m gpt.export --format vllm`, as a transformers config class.

Every switch the family's forwards differ by is written out as a value (per-layer windows, the layers with a value
embedding, the backout layer, ...), so the model reads what to compute and never which nanochat version wrote the
folder. `model_type` is ours: transformers' own `nanochat` type is the tutorial's forward and would load these
weights as a different model.
"""
from __future__ import annotations

from transformers import PreTrainedConfig

MODEL_TYPE = "nanochat_family"
ARCHITECTURE = "NanoChatFamilyForCausalLM"


class NanoChatFamilyConfig(PreTrainedConfig):
    model_type = MODEL_TYPE

    vocab_size: int = 50304  # the tokenizer's ids: logits are cut to this many
    padded_vocab_size: int = 50304  # rows of the embeddings and lm_head as trained (nanochat pads to a multiple of 64)
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    num_key_value_heads: int = 6
    head_dim: int = 128
    max_position_embeddings: int = 1024  # nanochat's sequence_len
    rotary_positions: int = 10240  # rows of the rotary tables (nanochat: 10 x sequence_len)
    rope_theta: float = 10000.0
    rotary_bf16: bool = False  # cos/sin rounded to bfloat16 values (nanochat until March 2026)
    # per layer: how many keys back a query sees besides itself (FlashAttention's window_size=(w, 0)); None: all
    window_sizes: list | None = None
    value_embed_layers: list | None = None  # layers that add a value embedding to v
    ve_gate_channels: int = 32  # the value-embedding gate reads the first this many channels of the block input
    ve_gate_scale: float = 2.0  # gate = scale * sigmoid(...)
    qk_scale: float = 1.0  # q and k multiplied by this after QK norm
    lambdas: bool = False  # resid_lambdas / x0_lambdas before each block
    smear: bool = False  # the previous token's normalized embedding, gated, added to each token's
    smear_channels: int = 24  # the smear gate reads the first this many channels
    backout_layer: int | None = None  # the block whose output (times backout_lambda) is subtracted before the head
    final_logit_softcapping: float = 15.0
    softcap_fp32: bool = True  # logits cast to float32 before the softcap (else the softcap runs in the model dtype)
    rms_norm_eps: float = 1.1920928955078125e-07  # torch.finfo(float32).eps: F.rms_norm(eps=None), nanochat's norm
    tie_word_embeddings: bool = False
