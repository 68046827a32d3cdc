"""Issue 21's branches: a branch through the batched server computes only the tokens after the branch point (counted
at the model's forward), gives exactly the reply a fresh plain loop gives for the longer prompt with the same seed
(while another chat decodes beside it), and the alternatives are the distribution the chat drew from (float64)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from explain.branching import alternatives
from gpt import nanochat
from gpt.engine import Engine
from gpt.stream import SamplingParams
from rules.branches import Branch, Branches, parse_link
from rules.inputs import InputError

# no windows nor smear; windows of half the context; today's (windows of 128, smear carried across the branch point)
MEMBERS = [nanochat.TUTORIAL, nanochat.member("fbc1484"), nanochat.TODAY]


def model_of(member, vocab: int):
    # 4 layers, windows S S S L over a context of 256: the short window (128) is crossed by prompt + reply
    return make_tiny_model(vocab, seed=3, member=member, sequence_len=256, n_layer=4, window_pattern="SSSL").eval()


def reply(engine, prompt, params) -> tuple[list[int], int]:
    tokens, cached = [], None
    for event in engine.stream(prompt, params):
        cached = event.cached
        if event.token is not None:
            tokens.append(event.token)
    return tokens, cached


def bos(tokenizer, text: str) -> list[int]:
    return [tokenizer.special_id("<|bos|>")] + tokenizer.encode(text)


class CountTokens:
    """Counts the positions the model computes, at its forward (idx [B, T]: a prefill of one row computes T)."""

    def __init__(self, model):
        self.calls: list[tuple[int, int]] = []
        forward = model.forward

        def counting(idx, *args, **kwargs):
            self.calls.append(tuple(idx.shape))
            return forward(idx, *args, **kwargs)

        model.forward = counting


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
def test_a_branch_computes_only_what_follows_its_prefix_and_equals_a_fresh_reply(member, tiny_tokenizer):
    model = model_of(member, tiny_tokenizer.vocab_size)
    if model.features.windows:
        assert min(w for w in model.window_sizes if w) < 140  # the branch point is past the short window
    prompt = bos(tiny_tokenizer, "The teacher opened the notebook and asked")
    plain = Engine(model, tiny_tokenizer, batched=False)
    server = Engine(model, tiny_tokenizer, batched=True, max_batch=4)
    for seed in range(11, 41):  # the first seed whose reply does not end (a stop token) before the branch point
        params = SamplingParams(temperature=0.9, top_k=40, top_p=0.95, seed=seed, max_tokens=150)
        first, cached = reply(server, prompt, params)
        if len(first) >= 140:
            break
    assert len(first) >= 140 and cached == (0 if seed == 11 else len(prompt) - 1)  # the same prompt again: all but its last token kept
    assert first == reply(plain, prompt, params)[0]

    at = 135  # branch at the reply's 136th token: another token there, then the model goes on
    other = next(i for i in range(10, 200) if i != first[at] and not tiny_tokenizer.is_special(i))
    branch_prompt = prompt + first[:at] + [other]
    counter = CountTokens(model)
    branch, cached = reply(server, branch_prompt, params)
    assert cached == len(prompt) + at  # the kept keys/values: the prompt and the reply's first `at` tokens
    assert counter.calls[0] == (1, 1)  # the branch's prefill computed the one new token, nothing before it
    assert all(T == 1 for _, T in counter.calls)  # then one position per decode step
    assert branch == reply(plain, branch_prompt, params)[0]  # seeded: the same as the longer prompt from scratch

    # a second branch from the first one's middle reuses that one's cache, again exactly
    again = branch_prompt + branch[:5] + [first[at]]
    counter.calls.clear()
    tokens, cached = reply(server, again, params)
    assert cached == len(branch_prompt) + 5 and counter.calls[0] == (1, 1)
    assert tokens == reply(plain, again, params)[0]


def test_a_branch_beside_another_chat(tiny_tokenizer):
    """Another user's chat decodes while the branch is admitted: both are exactly what they are alone."""
    model = model_of(nanochat.TODAY, tiny_tokenizer.vocab_size)
    plain = Engine(model, tiny_tokenizer, batched=False)
    server = Engine(model, tiny_tokenizer, batched=True, max_batch=4)
    prompt = bos(tiny_tokenizer, "Attention lets each position")
    params = SamplingParams(temperature=1.0, top_k=0, seed=5, max_tokens=40)
    first, _ = reply(server, prompt, params)
    other_prompt = bos(tiny_tokenizer, "老师打开笔记本")
    other_params = SamplingParams(temperature=0.7, seed=99, max_tokens=60)
    got = {}
    beside = threading.Thread(target=lambda: got.setdefault("other", reply(server, other_prompt, other_params)))
    beside.start()
    branch_prompt = prompt + first[:3] + [first[3] + 1]
    branch, cached = reply(server, branch_prompt, params)
    beside.join(60)
    assert cached == len(prompt) + 3
    assert branch == reply(plain, branch_prompt, params)[0]
    assert got["other"][0] == reply(plain, other_prompt, other_params)[0]


def np_filtered(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """The chat's distribution in float64: logits / T, the top_k largest, then the smallest set reaching top_p."""
    order = np.argsort(-logits, kind="stable")
    scaled = logits[order] / temperature
    keep = np.arange(len(order)) < (top_k or len(order))
    p = np.exp(scaled - scaled[keep].max()) * keep
    p /= p.sum()
    before = np.cumsum(p) - p
    keep &= before < top_p
    p = np.exp(scaled - scaled[keep].max()) * keep
    out = np.zeros_like(p)
    out[order] = p / p.sum()
    return out


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.name)
def test_alternatives_are_the_distribution_the_reply_drew_from(member, tiny_tokenizer):
    model = model_of(member, tiny_tokenizer.vocab_size)
    ids = bos(tiny_tokenizer, "It sees numbers, one for each")
    params = SamplingParams(temperature=0.7, top_k=20, top_p=0.8, seed=1)
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1].double().numpy()
    want = np_filtered(logits, 0.7, 20, 0.8)
    chosen = int(np.argsort(-logits)[30])  # a token the filters dropped: it still gets its row
    df = alternatives(model, tiny_tokenizer, ids, params, chosen, k=10)
    assert df["token_id"].tolist()[:10] == np.argsort(-logits, kind="stable")[:10].tolist()
    assert np.allclose(df["p"], want[df["token_id"]], atol=1e-5)
    model_p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.allclose(df["p_model"], model_p[df["token_id"]], atol=1e-5)
    assert df["kept"].tolist() == (want[df["token_id"]] > 0).tolist() and df.attrs["kept"] == int((want > 0).sum())
    assert df["chosen"].sum() == 1 and df[df["chosen"]]["rank"].item() == 31 and df[df["chosen"]]["p"].item() == 0

    greedy = alternatives(model, tiny_tokenizer, ids, SamplingParams(temperature=0.0), None, k=5)
    assert greedy["p"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0] and greedy["token_id"][0] == int(logits.argmax())


def test_branches_keep_track_and_refuse_clearly(tiny_tokenizer):
    params = SamplingParams(temperature=0.8, seed=3, max_tokens=20)
    b = Branches([1, 2], params, [Branch([10, 11, 12, 13], stop="max_tokens")])
    assert b.branch_prompt(2, 50, 100) == [1, 2, 10, 11, 50]
    assert b.settings(3).max_tokens == 17 and b.settings(3).seed == 3
    for at, token, key in ((4, 50, "ui.branch_no_token"), (-1, 50, "ui.branch_no_token"),
                           (2, 12, "ui.branch_same"), (2, 100, "ui.branch_bad_choice")):
        with pytest.raises(InputError) as caught:
            b.branch_prompt(at, token, 100)
        assert caught.value.key == key
    b.add(2, [50, 51], "assistant_end")  # branch 2 from token 2 of branch 1
    assert b.current == 1 and b.shown.tokens == [10, 11, 50, 51] and b.shown.at == 2
    b.add(1, [60], "max_tokens")  # branch 3 from token 1 of branch 2
    assert b.shown.tokens == [10, 60] and b.shown.parent == 1
    b.select(1)
    b.drop()  # branch 2 goes: branch 3 now departs from branch 1 at token 1, which it shares with it
    assert b.current == 0 and len(b.branches) == 2 and (b.branches[1].parent, b.branches[1].at) == (0, 1)
    with pytest.raises(InputError) as caught:
        b.drop()
    assert caught.value.key == "ui.branch_drop_first"


def test_branch_cards_escape_what_the_model_wrote(tiny_tokenizer):
    evil = tiny_tokenizer.encode("<script>alert(1)</script> & <b>")
    b = Branches(bos(tiny_tokenizer, "Hi"), SamplingParams(seed=1), [Branch(evil)])
    b.add(1, evil[1:2] + evil[:1], None)
    shown = b.html(tiny_tokenizer, "zh")
    assert "<script>" not in shown and "<b>" not in shown and "&lt;script&gt;" in shown
    assert shown.count("<mark>") == 1 and shown.count('class="branch-card"') == 2


def test_a_branch_link_names_the_way_to_it():
    b = Branches([1], SamplingParams(seed=42), [Branch([10, 11, 12, 13])], message="a|b 你好")
    b.add(2, [50, 51], None)
    b.add(1, [60], None)
    assert b.path() == [(2, 50), (1, 60)]
    assert parse_link(b.link()) == (42, [(2, 50), (1, 60)], "a|b 你好")  # a '|' in the message survives
    b.select(0)
    assert parse_link(b.link()) == (42, [], "a|b 你好")
    b.message = ""  # a chat of several messages: no link
    assert b.link() == ""
    for bad in ("", "x|1:2|hi", "5|1:2:3|hi", "5|1:2|", "5|1-2|hi", "-1||hi"):
        with pytest.raises(InputError) as caught:
            parse_link(bad)
        assert caught.value.key == "ui.bad_branch_link"
