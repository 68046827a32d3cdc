"""A model from anywhere users keep one, through one call: `load(source)`.

It reads what a folder holds (`folder_kind`) and hands it to the loader of that format: gpt/checkpoint.py (nanochat's
layouts and this project's format), gpt/hf_format.py (transformers' NanoChat), after gpt/hub.py has fetched a Hugging
Face repo id into the Hub cache.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from gpt import hub
from gpt.checkpoint import (FORMAT, NANOCHAT_SOURCES, CheckpointError, LoadedModel, load_model, load_nanochat,
                            load_nanochat_flat)
from gpt.hf_format import from_transformers


def load(source: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None, *,
         arch: str | None = None, step: int | None = None, nanochat_source: str | None = None,
         model_tag: str | None = None) -> LoadedModel:
    """Every place a model may be, through one call:
    - a nanochat base dir (tokenizer/ and *_checkpoints/): nanochat_source, model_tag, step pick the checkpoint;
    - a flat nanochat folder (model_<step>.pt, meta_<step>.json, tokenizer.pkl: the Hub layout), the largest step
      unless `step`;
    - a transformers NanoChat folder (config.json with model_type "nanochat", safetensors, tokenizer.json);
    - this project's format (config.json, safetensors, tokenizer.tiktoken);
    - a Hugging Face Hub repo id, owner/name[@revision], fetched into the Hub cache (gpt/hub.py), then one of the
      above.
    `arch` forces the nanochat version of a nanochat checkpoint (gpt/nanochat/registry.py)."""
    text = str(source)
    folder, name = Path(text).expanduser(), None
    if not folder.exists() and hub.is_repo_id(text):
        try:
            folder, name = hub.fetch(text, step), text
        except hub.HubError as e:
            raise CheckpointError(str(e)) from None
    if not folder.is_dir():
        raise FileNotFoundError(f"{text}: no such folder, and not a Hugging Face repo id (owner/name[@revision])")
    kind = folder_kind(folder)
    if kind == "ours":
        return load_model(folder, device, dtype)
    if kind == "transformers":
        return from_transformers(folder, device, dtype)
    if kind == "nanochat-flat":
        return load_nanochat_flat(folder, step, device, dtype, arch, name=name)
    return load_nanochat(folder, nanochat_source, model_tag, step, device, dtype, arch)


def folder_kind(folder: Path) -> str:
    """"ours" | "transformers" | "nanochat-flat" | "nanochat-base", read off the files; CheckpointError naming what
    the folder holds when it is none of them."""
    config = folder / "config.json"
    if config.is_file():
        try:
            saved = json.loads(config.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{config}: not JSON ({e})") from None
        if isinstance(saved, dict) and saved.get("format") == FORMAT:
            return "ours"
        if isinstance(saved, dict) and saved.get("model_type") == "nanochat":
            return "transformers"
        kind = saved.get("model_type") if isinstance(saved, dict) else None
        raise CheckpointError(f"{config}: not a model this app reads (model_type {kind!r}; it reads nanochat's "
                              f"checkpoints, transformers' NanoChat and its own format)")
    if any(folder.glob("model_*.pt")):
        return "nanochat-flat"
    if (folder / "tokenizer").is_dir() or any((folder / d).is_dir() for d in NANOCHAT_SOURCES.values()):
        return "nanochat-base"
    found = sorted(p.name for p in folder.iterdir())[:12]
    raise CheckpointError(f"{folder}: no model here (no config.json, no model_<step>.pt, no nanochat "
                          f"*_checkpoints/); it holds {found}")
