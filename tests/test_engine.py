"""gpt/engine.py and gpt/sampling.py against independent computations: the naive generate loop, one full forward,
numpy top-k/top-p, the softmax distribution, and each row run on its own."""
import numpy as np
import pytest
import torch

from gpt.engine import Engine, SamplingParams
from gpt.sampling import candidate_width, filter_logits, gumbel_noise, sample

GREEDY = SamplingParams(temperature=0.0, top_k=None, max_tokens=50)


def prompt(tok, text="The teacher opened the notebook"):
    return [tok.bos_token_id] + tok.encode(text)


def shift_logits(monkeypatch, model, fn):
    """Wrap model.forward: logits = fn(logits, call_index). Lets a test force or forbid a token."""
    forward, calls = model.forward, [0]

    def wrapped(*args, **kwargs):
        out = fn(forward(*args, **kwargs).clone(), calls[0])
        calls[0] += 1
        return out

    monkeypatch.setattr(model, "forward", wrapped)


def forbid(tokens):
    def fn(logits, _):
        logits[..., list(tokens)] = -1e4
        return logits
    return fn


def run(engine, ids, params, should_stop=None):
    events = list(engine.stream(ids, params, should_stop))
    assert all(not e.done for e in events[:-1]) and events[-1].done and events[-1].token is None
    return [e.token for e in events[:-1]], events


# ---- engine vs the naive loop and the full forward ---------------------------------------------------------------

def test_greedy_equals_naive_generate_for_50_tokens(tiny_model, tiny_tokenizer, monkeypatch):
    engine = Engine(tiny_model, tiny_tokenizer)
    shift_logits(monkeypatch, tiny_model, forbid(engine.stop_ids))  # both loops see the same (shifted) logits
    ids = prompt(tiny_tokenizer, "The teacher")
    assert len(ids) + 50 <= tiny_model.config.sequence_len
    tokens, events = run(engine, ids, GREEDY)
    naive = list(tiny_model.generate(ids, 50, temperature=0.0))
    assert len(tokens) == 50 and events[-1].stop_reason == "max_tokens"
    assert tokens == naive
    assert len(set(tokens)) > 3  # a non-degenerate sequence, or the comparison would prove little


def test_cached_logits_equal_full_forward(tiny_model, tiny_tokenizer, monkeypatch):
    seen = []
    forward = tiny_model.forward

    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen.append(out[0, -1].clone())
        return out

    monkeypatch.setattr(tiny_model, "forward", recording)
    ids = prompt(tiny_tokenizer)
    tokens, _ = run(Engine(tiny_model, tiny_tokenizer), ids, SamplingParams(temperature=1.0, seed=3, max_tokens=20))
    monkeypatch.undo()
    full = tiny_model(torch.tensor([ids + tokens]))[0]  # one forward over everything, no cache
    # the engine's i-th forward predicts the token at position len(ids) + i
    expected = full[len(ids) - 1: len(ids) - 1 + len(seen)]
    torch.testing.assert_close(torch.stack(seen), expected, rtol=1e-5, atol=1e-5)
    assert len(seen) == len(tokens) == 20


def test_stream_text_is_the_decoded_reply(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer)
    tokens, events = run(engine, prompt(tiny_tokenizer), SamplingParams(temperature=1.5, top_k=None, seed=1,
                                                                         max_tokens=40))
    assert "".join(e.text for e in events) == tiny_tokenizer.decode(tokens)


# ---- seeds ----------------------------------------------------------------------------------------------------------

def test_same_seed_same_sample_different_seed_different(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer)
    ids = prompt(tiny_tokenizer)
    p = dict(temperature=1.0, top_k=None, max_tokens=30)
    a, _ = run(engine, ids, SamplingParams(seed=7, **p))
    b, _ = run(engine, ids, SamplingParams(seed=7, **p))
    c, _ = run(engine, ids, SamplingParams(seed=8, **p))
    assert a == b
    assert a != c


def test_seed_none_is_picked_reported_and_reproducible(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer)
    ids = prompt(tiny_tokenizer)
    a, events = run(engine, ids, SamplingParams(temperature=1.0, seed=None, max_tokens=20))
    seed = events[0].seed
    assert all(e.seed == seed for e in events)
    b, _ = run(engine, ids, SamplingParams(temperature=1.0, seed=seed, max_tokens=20))
    assert a == b


def test_temperature_zero_ignores_seed_and_top_k_top_p(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer)
    ids = prompt(tiny_tokenizer)
    a, _ = run(engine, ids, SamplingParams(temperature=0.0, top_k=None, seed=1, max_tokens=15))
    b, _ = run(engine, ids, SamplingParams(temperature=0.0, top_k=5, top_p=0.5, seed=2, max_tokens=15))
    assert a == b


def test_top_k_zero_and_none_are_both_off(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer)
    ids = prompt(tiny_tokenizer)
    p = dict(temperature=2.0, seed=5, max_tokens=30)
    a, _ = run(engine, ids, SamplingParams(top_k=None, **p))
    b, _ = run(engine, ids, SamplingParams(top_k=0, **p))
    c, _ = run(engine, ids, SamplingParams(top_k=tiny_tokenizer.vocab_size, **p))  # keeping everything = off
    assert a == b == c


# ---- stop reasons and the context guard ------------------------------------------------------------------------------

def test_stop_on_assistant_end_and_bos(tiny_model, tiny_tokenizer, monkeypatch):
    engine = Engine(tiny_model, tiny_tokenizer)
    ids = prompt(tiny_tokenizer)
    free, _ = run(engine, ids, SamplingParams(temperature=0.0, max_tokens=10))
    for name in ("<|assistant_end|>", "<|bos|>"):
        stop = tiny_tokenizer.special_id(name)

        def force_at_step_3(logits, call, stop=stop):
            if call == 3:
                logits[..., stop] = 1e4
            return logits

        shift_logits(monkeypatch, tiny_model, force_at_step_3)
        tokens, events = run(engine, ids, SamplingParams(temperature=0.0, max_tokens=10))
        monkeypatch.undo()
        assert tokens == free[:3]  # the stop token itself is not emitted
        assert events[-1].stop_reason == "assistant_end"


def test_max_tokens_and_should_stop(tiny_model, tiny_tokenizer, monkeypatch):
    engine = Engine(tiny_model, tiny_tokenizer)
    shift_logits(monkeypatch, tiny_model, forbid(engine.stop_ids))
    ids = prompt(tiny_tokenizer)
    tokens, events = run(engine, ids, SamplingParams(temperature=1.0, seed=0, max_tokens=7))
    assert len(tokens) == 7 and events[-1].stop_reason == "max_tokens"
    tokens, events = run(engine, ids, SamplingParams(max_tokens=0))
    assert tokens == [] and events[-1].stop_reason == "max_tokens"
    asked = []
    tokens, events = run(engine, ids, SamplingParams(seed=0, max_tokens=20),
                         should_stop=lambda: asked.append(1) or len(asked) > 4)
    assert len(tokens) == 4 and events[-1].stop_reason == "stopped"


def test_context_guard(tiny_model, tiny_tokenizer, monkeypatch):
    engine = Engine(tiny_model, tiny_tokenizer)
    shift_logits(monkeypatch, tiny_model, forbid(engine.stop_ids))
    limit = tiny_model.config.sequence_len
    ids = (prompt(tiny_tokenizer) * limit)[: limit - 5]
    tokens, events = run(engine, ids, SamplingParams(seed=0, max_tokens=100))
    assert len(tokens) == 5 and events[-1].stop_reason == "context_full"
    tokens, events = run(engine, ids + [1] * 5, SamplingParams(max_tokens=100))  # exactly full: nothing fits
    assert tokens == [] and events[-1].stop_reason == "context_full"
    with pytest.raises(ValueError, match="more than the model's context"):
        list(engine.stream(ids + [1] * 6, SamplingParams()))
    with pytest.raises(ValueError, match="empty"):
        list(engine.stream([], SamplingParams()))
    with pytest.raises(ValueError, match="top_p"):
        list(engine.stream(ids, SamplingParams(top_p=0.0)))


# ---- batches ------------------------------------------------------------------------------------------------------

def test_batch_rows_are_independent(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer)
    prompts = [prompt(tiny_tokenizer, t) for t in ("The teacher", "Attention lets each position look", "老师")]
    params = [SamplingParams(temperature=0.0, max_tokens=12), SamplingParams(temperature=1.0, seed=4, max_tokens=9),
              SamplingParams(temperature=0.7, top_k=20, top_p=0.9, seed=5, max_tokens=15)]
    batch = engine.generate_batch(prompts, params)
    alone = [run(engine, p, sp)[0] for p, sp in zip(prompts, params)]
    assert batch == alone
    assert batch[0] != batch[1]


# ---- sampling against numpy and the softmax distribution ---------------------------------------------------------

def _np_keep(logits, temperature, top_k, top_p):
    """Independent reference: the kept token set as a python set, float64 numpy."""
    z = logits.astype(np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    if top_k:
        order = order[:top_k]
    p = np.exp(z[order] - z[order].max())
    p /= p.sum()
    kept, mass = [], 0.0
    for tok, q in zip(order, p):  # smallest prefix with mass >= top_p
        kept.append(int(tok))
        mass += q
        if mass >= top_p:
            break
    return set(kept)


@pytest.mark.parametrize("top_k,top_p", [(0, 0.3), (0, 0.9), (10, 0.5), (5, 1.0), (0, 1.0), (64, 0.75)])
def test_filter_keeps_smallest_set_with_mass_p(top_k, top_p):
    g = torch.Generator().manual_seed(top_k * 100 + int(top_p * 100))
    B, V = 6, 64
    logits = torch.randn(B, V, generator=g) * 3
    temps = torch.tensor([0.5, 1.0, 1.5, 0.8, 2.0, 1.2])
    k = torch.full((B,), top_k)
    p = torch.full((B,), top_p)
    for width in (None, candidate_width([SamplingParams(temperature=1.0, top_k=top_k)])):
        scaled, ids = filter_logits(logits, temps, k, p, width)
        for b in range(B):
            ours = set(ids[b][torch.isfinite(scaled[b])].tolist())
            assert ours == _np_keep(logits[b].numpy(), temps[b].item(), top_k, top_p), (b, width)


def test_sampling_follows_softmax_distribution():
    """Gumbel-max over many counters must reproduce softmax(logits / T) restricted to the top-k."""
    V, N = 6, 40000
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0]).repeat(N, 1)
    T = 0.9
    tokens = sample(logits, torch.full((N,), T), torch.full((N,), 4), torch.ones(N),
                    seed=torch.full((N,), 123), counter=torch.arange(N))
    freq = np.bincount(tokens.numpy(), minlength=V) / N
    z = np.array([2.0, 1.0, 0.5, 0.0, -1.0, 3.0]) / T
    keep = np.argsort(-z)[:4]
    expected = np.zeros(V)
    expected[keep] = np.exp(z[keep]) / np.exp(z[keep]).sum()
    assert np.abs(freq - expected).max() < 0.01  # 4 sigma for N = 40000 is about 0.01
    assert freq[3] == 0 and freq[4] == 0


def test_temperature_zero_is_argmax_and_rows_have_own_settings():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 100, generator=g)
    out = sample(logits, torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([0, 3, 0, 1]), torch.ones(4),
                 seed=torch.arange(4), counter=torch.zeros(4, dtype=torch.long))
    top = logits.argmax(-1)
    assert out[0] == top[0] and out[1] == top[1] and out[3] == top[3]  # top_k = 1 is greedy too
    # row 2 (temperature 1, top-k off) samples: the Gumbel-max rule written out over the whole vocab, in token-id
    # order (sample() sorts the candidates first; the noise belongs to the token id, not to its rank)
    noise = gumbel_noise(torch.tensor([2]), torch.tensor([0]), torch.arange(100)[None])[0]
    assert out[2] == (logits[2] / 1.0 + noise).argmax()
    # over many counters the same batch keeps its rows apart: rows 0, 1, 3 stay argmax, row 2 follows softmax(logits)
    N = 20000
    big = sample(logits.repeat(N, 1), torch.tensor([0.0, 0.0, 1.0, 1.0]).repeat(N),
                 torch.tensor([0, 3, 0, 1]).repeat(N), torch.ones(4 * N),
                 seed=torch.arange(4).repeat(N), counter=torch.arange(N).repeat_interleave(4)).view(N, 4)
    for b in (0, 1, 3):
        assert (big[:, b] == top[b]).all()
    freq = np.bincount(big[:, 2].numpy(), minlength=100) / N
    z = logits[2].double().numpy()
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    sigma = np.sqrt(expected * (1 - expected) / N)
    assert (np.abs(freq - expected) < 5 * sigma + 1e-4).all()  # 5 sigma per token; argmax-only would be off by ~1
    assert (freq > 0).sum() > 50  # many distinct tokens are drawn, not a few


def test_gumbel_noise_is_a_function_of_seed_counter_and_id():
    ids = torch.arange(1000)[None].repeat(2, 1)
    a = gumbel_noise(torch.tensor([1, 1]), torch.tensor([5, 5]), ids)
    b = gumbel_noise(torch.tensor([1, 2]), torch.tensor([5, 5]), ids.flip(-1))
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], b[0].flip(-1))
    assert not torch.equal(a[0], b[1])
    # standard Gumbel: mean = Euler-Mascheroni constant, variance = pi^2 / 6
    big = gumbel_noise(torch.tensor([9]), torch.tensor([0]), torch.arange(200000)[None])[0].double()
    assert abs(big.mean().item() - 0.5772) < 0.01 and abs(big.var().item() - np.pi ** 2 / 6) < 0.03


def test_seeded_replies_do_not_depend_on_who_else_is_decoding():
    """The app on a CPU (float32, the batched server): 16 seeded replies decoded alone are the same tokens as each
    decoded together with 8 other chats. (bfloat16 on a CPU breaks this: its products round differently with the
    number of rows; that is why gpt.checkpoint.default_dtype serves float32 there.)"""
    from gpt.checkpoint import default_dtype, load_default

    loaded = load_default(device="cpu")
    assert loaded.dtype == default_dtype(torch.device("cpu")) == torch.float32
    tok = loaded.tokenizer
    engine = Engine(loaded.model, tok, batched=True, max_batch=9)
    chat = lambda text: tok.render_for_completion([{"role": "user", "content": text}])  # noqa: E731
    prompts = [chat(f"Tell me about topic number {i}, please.") for i in range(16)]
    params = [SamplingParams(temperature=0.9, top_k=50, seed=100 + i, max_tokens=24) for i in range(16)]
    others = [chat("other " * (j + 1)) for j in range(8)]
    other_params = [SamplingParams(temperature=1.0, top_k=None, seed=j, max_tokens=24) for j in range(8)]
    alone = [engine.generate_batch([p], [sp])[0] for p, sp in zip(prompts, params)]
    together = [engine.generate_batch([p, *others], [sp, *other_params])[0] for p, sp in zip(prompts, params)]
    assert together == alone
    assert len({tuple(r) for r in alone}) > 8  # 16 different seeds and prompts: not one reply repeated
