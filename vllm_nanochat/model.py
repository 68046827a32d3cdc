"""Every nanochat GPT in vLLM, built from vLLM's own layers and driven by config.json's values (config.py).

What a forward computes, in nanochat's order (B = tokens of the whole batch, C = hidden, hd = head dim):
  x = norm(wte(id))                                           vLLM's VocabParallelEmbedding, RMSNorm without weight
  smear:    x += smear_lambda * sigmoid(smear_gate(x[:24])) * x_prev      x_prev: the previous token's x (see below)
  x0 = x; before block i (lambdas): x = resid_lambdas[i] * x + x0_lambdas[i] * x0
  block:    x += attn(norm(x)); x += mlp(norm(x))             MLP: relu(c_fc)^2 -> c_proj
  attn:     q, k, v = QKVParallelLinear(x); v += scale * sigmoid(ve_gate(x[:c])) * value_embed(id)  (some layers)
            q, k = rotary(q, k); q, k = norm(q), norm(k); q, k *= qk_scale; vLLM's Attention with the layer's window
  backout:  x -= backout_lambda * (x after block n_layer // 2)
  logits = softcap * tanh(lm_head(norm(x))[:vocab] / softcap)   vLLM's ParallelLMHead and LogitsProcessor

The previous token's embedding at a decode step. vLLM gives a model only this step's token ids and positions, no
per-sequence state; a decode step's one token does not carry the token before it. The smear's x_prev is therefore kept
where vLLM keeps everything a sequence has seen: its KV cache. `PreviousToken` is one more vLLM Attention layer whose
value at each position is that position's normalized embedding, and whose query picks exactly the key one position
back. Why that is exact, and not a soft approximation, is in its docstring. It is one attention like the others, so
prefill, chunked prefill, decode, batches of mixed sequences, prefix caching and preemption all give it the right key
without the model knowing any of them.
"""
# No `from __future__ import annotations`: vLLM's support_torch_compile reads forward's annotations as types.
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vllm.compilation.decorators import support_torch_compile
from vllm.config import CacheConfig, VllmConfig
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import (ColumnParallelLinear, QKVParallelLinear, ReplicatedLinear,
                                               RowParallelLinear)
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.utils import maybe_prefix
from vllm.model_executor.utils import set_weight_attrs
from vllm.sequence import IntermediateTensors
from vllm.v1.attention.selector import get_attn_backend

from vllm_nanochat.config import NanoChatFamilyConfig


def kernel_head_size(head_dim: int, dtype: torch.dtype, cache_dtype: str) -> int:
    """The head size the attention kernel runs at: head_dim, or the next size the platform's backend supports (vLLM's
    CPU kernel starts at 32; small nanochats have 16). Zero channels appended to q, k and v change no score q.k and
    give zero output channels, which are cut off again, so padding is exact."""
    backend = get_attn_backend(head_dim, dtype, cache_dtype)
    if backend.supports_head_size(head_dim):
        return head_dim
    larger = [s for s in backend.get_supported_head_sizes() if s > head_dim]
    if not larger:
        raise ValueError(f"attention backend {backend.get_name()} supports no head size >= {head_dim}")
    return min(larger)


def pad_heads(x: torch.Tensor, heads: int, size: int) -> torch.Tensor:
    """[B, heads * d] -> [B, heads * size], each head's channels followed by zeros."""
    d = x.size(-1) // heads
    return x if d == size else F.pad(x.view(-1, heads, d), (0, size - d)).view(-1, heads * size)


def unpad_heads(x: torch.Tensor, heads: int, d: int) -> torch.Tensor:
    """The inverse of pad_heads: the first d channels of each head."""
    size = x.size(-1) // heads
    return x if d == size else x.view(-1, heads, size)[..., :d].reshape(-1, heads * d)


class NanoChatRotary(RotaryEmbedding):
    """vLLM's half-split ("neox") rotary with nanochat's tables. nanochat turns each pair (x1, x2) by minus the angle
    (y1 = x1 cos + x2 sin, y2 = x2 cos - x1 sin), vLLM's kernel by plus it, so the sin half of the cache is stored
    negated: the same products, exactly. Members before March 2026 rounded cos and sin to bfloat16 values."""

    def __init__(self, head_dim: int, positions: int, base: float, round_to_bf16: bool, dtype: torch.dtype):
        self.round_to_bf16 = round_to_bf16  # read by _compute_cos_sin_cache, which the base __init__ calls
        super().__init__(head_dim, head_dim, positions, base, True, dtype)

    def _compute_cos_sin_cache(self) -> torch.Tensor:
        # the angle t / base^(2i/hd) in float32, as nanochat computes it
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.rotary_dim, 2, dtype=torch.float32) / self.rotary_dim))
        freqs = torch.outer(torch.arange(self.max_position_embeddings, dtype=torch.float32), inv_freq)
        cos, sin = freqs.cos(), freqs.sin()
        if self.round_to_bf16:
            cos, sin = cos.bfloat16().float(), sin.bfloat16().float()
        return torch.cat([cos, -sin], -1)


def kv_head_loader(dim: int, heads: int, head_dim: int, rank: int, replicas: int):
    """A weight loader that keeps this rank's kv heads along `dim` (value embeddings: columns; their gate: rows), the
    heads QKVParallelLinear gives this rank: a slice when the kv heads are split, one head when they are replicated."""
    def load(param: torch.Tensor, loaded: torch.Tensor) -> None:
        width = heads * head_dim
        param.data.copy_(loaded.narrow(dim, (rank // replicas) * width, width))
    return load


class SelfAttention(nn.Module):
    def __init__(self, config: NanoChatFamilyConfig, layer: int, window: int | None, kernel_hd: int,
                 rotary: NanoChatRotary, cache_config: CacheConfig | None, quant_config: QuantizationConfig | None,
                 prefix: str):
        super().__init__()
        C, hd = config.hidden_size, config.head_dim
        self.head_dim, self.kernel_hd, self.rotary, self.qk_scale = hd, kernel_hd, rotary, config.qk_scale
        self.qkv = QKVParallelLinear(C, hd, config.num_attention_heads, config.num_key_value_heads, bias=False,
                                     quant_config=quant_config, prefix=f"{prefix}.qkv")
        self.c_proj = RowParallelLinear(config.num_attention_heads * hd, C, bias=False, quant_config=quant_config,
                                        prefix=f"{prefix}.c_proj")
        self.heads, self.kv_heads = self.qkv.num_heads, self.qkv.num_kv_heads  # this rank's
        self.q_size, self.kv_size = self.heads * hd, self.kv_heads * hd
        self.norm = RMSNorm(hd, eps=config.rms_norm_eps, has_weight=False)  # QK norm, per head
        # nanochat's window w lets a query see itself and w keys back; vLLM's sliding_window counts the query too
        self.attn = Attention(self.heads, kernel_hd, hd ** -0.5, num_kv_heads=self.kv_heads, cache_config=cache_config,
                              quant_config=quant_config, per_layer_sliding_window=None if window is None else window + 1,
                              prefix=f"{prefix}.attn")
        self.ve_gate = self.value_embed = None
        if layer in (config.value_embed_layers or []):
            self.ve_channels, self.ve_scale = config.ve_gate_channels, config.ve_gate_scale
            rank, replicas = self.qkv.tp_rank, self.qkv.num_kv_head_replicas
            self.ve_gate = nn.Parameter(torch.empty(self.kv_heads, self.ve_channels), requires_grad=False)
            self.value_embed = nn.Parameter(torch.empty(config.padded_vocab_size, self.kv_size), requires_grad=False)
            set_weight_attrs(self.ve_gate, {"weight_loader": kv_head_loader(0, self.kv_heads, 1, rank, replicas)})
            set_weight_attrs(self.value_embed, {"weight_loader": kv_head_loader(1, self.kv_heads, hd, rank, replicas)})

    def forward(self, positions: torch.Tensor, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        qkv, _ = self.qkv(x)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if self.value_embed is not None:  # value residual: one gate in (0, scale) per kv head
            gate = self.ve_scale * torch.sigmoid(F.linear(x[..., : self.ve_channels], self.ve_gate))
            ve = F.embedding(input_ids, self.value_embed).view(-1, self.kv_heads, self.head_dim)
            v = (v.view(-1, self.kv_heads, self.head_dim) + gate.unsqueeze(-1) * ve).view(-1, self.kv_size)
        q, k = self.rotary(positions, q.contiguous(), k.contiguous())
        # rotary, then QK norm, then the scale: nanochat's order
        q = self.norm(q.reshape(-1, self.head_dim)).view(-1, self.q_size)
        k = self.norm(k.reshape(-1, self.head_dim)).view(-1, self.kv_size)
        if self.qk_scale != 1.0:
            q, k = q * self.qk_scale, k * self.qk_scale
        y = self.attn(pad_heads(q, self.heads, self.kernel_hd), pad_heads(k, self.kv_heads, self.kernel_hd),
                      pad_heads(v, self.kv_heads, self.kernel_hd))
        out, _ = self.c_proj(unpad_heads(y, self.heads, self.head_dim))
        return out


class MLP(nn.Module):
    def __init__(self, config: NanoChatFamilyConfig, quant_config: QuantizationConfig | None, prefix: str):
        super().__init__()
        self.c_fc = ColumnParallelLinear(config.hidden_size, config.intermediate_size, bias=False,
                                         quant_config=quant_config, prefix=f"{prefix}.c_fc")
        self.c_proj = RowParallelLinear(config.intermediate_size, config.hidden_size, bias=False,
                                        quant_config=quant_config, prefix=f"{prefix}.c_proj")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.c_fc(x)
        out, _ = self.c_proj(F.relu(h).square())
        return out


class Block(nn.Module):
    def __init__(self, config: NanoChatFamilyConfig, layer: int, window: int | None, kernel_hd: int,
                 rotary: NanoChatRotary, cache_config: CacheConfig | None, quant_config: QuantizationConfig | None,
                 prefix: str):
        super().__init__()
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, has_weight=False)
        self.attn = SelfAttention(config, layer, window, kernel_hd, rotary, cache_config, quant_config,
                                  f"{prefix}.attn")
        self.mlp = MLP(config, quant_config, f"{prefix}.mlp")

    def forward(self, positions: torch.Tensor, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(positions, self.norm(x), input_ids)
        return x + self.mlp(self.norm(x))


class PreviousToken(nn.Module):
    """The previous position's value in this sequence: an attention whose value at each position is v[j] and whose
    query at position p takes exactly v[p - 1] (zeros at p = 0), read from vLLM's KV cache like any other key.

    Why exact. The layer's sliding window is 2: the query at p sees the keys at p - 1 and p only. Key j is
    A * (cos(j pi/2), sin(j pi/2), 0, ...), the query at p is A * (cos((p-1) pi/2), sin((p-1) pi/2), 0, ...), every
    entry 0, A or -A (a table by j mod 4, no trigonometry). With scale 1 the scores are q.k[p-1] = A^2 and
    q.k[p] = A^2 cos(pi/2) = 0, both exact. Softmax subtracts the max: weights exp(0) = 1 and exp(-A^2); with
    A^2 = 1024, exp(-1024) is exactly 0 in float32 (it underflows below 1e-45), as in bfloat16 and float16 and in an
    exp2 kernel. The output is 1 * v[p-1] + 0 * v[p] = v[p-1] bit for bit. At p = 0 the query sees only itself, and
    the layer returns zeros there, which is what nanochat adds to the first token.

    The cache keeps v in the model's dtype (cache_config None: an fp8 KV cache for the other layers does not round
    this one), and v is the normalized embedding the model computed for that token, so x_prev is exactly the value
    nanochat's own smear reads.
    """
    AMPLITUDE = 32.0  # A: A^2 = 1024, a score gap no softmax can see past

    def __init__(self, width: int, head_size: int, prefix: str):
        super().__init__()
        self.width, self.head_size, self.heads = width, head_size, -(-width // head_size)
        self.attn = Attention(self.heads, head_size, 1.0, num_kv_heads=self.heads, cache_config=None,
                              per_layer_sliding_window=2, prefix=prefix)
        codes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]) * self.AMPLITUDE
        self.register_buffer("codes", codes, persistent=False)

    def forward(self, positions: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B = v.size(0)

        def code(p: torch.Tensor) -> torch.Tensor:  # [B, heads * head_size]: the position's code in every head
            out = torch.zeros(B, self.heads, self.head_size, dtype=v.dtype, device=v.device)
            out[..., :2] = self.codes.to(v.dtype)[p % 4].unsqueeze(1)
            return out.view(B, -1)

        values = F.pad(v, (0, self.heads * self.head_size - self.width))
        out = self.attn(code(positions - 1), code(positions), values)[:, : self.width]
        return torch.where((positions > 0).unsqueeze(-1), out, torch.zeros_like(out))


@support_torch_compile
class NanoChatModel(nn.Module):
    """The trunk: embedding (smeared), blocks with lambdas, backout, final norm -> hidden states for the head."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config: NanoChatFamilyConfig = vllm_config.model_config.hf_config
        cache_config, quant_config = vllm_config.cache_config, vllm_config.quant_config
        C, L = config.hidden_size, config.num_hidden_layers
        dtype = vllm_config.model_config.dtype
        kernel_hd = kernel_head_size(config.head_dim, dtype, cache_config.cache_dtype)
        self.config = config
        self.wte = VocabParallelEmbedding(config.padded_vocab_size, C, prefix=f"{prefix}.wte")
        self.norm = RMSNorm(C, eps=config.rms_norm_eps, has_weight=False)
        rotary = NanoChatRotary(config.head_dim, config.rotary_positions, config.rope_theta, config.rotary_bf16, dtype)
        # A window that reaches back over the longest sequence vLLM will hold never hides a key: such a layer is
        # full attention (and keeps vLLM's KV cache manager from treating it as a sliding one).
        longest = vllm_config.model_config.max_model_len
        windows = [None if w is None or w + 1 >= longest else w for w in (config.window_sizes or [None] * L)]
        self.h = nn.ModuleList([Block(config, i, windows[i], kernel_hd, rotary, cache_config, quant_config,
                                      f"{prefix}.h.{i}") for i in range(L)])
        if config.lambdas:
            self.resid_lambdas = nn.Parameter(torch.ones(L), requires_grad=False)
            self.x0_lambdas = nn.Parameter(torch.zeros(L), requires_grad=False)
        if config.smear:
            self.smear_gate = ReplicatedLinear(config.smear_channels, 1, bias=False, prefix=f"{prefix}.smear_gate")
            self.smear_lambda = nn.Parameter(torch.zeros(1), requires_grad=False)
            # vLLM orders KV caches by the one integer in each attention's name: 0, it runs before block 0
            self.previous = PreviousToken(C, kernel_hd, f"{prefix}.previous.0")
        if config.backout_layer is not None:
            self.backout_lambda = nn.Parameter(torch.zeros(1), requires_grad=False)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.wte(input_ids))

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids is None:
            raise ValueError("nanochat's value embeddings and smear read token ids: prompt embeddings are not served")
        config = self.config
        x = self.embed_input_ids(input_ids)
        if config.smear:
            gate, _ = self.smear_gate(x[..., : config.smear_channels])
            x = x + self.smear_lambda * torch.sigmoid(gate) * self.previous(positions, x)
        x0, kept = x, None
        for i, block in enumerate(self.h):
            if config.lambdas:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            x = block(positions, x, input_ids)
            if i == config.backout_layer:
                kept = x
        if kept is not None:
            x = x - self.backout_lambda * kept
        return self.norm(x)


class NanoChatFamilyForCausalLM(nn.Module):
    """The architecture vLLM's ModelRegistry knows (config.json's "architectures")."""
    packed_modules_mapping = {"qkv": ["c_q", "c_k", "c_v"]}

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config: NanoChatFamilyConfig = vllm_config.model_config.hf_config
        self.config = config
        self.model = NanoChatModel(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        self.lm_head = ParallelLMHead(config.padded_vocab_size, config.hidden_size,
                                      quant_config=vllm_config.quant_config, prefix=maybe_prefix(prefix, "lm_head"))
        # vocab_size: the padded rows' logits are cut off, as nanochat crops them
        self.logits_processor = LogitsProcessor(config.vocab_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        logits = self.logits_processor(self.lm_head, hidden_states)
        if logits is None:  # a tensor-parallel rank other than the first
            return None
        # The softcap here, not LogitsProcessor's: nanochat casts to float32 first (from December 2025), which
        # LogitsProcessor, capping in the head's dtype, would not do in a bfloat16 model.
        if self.config.softcap_fp32:
            logits = logits.float()
        cap = self.config.final_logit_softcapping
        return (cap * torch.tanh(logits / cap)).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """nanochat's state_dict names (what the export writes) -> this module's parameters."""
        params = dict(self.named_parameters())
        loaded = set()
        for name, tensor in weights:
            target, shard = vllm_name(name)
            param = params[target]
            loader = getattr(param, "weight_loader", default_weight_loader)
            if shard is None:
                loader(param, tensor)
            else:
                loader(param, tensor, shard)
            loaded.add(target)
        return loaded


_QKV_SHARDS = {"attn.c_q": "q", "attn.c_k": "k", "attn.c_v": "v"}


def vllm_name(name: str) -> tuple[str, str | None]:
    """A nanochat parameter name -> (this module's parameter, the qkv shard it fills or None)."""
    if name.startswith("lm_head."):
        return name, None
    if name.startswith("value_embeds."):  # value_embeds.{i}.weight lives in block i's attention
        return f"model.h.{name.split('.')[1]}.attn.value_embed", None
    name = "model." + name.removeprefix("transformer.")
    if name.endswith(".attn.ve_gate.weight"):  # a bare parameter here (its rows are kv heads, see kv_head_loader)
        return name.removesuffix(".weight"), None
    for part, shard in _QKV_SHARDS.items():
        if f".{part}." in name:
            return name.replace(part, "attn.qkv"), shard
    return name, None
