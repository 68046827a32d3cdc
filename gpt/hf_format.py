"""transformers' NanoChat format, both ways: `to_transformers` writes a folder that
`transformers.AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)` load;
`from_transformers` reads such a folder (ours, or one written by transformers' own `save_pretrained`) back into our
GPT. transformers itself is never imported here: the folder is plain JSON and safetensors.

What transformers' NanoChatForCausalLM (5.24) computes, held against gpt/nanochat/tutorial.py (the tutorial's nanochat, 4a87a0d):
- Same parameters under other names (`_HF_NAMES`), no learnable norm weights on either side, untied lm_head.
- Rotary: the same half-split pairs and the same direction. Its `rotate_half` is [x2, -x1], so
  q·cos + rotate_half(q)·sin gives y1 = x1·cos + x2·sin, y2 = x2·cos - x1·sin: exactly nanochat's rotation. No weight
  permutation and no sign flip. Rotary, then QK norm, as nanochat.
- Rotary tables: transformers computes cos/sin in float32 and casts them to the activations' dtype. nanochat rounds
  them to bfloat16 values. In a bfloat16 run the two tables are identical; in a float32 run transformers' are the
  unrounded ones. That rounding (a relative 2^-9 at most) is the one difference no config or weight can express.
- RMSNorm: x·rsqrt(mean(x²) + eps), in float32. nanochat's F.rms_norm(eps=None) uses float32's machine epsilon
  (2^-23 ≈ 1.19e-7, also for bfloat16 inputs, which it normalises in float32); we write that as rms_norm_eps, so the
  norms agree. transformers' own default is 1e-6: a folder with it is read with a note in `meta["notes"]` (our norm
  cannot take another eps), and any eps above 1e-5 is refused.
- relu² MLP (hidden_act "relu2", intermediate_size 4·hidden_size), logits softcap 15 (final_logit_softcapping).
Of the later nanochat forwards (gpt/nanochat/current.py) only f1bf69d's converts (its padded vocab rows are never
read, so they are cropped): transformers has no class with value embeddings, smear, per-layer residual/embedding
lambdas, backout, a q/k scale or sliding windows, and the export refuses a model with them, naming them.

Tokenizer: tokenizer.json is a byte-level BPE built from the tiktoken ranks (GPT-2's byte-to-character map; every
split of every token into two tokens is a merge, ranked by the merged token's rank, so BPE merges in tiktoken's order;
whole-piece lookup first, as tiktoken), pre-tokenised by the same split regex; the 9 nanochat specials are added
tokens after the BPE ranks. tokenizer_config.json names them and carries a chat template that renders a conversation
the way `Tokenizer.render_for_completion` does. Reading inverts the byte map back to tiktoken ranks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import tiktoken
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gpt.checkpoint import CheckpointError, LoadedModel, _as_dtype, build_model, config_from_dict, pick_device
from gpt import nanochat
from gpt.nanochat import GPT, GPTConfig
from gpt.tokenizer import SPECIAL_TOKENS, Tokenizer

MODEL_TYPE = "nanochat"
ARCHITECTURE = "NanoChatForCausalLM"
NORM_EPS = torch.finfo(torch.float32).eps  # what F.rms_norm(eps=None) adds, in float32 and bfloat16 alike
MAX_NORM_EPS = 1e-5  # a folder's rms_norm_eps up to this is read (with a note); above, refused
HF_DEFAULT_EPS = 1e-6  # NanoChatConfig's default, when config.json leaves rms_norm_eps out
DEFAULT_SHARD_BYTES = 5 * 2**30
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "max_position_embeddings")
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
# Switches of gpt/nanochat/features.py that transformers' NanoChat has no place for, and what they are. A padded vocab
# converts (the padding rows are never read: they are cropped), and so does the softcap's dtype.
NOT_IN_TRANSFORMERS = {
    "value_embeds": "value embeddings with their gates (value_embeds.*, attn.ve_gate)",
    "smear": "smear (smear_gate, smear_lambda)",
    "lambdas": "per-layer residual and embedding lambdas (resid_lambdas, x0_lambdas)",
    "backout": "backout (backout_lambda)",
    "qk_scale": "a scale on q and k after QK norm",
    "windows": "sliding-window attention (window_pattern)",
    "softcap": "a softcap other than 15",
    "rotary_base": "a rotary base other than 10000",
    "ve_gate_channels": "value-embedding gates over 12 channels",
}
# nanochat's chat format (Tokenizer.render_conversation) as a Jinja template: <|bos|>, a leading system message merged
# into the first user message, user and assistant turns in their markers, <|assistant_start|> to prompt a reply.
CHAT_TEMPLATE = (
    "{{- '<|bos|>' -}}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] + '\n\n' -%}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- '<|user_start|>' + ns.system + message['content'] + '<|user_end|>' -}}{%- set ns.system = '' -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<|assistant_start|>' + message['content'] + '<|assistant_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant_start|>' -}}{%- endif -%}"
)


# ---- names ---------------------------------------------------------------------------------------------------------
_LAYER_NAMES = (("attn.c_q", "self_attn.q_proj"), ("attn.c_k", "self_attn.k_proj"), ("attn.c_v", "self_attn.v_proj"),
                ("attn.c_proj", "self_attn.o_proj"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))


def _hf_names(n_layer: int) -> dict[str, str]:
    """Our state_dict name -> transformers' NanoChatForCausalLM name, for every parameter."""
    names = {"transformer.wte.weight": "model.embed_tokens.weight", "lm_head.weight": "lm_head.weight"}
    for i in range(n_layer):
        for ours, theirs in _LAYER_NAMES:
            names[f"transformer.h.{i}.{ours}.weight"] = f"model.layers.{i}.{theirs}.weight"
    return names


# ---- byte-level BPE <-> tiktoken ranks -----------------------------------------------------------------------------
def _byte_chars() -> list[str]:
    """GPT-2's byte-level alphabet: byte b -> one printable character. The printable Latin-1 bytes other than space
    stand for themselves; the remaining 68 bytes take the code points 256, 257, ... in byte order."""
    printable = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


BYTE_CHARS = _byte_chars()
_CHAR_BYTES = {c: b for b, c in enumerate(BYTE_CHARS)}


def _to_chars(token: bytes) -> str:
    return "".join(BYTE_CHARS[b] for b in token)


def _to_bytes(text: str) -> bytes | None:
    """The inverse of `_to_chars`; None when a character is outside the byte-level alphabet."""
    try:
        return bytes(_CHAR_BYTES[c] for c in text)
    except KeyError:
        return None


def _merges(ranks: dict[bytes, int]) -> list[list[str]]:
    """Every way to build each token from two tokens, ordered by the built token's rank (ties: the parts' ranks).

    tiktoken merges, at each step, the adjacent pair whose concatenation has the lowest rank, whatever the two parts
    are; a BPE merge list with every split of every token, in that order, merges the same pairs in the same order."""
    found = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = ranks.get(token[:i]), ranks.get(token[i:])
            if left is not None and right is not None:
                found.append((rank, left, right, token[:i], token[i:]))
    found.sort()
    return [[_to_chars(a), _to_chars(b)] for *_, a, b in found]


def tokenizer_json(tokenizer: Tokenizer) -> dict:
    """The `tokenizers` library's serialisation of our tokenizer (what AutoTokenizer reads from tokenizer.json)."""
    enc = tokenizer.encoding
    ranks = enc._mergeable_ranks
    specials = sorted(enc._special_tokens.items(), key=lambda kv: kv[1])
    bos = tokenizer.bos_token_id
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for s, i in specials],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": enc._pat_str}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        # `tokenizer(text)` starts a document with <|bos|>, as nanochat always does; add_special_tokens=False leaves it
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<|bos|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [bos], "tokens": ["<|bos|>"]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {_to_chars(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])},
                  "merges": _merges(ranks)},
    }


def _tokenizer_config(tokenizer: Tokenizer, max_length: int) -> dict:
    enc = tokenizer.encoding
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>",
        "eos_token": "<|assistant_end|>",
        "pad_token": "<|assistant_end|>",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True}
                                 for s, i in sorted(enc._special_tokens.items(), key=lambda kv: kv[1])},
        "chat_template": CHAT_TEMPLATE,
    }


def _split_pattern(pre: object, where: str) -> str:
    """The split regex of a Sequence[Split(regex, Isolated), ByteLevel(no regex)] pre-tokenizer."""
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else None
    if (isinstance(steps, list) and len(steps) == 2 and isinstance(steps[0], dict) and isinstance(steps[1], dict)
            and steps[0].get("type") == "Split" and isinstance(steps[0].get("pattern"), dict)
            and isinstance(steps[0]["pattern"].get("Regex"), str)
            and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
            and steps[1].get("type") == "ByteLevel" and steps[1].get("use_regex") is False
            and not steps[1].get("add_prefix_space")):
        return steps[0]["pattern"]["Regex"]
    kind = pre.get("type") if isinstance(pre, dict) else pre
    raise CheckpointError(f"{where}: pre_tokenizer {kind!r} is not a regex Split followed by a ByteLevel without its "
                          f"own regex (tiktoken's layout); this tokenizer cannot be turned into tiktoken ranks")


def tokenizer_from_json(path: str | Path, name: str | None = None) -> Tokenizer:
    """A transformers tokenizer.json (byte-level BPE, regex split, nanochat's specials) -> our tiktoken Tokenizer.
    CheckpointError naming what does not fit."""
    path = Path(path)
    data = _read_json(path)
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        kind = model.get("type") if isinstance(model, dict) else None
        raise CheckpointError(f"{path}: model type {kind!r}; only a byte-level BPE converts to tiktoken")
    if data.get("normalizer") is not None:
        kind = data["normalizer"].get("type") if isinstance(data["normalizer"], dict) else data["normalizer"]
        raise CheckpointError(f"{path}: has a normalizer ({kind}), which tiktoken cannot apply")
    pattern = _split_pattern(data.get("pre_tokenizer"), str(path))
    added = {}
    for t in data.get("added_tokens") or []:
        if not (isinstance(t, dict) and isinstance(t.get("content"), str) and type(t.get("id")) is int):
            raise CheckpointError(f"{path}: malformed added token {t!r}")
        added[t["content"]] = t["id"]
    missing = [s for s in SPECIAL_TOKENS if s not in added]
    if missing:
        raise CheckpointError(f"{path}: lacks nanochat's special token(s) {missing} (not a nanochat tokenizer)")
    special_ids = set(added.values())
    ranks: dict[bytes, int] = {}
    for text, i in model["vocab"].items():
        if i in special_ids:
            continue
        token = _to_bytes(text)
        if token is None or type(i) is not int:
            raise CheckpointError(f"{path}: vocab entry {text!r} -> {i!r} is not a byte-level token")
        ranks[token] = i
    lacking = [b for b in range(256) if bytes([b]) not in ranks]
    if lacking:
        raise CheckpointError(f"{path}: no single-byte token for {len(lacking)} byte value(s) (e.g. {lacking[:5]}); "
                              f"byte-level BPE needs all 256")
    last = -1
    for k, merge in enumerate(model.get("merges") or []):
        parts = merge.split(" ") if isinstance(merge, str) else merge
        joined = (_to_bytes(parts[0]) or b"") + (_to_bytes(parts[1]) or b"") if len(parts) == 2 else b""
        rank = ranks.get(joined)
        if rank is None:
            raise CheckpointError(f"{path}: merge {k} {merge!r} does not make a token of the vocab")
        if rank < last:
            raise CheckpointError(f"{path}: merge {k} {merge!r} comes after a merge into a later token; tiktoken "
                                  f"merges in vocabulary order and could not reproduce this BPE")
        last = rank
    try:
        encoding = tiktoken.Encoding(name=name or path.parent.name, pat_str=pattern, mergeable_ranks=ranks,
                                     special_tokens=added)
    except Exception as e:  # e.g. a split regex that tiktoken's engine does not accept
        raise CheckpointError(f"{path}: tiktoken refuses this tokenizer ({e})") from None
    return Tokenizer(encoding)


# ---- writing -------------------------------------------------------------------------------------------------------
def special_token_ids(tokenizer: Tokenizer) -> dict:
    """The token ids a config.json and generation_config.json carry: <|bos|>, and the two a reply ends at."""
    bos, end = tokenizer.bos_token_id, tokenizer.special_id("<|assistant_end|>")
    return {"bos_token_id": bos, "eos_token_id": [end, bos], "pad_token_id": end}  # nanochat's engine stops at either


def write_generation_config(tokenizer: Tokenizer, out: Path) -> Path:
    return write_json(out / "generation_config.json", special_token_ids(tokenizer))


def hf_config(config: GPTConfig, tokenizer: Tokenizer, dtype: torch.dtype) -> dict:
    """config.json of transformers' NanoChatForCausalLM for this GPT config."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": 4 * config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "max_position_embeddings": config.sequence_len,
        "hidden_act": "relu2",
        "rms_norm_eps": NORM_EPS,
        "rope_parameters": {"rope_type": "default", "rope_theta": nanochat.TUTORIAL.features.rotary_base},
        "final_logit_softcapping": nanochat.TUTORIAL.features.softcap,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        **special_token_ids(tokenizer),
        "use_cache": True,
        "dtype": _DTYPE_NAMES[dtype],
    }


def to_transformers(model: GPT, tokenizer: Tokenizer, out_dir: str | Path, *, dtype: torch.dtype | None = None,
                    max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
    """Write `model` (the tutorial's forward, or f1bf69d's, cropped) and `tokenizer` as a transformers NanoChat folder: config.json,
    generation_config.json, model.safetensors (or shards + model.safetensors.index.json when larger than
    max_shard_bytes), tokenizer.json, tokenizer_config.json. dtype: stored weights (default: the model's).
    Returns the files written. CheckpointError for a later member, naming what transformers has no place for."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model
    if not isinstance(model, GPT):
        raise CheckpointError(f"only a nanochat GPT converts to transformers, not {type(model).__name__}")
    blocked = [NOT_IN_TRANSFORMERS[name] for name in model.features.changed() if name in NOT_IN_TRANSFORMERS]
    if blocked:
        raise CheckpointError(f"nanochat {model.member.name} does not convert to transformers: its NanoChat (the "
                              f"tutorial's forward) has no place for " + "; ".join(blocked))
    config = model.config
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                              f"{config.vocab_size}")
    model.check_fused()  # a weight replaced after fuse_qkv() would be written but not be what the model computes
    names = _hf_names(config.n_layer)
    V = config.vocab_size  # a padded vocab's extra rows are never read: crop them
    sd = {k: v[:V] if k in ("transformer.wte.weight", "lm_head.weight") else v for k, v in model.state_dict().items()}
    dtype = dtype or sd["lm_head.weight"].dtype
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype {dtype} cannot be stored; use one of {list(_DTYPE_NAMES)}")

    out = Path(out_dir)
    written = write_safetensors({names[k]: v for k, v in sd.items()}, out, dtype, max_shard_bytes)
    hf = hf_config(config, tokenizer, dtype)
    written += [write_json(out / "config.json", hf), write_generation_config(tokenizer, out)]
    return written + write_tokenizer(tokenizer, out, config.sequence_len)


def write_safetensors(tensors: dict[str, torch.Tensor], out: Path, dtype: torch.dtype,
                      max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
    """`tensors` (name -> tensor) in `dtype` as model.safetensors, or as shards of at most max_shard_bytes (greedy, in
    order) with model.safetensors.index.json: transformers' layout, which vLLM reads too. Earlier weight files in
    `out` are removed first. Returns the files written."""
    shards: list[list[str]] = [[]]
    size, total = 0, 0
    for k, v in tensors.items():
        nbytes = v.numel() * dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(k)
        size, total = size + nbytes, total + nbytes
    n = len(shards)
    files = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]

    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("model*.safetensors"), out / INDEX_FILE]:  # an earlier export with other sharding
        stale.unlink(missing_ok=True)
    written = []
    weight_map = {}
    for name, keys in zip(files, shards):
        # copies: the fused q/k/v weights are views of one matrix, and safetensors refuses shared storage
        shard = {k: tensors[k].detach().to("cpu", dtype, copy=True).contiguous() for k in keys}
        bad = [k for k, t in shard.items() if not torch.isfinite(t).all()]
        if bad:
            raise CheckpointError(f"{bad}: not finite after casting to {dtype} (overflow?)")
        save_file(shard, out / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
        written.append(out / name)
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        written.append(write_json(out / INDEX_FILE, index))
    return written


def write_tokenizer(tokenizer: Tokenizer, out: Path, max_length: int) -> list[Path]:
    """tokenizer.json and tokenizer_config.json (chat template included): what AutoTokenizer, and so vLLM, loads."""
    return [write_json(out / TOKENIZER_FILE, tokenizer_json(tokenizer), indent=None),
            write_json(out / TOKENIZER_CONFIG_FILE, _tokenizer_config(tokenizer, max_length))]


def write_json(path: Path, data: dict, indent: int | None = 2) -> Path:
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# ---- reading -------------------------------------------------------------------------------------------------------
@dataclass
class TransformersFolder:
    """What a transformers NanoChat folder holds, in our terms (before the model is built)."""
    config: GPTConfig
    state_dict: dict[str, torch.Tensor]  # our names
    hf_config: dict
    notes: list[str] = field(default_factory=list)  # where our forward differs from transformers' on this folder


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not JSON ({e}); a truncated or corrupt download?") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def config_from_hf(hf: dict, where: str = "config.json") -> tuple[GPTConfig, list[str]]:
    """transformers' NanoChat config -> (our GPTConfig, notes). CheckpointError naming each option our forward cannot
    reproduce; options that only training or generation read (dropout, init range, token ids, use_cache) are
    ignored."""
    if hf.get("model_type") != MODEL_TYPE:
        hint = " (this is Inside Forward's own format: use gpt.checkpoint.load_model)" if "format" in hf else ""
        raise CheckpointError(f"{where}: model_type {hf.get('model_type')!r}, not {MODEL_TYPE!r}; only transformers' "
                              f"NanoChat converts to this GPT{hint}")
    missing = [k for k in REQUIRED_KEYS if k not in hf]
    if missing:
        raise CheckpointError(f"{where}: missing key(s) {missing}")
    C, H = hf["hidden_size"], hf["num_attention_heads"]
    Hkv = hf.get("num_key_value_heads") if hf.get("num_key_value_heads") is not None else H
    d = {"sequence_len": hf["max_position_embeddings"], "vocab_size": hf["vocab_size"],
         "n_layer": hf["num_hidden_layers"], "n_head": H, "n_kv_head": Hkv, "n_embd": C}
    config = config_from_dict(d, where)  # positive integers, or a named error
    ours = nanochat.TUTORIAL.features  # a transformers NanoChat folder is read as the tutorial's forward
    problems = []
    if C % H:
        problems.append(f"hidden_size {C} is not a multiple of num_attention_heads {H}")
    elif (C // H) % 2:
        problems.append(f"head dim {C // H} is odd (rotary needs pairs)")
    if H % Hkv:
        problems.append(f"num_attention_heads {H} is not a multiple of num_key_value_heads {Hkv}")
    if hf.get("head_dim") not in (None, C // max(H, 1)):
        problems.append(f"head_dim {hf['head_dim']} (ours is hidden_size / num_attention_heads = {C // max(H, 1)})")
    if hf["intermediate_size"] != 4 * C:
        problems.append(f"intermediate_size {hf['intermediate_size']} (ours is 4 x hidden_size = {4 * C})")
    if hf.get("hidden_act", "relu2") != "relu2":
        problems.append(f"hidden_act {hf['hidden_act']!r} (ours is relu2)")
    if hf.get("attention_bias", False) or hf.get("mlp_bias", False):
        problems.append("biases (attention_bias / mlp_bias; ours has none)")
    if hf.get("final_logit_softcapping", ours.softcap) != ours.softcap:
        problems.append(f"final_logit_softcapping {hf['final_logit_softcapping']} (ours is {ours.softcap:g})")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else rope
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0)) if isinstance(rope, dict) else None
    if rope_type != "default":
        problems.append(f"rope type {rope_type!r} (ours is the default rotary)")
    elif theta != ours.rotary_base:
        problems.append(f"rope_theta {theta} (ours is {ours.rotary_base:g})")
    for key in ("quantization_config", "sliding_window", "layer_types"):
        if hf.get(key):
            problems.append(f"{key} {hf[key]!r} (ours has no such option)")
    eps = hf.get("rms_norm_eps", HF_DEFAULT_EPS)
    if not isinstance(eps, (int, float)) or not 0 <= eps <= MAX_NORM_EPS:
        problems.append(f"rms_norm_eps {eps!r} (ours is {NORM_EPS:.3g}; up to {MAX_NORM_EPS:g} is read as an "
                        f"approximation)")
    if problems:
        raise CheckpointError(f"{where}: options this GPT cannot reproduce: " + "; ".join(problems))
    notes = []
    if eps != NORM_EPS:
        notes.append(f"rms_norm_eps is {eps:g}, ours {NORM_EPS:.3g} (torch's default): each norm's output differs by "
                     f"a relative (eps difference) / (2 mean(x^2)), {abs(eps - NORM_EPS) / 2:.1g} at unit scale")
    return config, notes


def _open_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"missing weight file {path}")
    try:
        with safe_open(path, "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); a truncated or corrupt download?"
                              ) from None


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """transformers' names -> tensors: the files model.safetensors.index.json lists, or model.safetensors."""
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        index = _read_json(index_path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index_path}: no weight_map of tensor name -> file")
        files = sorted(set(weight_map.values()))
        absent = [f for f in files if not (folder / f).is_file()]
        if absent:
            raise CheckpointError(f"{folder}: missing weight shard(s) {absent} listed in {INDEX_FILE} "
                                  f"(a partial download?)")
        tensors: dict[str, torch.Tensor] = {}
        for f in files:
            shard = _open_safetensors(folder / f)
            wanted = [k for k, v in weight_map.items() if v == f]
            lost = [k for k in wanted if k not in shard]
            if lost:
                raise CheckpointError(f"{folder / f}: lacks tensor(s) {lost[:5]} that {INDEX_FILE} places there")
            tensors.update({k: shard[k] for k in wanted})
        return tensors
    if (folder / SINGLE_FILE).is_file():
        return _open_safetensors(folder / SINGLE_FILE)
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles:
        raise CheckpointError(f"{folder}: weights only as pickles {pickles}, which are never loaded (they can run "
                              f"code); save them as safetensors")
    raise CheckpointError(f"{folder}: no weights ({SINGLE_FILE} or {INDEX_FILE})")


def read_transformers(folder: str | Path) -> TransformersFolder:
    """config.json + safetensors of a transformers NanoChat folder, in our names and config (no model built)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    hf = _read_json(folder / "config.json")
    config, notes = config_from_hf(hf, str(folder / "config.json"))
    tensors = _read_weights(folder)
    names = _hf_names(config.n_layer)
    ignored = [k for k in tensors if k.endswith("rotary_emb.inv_freq")]  # recomputed; some old saves carry it
    for k in ignored:
        del tensors[k]
    tied = bool(hf.get("tie_word_embeddings", False))
    if tied:  # transformers ties lm_head to the embedding, whatever the file holds for lm_head
        tensors.pop("lm_head.weight", None)
        if names["transformer.wte.weight"] in tensors:
            tensors["lm_head.weight"] = tensors[names["transformer.wte.weight"]]
        notes.append("tie_word_embeddings: lm_head shares the embedding matrix")
    unexpected = sorted(set(tensors) - set(names.values()))
    missing = sorted(set(names.values()) - set(tensors))
    if unexpected:
        raise CheckpointError(f"{folder}: tensor(s) this GPT has no place for: {unexpected[:8]}"
                              + (f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else ""))
    if missing:
        raise CheckpointError(f"{folder}: missing tensor(s) {missing[:8]}"
                              + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    odd = sorted({str(t.dtype) for t in tensors.values() if not t.is_floating_point()})
    if odd:
        raise CheckpointError(f"{folder}: weights stored as {odd} (quantized?); only floating point converts")
    state_dict = {ours: tensors[theirs] for ours, theirs in names.items()}
    return TransformersFolder(config, state_dict, hf, notes)


def from_transformers(folder: str | Path, device: torch.device | str | None = None,
                      dtype: torch.dtype | str | None = None, *, tokenizer: Tokenizer | None = None) -> LoadedModel:
    """A transformers NanoChat folder (written by `to_transformers` or by transformers' `save_pretrained`) as our GPT,
    with the folder's tokenizer.json as a tiktoken Tokenizer (or `tokenizer`, e.g. for a folder without one).
    Device and dtype as gpt.checkpoint (CPU float32, CUDA bfloat16 by default). Never reads pickles. CheckpointError
    naming what is wrong: another model_type, an option our forward cannot reproduce, a missing key, shard or
    tensor, a truncated file, a tokenizer without nanochat's specials. `meta["notes"]` lists where our forward still
    differs from transformers' on this folder (beyond the rotary tables' bf16 rounding, see the module doc)."""
    folder = Path(folder)
    found = read_transformers(folder)
    if tokenizer is None:
        if not (folder / TOKENIZER_FILE).is_file():
            raise CheckpointError(f"{folder}: no {TOKENIZER_FILE} (pass tokenizer=... for a folder without one)")
        tokenizer = tokenizer_from_json(folder / TOKENIZER_FILE, name=folder.name)
    if tokenizer.vocab_size != found.config.vocab_size:
        raise CheckpointError(f"{folder}: tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                              f"{found.config.vocab_size}")
    device = pick_device(device)
    dtype = _as_dtype(dtype, device)
    model = build_model(found.config, nanochat.TUTORIAL, found.state_dict, device, dtype, str(folder))
    meta = {"format": "transformers", "transformers_version": found.hf_config.get("transformers_version"),
            "notes": found.notes}
    return LoadedModel(model, tokenizer, f"{folder.name} (transformers)", str(folder), device, dtype, meta)


__all__ = ["to_transformers", "from_transformers", "read_transformers", "tokenizer_json", "tokenizer_from_json",
           "config_from_hf", "hf_config", "TransformersFolder", "NORM_EPS", "NOT_IN_TRANSFORMERS", "write_safetensors",
           "write_tokenizer", "write_generation_config", "write_json", "special_token_ids"]
