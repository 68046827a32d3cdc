"""Shared fixtures: a tiny rustbpe-trained tokenizer and a tiny GPT with non-trivial weights.

- `tiny_tokenizer` (session): trained in a few ms on TINY_CORPUS (English, Chinese, emoji). Characters that are not in
  the corpus (most CJK characters, most emoji) are encoded as single-byte tokens, so a character is often split across
  tokens: useful for streaming tests. Treat it as read-only.
- `tiny_model` (per test, fresh): GPT(tiny config, vocab = tiny_tokenizer.vocab_size), nanochat init, then every
  weight perturbed with a fixed seed. nanochat's init zeroes lm_head and the output projections, which makes every
  logit exactly 0 (and every block the identity); the perturbation makes outputs depend on the input.
- `make_tiny_model(vocab_size, seed=0, member=TUTORIAL, **config)` builds the same thing for other sizes/seeds.
- `live_app` (session): the real app served on a free local port for the browser and API tests (see live_app.py).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator

import pytest
import torch

from gpt.nanochat import GPT, TUTORIAL, GPTConfig, Member, new_model
from gpt.tokenizer import Tokenizer

if TYPE_CHECKING:
    from live_app import LiveApp

TINY_VOCAB = 512
TINY_CONFIG = dict(sequence_len=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)  # GQA on purpose

_ENGLISH = """\
The teacher opened the notebook and asked the class a simple question: what does the model see when it reads a word?
It does not see letters. It sees numbers, one for each token, and every token is a short piece of text.
Attention lets each position look back at the positions before it, never forward, so the past shapes the future.
The residual stream carries information from layer to layer; each block reads from it and writes back into it.
At the end, the last hidden state is turned into one score per token in the vocabulary, and the scores become
probabilities. Sampling picks the next token, and the loop starts again. In 2025 there were 1024 positions, 12 layers,
6 heads and 768 channels in the small model; the numbers 3.14159 and 42 are here only to exercise the digit splitting.
Don't worry if it's confusing at first: we'll look inside, step by step, and you'll see it's just arithmetic.
"""
_CHINESE = """\
老师打开笔记本，问了同学们一个简单的问题：模型读到一个词的时候，它看到的是什么？
它看不到字母，它看到的是数字，每个词元对应一个数字，每个词元都是一小段文本。
注意力让每个位置回头看它前面的位置，从不向后看，所以过去决定了未来。
残差流把信息从一层传到下一层；每个模块从中读取，再把结果写回去。
最后，最后一个隐藏状态被变成词表中每个词元的一个分数，这些分数再变成概率。
采样选出下一个词元，然后循环重新开始。我们一步一步地看，你会发现这只是算术。
"""
_EMOJI = "Emoji time 😀 🎉 👍🏽 🚀 ❤️ 🇨🇳 — tokens for pictures! 😀😀 🎉🎉 mixed 中文 and English 🚀.\n"
TINY_CORPUS = [_ENGLISH, _CHINESE, _EMOJI] * 4


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Tokenizer:
    return Tokenizer.train(TINY_CORPUS, TINY_VOCAB)


def make_tiny_model(vocab_size: int, seed: int = 0, member: Member = TUTORIAL, **config) -> GPT:
    """Tiny GPT of `member` (default the tutorial's) on CPU in fp32: nanochat init, then N(0, 1/fan_in) noise added
    to every weight (seeded)."""
    torch.manual_seed(seed)
    return perturbed(new_model(GPTConfig(vocab_size=vocab_size, **{**TINY_CONFIG, **config}), member), seed)


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`model` with nanochat's init, then N(0, 1/fan_in) noise added to every parameter (seeded), in eval mode."""
    model.init_weights()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
    return model.eval()


@pytest.fixture
def tiny_model(tiny_tokenizer: Tokenizer) -> GPT:
    return make_tiny_model(tiny_tokenizer.vocab_size)


@pytest.fixture(scope="session")
def live_app() -> Iterator[LiveApp]:
    from live_app import serve  # imports gradio and playwright: only for the tests that use the app

    with serve() as app:
        yield app


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (one per test module)."""
    from playwright.sync_api import sync_playwright

    from live_app import launch_chromium

    with sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_app):
    """A fresh browser session on the served app, once it has loaded."""
    from live_app import open_app

    page = open_app(browser, live_app.url)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def models():
    """The app's models as `python app.py` loads them (not served)."""
    from demo.models import load

    return load()


@pytest.fixture(scope="module")
def demo(models):
    """The app's Gradio Blocks, built but not served."""
    from demo.app import build_demo

    return build_demo(models)
