"""The training code that built the default model: chat targets, learning on CPU, resuming."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from gpt.nanochat import TODAY
from gpt.training.shards import PretrainStream, SFTBatches, encode_items
from gpt.training.train import TrainConfig, Trainer

TINY = TrainConfig(sequence_len=32, vocab_size=256, n_layer=2, n_head=2, n_kv_head=2, n_embd=32, batch_size=8,
                   pretrain_steps=12, sft_steps=0, eval_every=10 ** 9)
TEXT = np.frombuffer(b"the cat sat on the mat. a dog ran to the log. " * 200, dtype=np.uint8).astype(np.uint16)


def test_sft_targets_are_exactly_the_assistant_tokens(tiny_tokenizer):
    chat = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello! 你好"},
            {"role": "user", "content": "how are you?"}, {"role": "assistant", "content": "fine, thanks"}]
    shard = encode_items(tiny_tokenizer, [chat])
    tok = tiny_tokenizer
    sft = SFTBatches({"c": shard}, {"c": 1.0}, tok.bos_token_id, tok.special_id("<|user_start|>"), 64, seed=0)
    x, y = sft.batch(3)
    end = tok.special_id("<|assistant_end|>")
    expected = tok.encode("hello! 你好") + [end] + tok.encode("fine, thanks") + [end]
    for r in range(3):
        assert y[r][y[r] >= 0].tolist() == expected
        assert x[r, 0] == tok.bos_token_id
        # where a target is set it is the next input token (targets are the inputs shifted by one)
        n = int((y[r] >= 0).nonzero().max())
        assert torch.equal(y[r, :n][y[r, :n] >= 0], x[r, 1:n + 1][y[r, :n] >= 0])


def held_out_loss(model: torch.nn.Module) -> float:
    ids = torch.from_numpy(TEXT[5:5 + 4 * 33].astype(np.int64)).view(4, 33)
    with torch.no_grad():
        return float(model(ids[:, :-1].contiguous(), ids[:, 1:].contiguous()))


def test_tiny_pretraining_on_cpu_lowers_the_loss():
    cfg = dataclasses.replace(TINY, pretrain_steps=60)
    trainer = Trainer(cfg, torch.device("cpu"))
    before = held_out_loss(trainer.model)
    assert before == pytest.approx(math.log(256), abs=0.3)  # nanochat's init: zero lm_head, uniform prediction
    stream = PretrainStream({"text": TEXT}, {"text": 1.0}, cfg.sequence_len, seed=0)
    trainer.run_phase("pretrain", stream, cfg.pretrain_steps, math.inf, 1.0)
    assert trainer.state["phase"] == "sft" and trainer.state["pretrain_steps"] == 60
    # 18 distinct characters: anything below log(18) has learned more than the character frequencies
    assert held_out_loss(trainer.model) < 0.6 * math.log(18)


def test_tiny_pretraining_of_the_2026_architecture_lowers_the_loss():
    """The trainer builds nanochat 92d63d4's model too (--set arch=nanochat-2026-07), and its optimizers hold every
    parameter exactly once (value embeddings, lambdas and smear/backout scalars included)."""
    cfg = dataclasses.replace(TINY, pretrain_steps=60, arch="nanochat-2026-07", window_pattern="SL")
    trainer = Trainer(cfg, torch.device("cpu"))
    assert trainer.model.member is TODAY and TODAY.name == "a825e63"  # the alias names today's member
    held = [id(p) for opt in trainer.opts for group in opt.param_groups for p in group["params"]]
    assert sorted(held) == sorted(id(p) for p in trainer.model.parameters())
    before = held_out_loss(trainer.model)
    assert before == pytest.approx(math.log(256), abs=0.3)  # N(0, 0.001) lm_head: all but uniform
    stream = PretrainStream({"text": TEXT}, {"text": 1.0}, cfg.sequence_len, seed=0)
    trainer.run_phase("pretrain", stream, cfg.pretrain_steps, math.inf, 1.0)
    assert held_out_loss(trainer.model) < 0.6 * math.log(18)


class Interrupted(Exception):
    pass


class StopAfter(PretrainStream):
    """A stream that raises after `n` batches, as a killed device run would stop."""

    def __init__(self, n: int, *args, **kw):
        super().__init__(*args, **kw)
        self.left = n

    def batch(self, batch_size: int):
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        return super().batch(batch_size)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    def stream(stop_after=None):
        args = ({"text": TEXT}, {"text": 1.0}, TINY.sequence_len, 0)
        return PretrainStream(*args) if stop_after is None else StopAfter(stop_after, *args)

    straight_stream = stream()
    straight = Trainer(TINY, torch.device("cpu"), samplers=(straight_stream,))
    straight.run_phase("pretrain", straight_stream, TINY.pretrain_steps, math.inf, 1.0)

    first_stream = stream(stop_after=5)
    first = Trainer(TINY, torch.device("cpu"), tmp_path, samplers=(first_stream,))
    with pytest.raises(Interrupted):
        first.run_phase("pretrain", first_stream, TINY.pretrain_steps, math.inf, 1.0, save_every=0.0)
    resumed_stream = stream()
    resumed = Trainer(TINY, torch.device("cpu"), tmp_path, samplers=(resumed_stream,))
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    assert resumed.state["step"] == 5
    resumed.run_phase("pretrain", resumed_stream, TINY.pretrain_steps, math.inf, 1.0)
    for name, p in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], p, rtol=0, atol=0, msg=name)
