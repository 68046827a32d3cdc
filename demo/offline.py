"""Whether the app may use the network at launch, decided before gradio (and with it huggingface_hub) is imported."""
from __future__ import annotations

import os

from gpt.hub import is_repo_id


def stay_offline_unless_hub(model: str | None) -> None:
    """Nothing leaves the machine at launch unless a Hugging Face Hub model was asked for (then huggingface_hub may
    download it; HF_HUB_OFFLINE=1 keeps it to the cache). huggingface_hub reads the variable once, when first
    imported, so this runs before anything imports it."""
    if not (model and is_repo_id(model)):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
