"""vLLM plugin for the nanochat family: `pip install ./vllm_nanochat` next to vLLM, then serve a folder written by
`python -m gpt.export --model SRC --format vllm OUT` (README.md beside this file).

vLLM calls `register` in every process it starts (entry point group `vllm.general_plugins`); it must be safe to call
more than once. Nothing here imports vLLM until then, so the config can be read without it.
"""
from __future__ import annotations

from vllm_nanochat.config import ARCHITECTURE, MODEL_TYPE, NanoChatFamilyConfig

__all__ = ["ARCHITECTURE", "MODEL_TYPE", "NanoChatFamilyConfig", "register"]


def register() -> None:
    """Teach transformers our config.json and vLLM our architecture (the model is imported when vLLM builds it)."""
    from transformers import AutoConfig
    from vllm import ModelRegistry

    AutoConfig.register(MODEL_TYPE, NanoChatFamilyConfig, exist_ok=True)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "vllm_nanochat.model:NanoChatFamilyForCausalLM")
