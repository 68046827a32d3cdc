"""Models on the Hugging Face Hub: `owner/name[@revision]` -> a local folder of only the files a model needs.

Through `huggingface_hub`: its cache (HF_HUB_CACHE, or HF_HOME/hub), HF_TOKEN for private repos, and HF_HUB_OFFLINE
(then only the cache is read). These are read when a model is fetched, not when this module is imported. Nothing
from the repo is ever run (no remote code): the files are read by gpt/checkpoint.py as data.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
NANOCHAT_STEP = re.compile(r"model_(\d+)\.pt")
TRUE = {"1", "true", "yes", "on"}


class HubError(ValueError):
    """A Hub model that cannot be had: not in the cache while offline, no such repo or revision, no model in it."""


def is_repo_id(source: str) -> bool:
    """'owner/name' or 'owner/name@revision' (a folder that exists locally is a folder, not a repo id)."""
    return bool(REPO_ID.match(source)) and not Path(source).expanduser().exists()


def split_repo_id(source: str) -> tuple[str, str | None]:
    repo, _, revision = source.partition("@")
    return repo, revision or None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE


def cache_dir() -> str | None:
    """huggingface_hub's cache folder as the environment says now (None: its default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def needed_files(files: list[str], step: int | None = None) -> list[str]:
    """The patterns of the files a model in a repo needs: a config.json model (transformers' format or ours) takes
    its JSON, safetensors and tokenizer files; a flat nanochat repo takes one step's model and meta (the largest unless
    `step`) and the tokenizer pickle."""
    names = {Path(f).name for f in files}
    if "config.json" in names:
        return ["*.json", "*.safetensors", "tokenizer*"]
    steps = sorted(int(m.group(1)) for n in names if (m := NANOCHAT_STEP.fullmatch(n)))
    if not steps:
        raise HubError(f"no model in the repo: neither a config.json nor nanochat's model_<step>.pt among "
                       f"{sorted(names)[:20]}")
    step = steps[-1] if step is None else step
    return [f"model_{step:06d}.pt", f"meta_{step:06d}.json", "tokenizer.pkl"]


def fetch(source: str, step: int | None = None) -> Path:
    """The local folder of `owner/name[@revision]`, downloading only what the model needs (a progress bar in the
    terminal) unless HF_HUB_OFFLINE is set, in which case the cache must already hold it."""
    from huggingface_hub import list_repo_files, snapshot_download
    from huggingface_hub.errors import (LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    repo, revision = split_repo_id(source)
    try:
        if offline():
            return Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir(), local_files_only=True))
        patterns = needed_files(list_repo_files(repo, revision=revision, token=os.environ.get("HF_TOKEN")), step)
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir(), allow_patterns=patterns,
                                      token=os.environ.get("HF_TOKEN")))
    except LocalEntryNotFoundError:
        raise HubError(f"{source}: not in the Hugging Face cache ({cache_dir() or 'the default cache'}) and "
                       f"HF_HUB_OFFLINE is set; download it once with HF_HUB_OFFLINE=0") from None
    except RepositoryNotFoundError:
        raise HubError(f"{source}: no such repo on the Hugging Face Hub (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HubError(f"{source}: no revision {revision!r} in {repo}") from None
    except OSError as e:  # no network, a proxy, a refused connection (requests' errors are OSErrors)
        raise HubError(f"{source}: could not reach the Hugging Face Hub ({type(e).__name__}); set HF_HUB_OFFLINE=1 "
                       f"to use the cache only") from None
