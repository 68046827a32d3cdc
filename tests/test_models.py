"""demo/models.py: how many chats the app decodes together on each device."""
from __future__ import annotations

import pytest
import torch

from demo.models import chat_rows, load
from gpt import fused_decode
from gpt.nanochat import GPT, GPTConfig, new_model

D20 = GPTConfig(sequence_len=2048, vocab_size=65536, n_layer=20, n_head=10, n_kv_head=10, n_embd=1280)
SMALL = GPTConfig(sequence_len=512, vocab_size=8192, n_layer=8, n_head=5, n_kv_head=5, n_embd=320)


def on_meta(config: GPTConfig, dtype: torch.dtype) -> GPT:
    with torch.device("meta"):  # shapes and dtypes only: no memory
        return new_model(config).to(dtype)


def test_chat_rows_fit_the_cpu_kv_budget():
    cpu = torch.device("cpu")
    # d20 in bf16: keys + values, 20 layers x 10 heads x 128 dims x 2048 positions x 2 bytes = 210 MB a row
    assert chat_rows(on_meta(D20, torch.bfloat16), cpu) == (512 * 2**20) // (2 * 20 * 10 * 128 * 2048 * 2) == 2
    assert chat_rows(on_meta(D20, torch.float32), cpu) == 1  # 419 MB a row
    assert chat_rows(on_meta(SMALL, torch.bfloat16), cpu) == 8  # 10 MB a row: the CPU's cap
    assert chat_rows(on_meta(D20, torch.bfloat16), torch.device("cuda")) == 32


def test_chat_replies_stream_together_up_to_the_engines_rows(monkeypatch):
    """Send, Enter and Regenerate share one Gradio concurrency limit: the rows of the engine's batched loop (the
    default per-event limit of 2 would let only 2 of 8 rows ever decode together)."""
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from demo.app import build_demo
    from demo.models import load

    models = load()
    replies = [f for f in build_demo(models).fns.values() if f.name == "reply"]
    assert len(replies) == 3
    assert {(f.concurrency_id, f.concurrency_limit) for f in replies} == {("chat", models.chat_rows)}
    # the rows, from the served model's config and the dtype it was loaded in: keys + values of every layer, kv head,
    # head dim and position; 512 MiB of them on a CPU, at most 8 rows; 32 rows on a GPU
    c, main = models.main.model.config, models.main
    kv_bytes_per_row = 2 * c.n_layer * c.n_kv_head * (c.n_embd // c.n_head) * c.sequence_len * \
        torch.empty(0, dtype=main.dtype).element_size()
    expected = max(1, min(8, 512 * 2**20 // kv_bytes_per_row)) if main.device.type == "cpu" else 32
    assert len(models.engine.server.rows) == models.chat_rows == expected


def test_fused_without_a_gpu_says_so_and_decodes_through_the_forward(capsys):
    """--fused on a machine without CUDA (or without Triton): a warning naming the device, and the chat's decoder
    runs the model's forward (no fused step is built, which would fail at the first reply)."""
    if fused_decode.available(torch.device("cpu")):
        pytest.skip("Triton's interpreter is on: the fused step can run on this CPU")
    models = load(random_config="n_layer=2,n_head=2,n_embd=64", device="cpu", fused=True)
    assert not models.fused and models.engine.server.decoder.fused is None
    assert "--fused needs a CUDA GPU and Triton (this is cpu)" in capsys.readouterr().out
