"""nanochat-faithful GPT, tokenizer, checkpoints and KV-cache engine."""
from gpt.kv_cache import KVCache
from gpt.nanochat import GPT, GPTConfig
from gpt.recorder import Recorder

__all__ = ["GPT", "GPTConfig", "KVCache", "Recorder"]
