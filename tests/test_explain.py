"""explain/: every number a view shows is checked against an independent computation (float64 numpy, the model's
own forward, GPT.generate), for MHA, GQA and multi-query configs."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from explain.attention import attention_weights
from explain.causality import causality_view
from explain.generate import generate_steps, generate_time_view, generate_view, generation_flops
from explain.kvcache import default_steps, incremental_logits, kv_cache_view
from explain.lens import lens_logits, logit_lens_view
from explain.mask import mask_view
from explain.nexttoken import next_token_stats, next_token_view
from explain.rotary import rotary_view
from explain.shapes import TUTORIAL_CONFIG, shape_table
from explain.softcap import softcap_view
from explain.trace import trace_forward
from explain.training import per_position_ce, training_view
from gpt.kv_cache import KVCache
from gpt.nanochat import TUTORIAL, GPTConfig, new_model
from gpt.recorder import Recorder

SOFTCAP = 15.0  # logits = 15·tanh(raw / 15): nanochat 4a87a0d (the tutorial's forward, the tiny models here)

V = 300
CONFIGS = {  # (n_head, n_kv_head): MHA, GQA, multi-query
    "mha": dict(n_head=4, n_kv_head=4),
    "gqa": dict(n_head=4, n_kv_head=2),
    "mqa": dict(n_head=2, n_kv_head=1, n_layer=3),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def trace(request):
    model = make_tiny_model(V, seed=3, **CONFIGS[request.param])
    ids = torch.randint(0, V, (2, 13), generator=torch.Generator().manual_seed(7))
    return trace_forward(model, ids)


def log_softmax64(logits: torch.Tensor) -> np.ndarray:
    x = logits.double().numpy()
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_attention_weights_reproduce_recorded_output(trace):
    H, Hkv = trace.config.n_head, trace.config.n_kv_head
    for layer in range(trace.config.n_layer):
        w = attention_weights(trace, layer).double()
        v = trace.rec[f"blocks.{layer}.attn.v"].double()
        v = v[:, [h * Hkv // H for h in range(H)]]  # query head h reads kv head h // (H / Hkv)
        torch.testing.assert_close(w @ v, trace.rec[f"blocks.{layer}.attn.y"].double(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
        future = torch.ones(trace.T, trace.T).triu(1).bool()
        assert (w[..., future] == 0).all()


def test_next_token_stats_against_numpy(trace):
    s = next_token_stats(trace, row=1, k=7)
    logp = log_softmax64(trace.logits[1])
    p = np.exp(logp)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(s["entropy"], -(p * logp).sum(-1), rtol=1e-4)
    np.testing.assert_array_equal(s["top_ids"][:, 0], p.argmax(-1))
    np.testing.assert_allclose(s["top_p"], np.sort(p, -1)[:, ::-1][:, :7], atol=1e-6)
    nxt = trace.idx[1, 1:].numpy()
    np.testing.assert_allclose(s["p_next"], p[np.arange(trace.T - 1), nxt], atol=1e-6)
    ranks = [(p[i] > p[i, t]).sum() + 1 for i, t in enumerate(nxt)]
    np.testing.assert_array_equal(s["rank_next"], ranks)


def test_training_loss_is_mean_of_per_position_ce(trace):
    targets = torch.cat([trace.idx[:, 1:], torch.full((trace.B, 1), -1)], dim=1)
    with torch.no_grad():
        loss = trace.model(trace.idx, targets=targets).item()
    view = training_view(trace)
    assert view.df["ce"].count() == trace.B * (trace.T - 1)
    assert view.df["ce"].mean() == pytest.approx(loss, rel=1e-5)
    logp = np.stack([log_softmax64(trace.logits[b]) for b in range(trace.B)])
    ce = -np.take_along_axis(logp[:, :-1], trace.idx[:, 1:, None].numpy(), -1)[..., 0]
    np.testing.assert_allclose(per_position_ce(trace).numpy(), ce, rtol=1e-5)


def test_causality_no_leak_before_j(trace):
    j = 6
    view = causality_view(trace, j=j, row=1)
    d = view.df
    assert (d.loc[d["position"] < j, "max_abs_change"] == 0).all()  # exactly zero, not merely small
    at_j = d[(d["position"] == j) & (d["stage"] == "logits")]["max_abs_change"].item()
    assert at_j > 1e-3
    # Independently: the model's logits on the modified input.
    idx = trace.idx[1:2].clone()
    idx[0, j] = (idx[0, j] + 1) % V
    with torch.no_grad():
        logits, before = trace.model(idx)[0], trace.model(trace.idx[1:2])[0]
    assert torch.equal(logits[:j], before[:j])
    expected = (logits - before).abs().amax(-1).numpy()
    got = d[d["stage"] == "logits"].sort_values("position")["max_abs_change"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_logit_lens_last_layer_is_the_model_output(trace):
    L = trace.config.n_layer
    for row in range(trace.B):
        torch.testing.assert_close(lens_logits(trace, L, row), trace.logits[row], atol=1e-5, rtol=1e-5)
    df = logit_lens_view(trace, row=1).df
    last = df[df["layer"] == f"block {L - 1}"].sort_values("position")
    np.testing.assert_array_equal(last["top_token_id"], trace.logits[1].argmax(-1).numpy())
    first = df[df["layer"] == "embed"].sort_values("position")
    # The lens at the embedding, independently: norm -> lm_head -> softcap, in float64.
    x = trace.rec["embed_norm"][1].double()
    x = x / x.pow(2).mean(-1, keepdim=True).add(torch.finfo(torch.float32).eps).sqrt()
    ref = SOFTCAP * torch.tanh(x @ trace.model.lm_head.weight.double().T / SOFTCAP)
    np.testing.assert_array_equal(first["top_token_id"], ref.argmax(-1).numpy())


@pytest.mark.parametrize("steps", [None, [13], [1] * 13, [5, 4, 1, 2, 1]])
def test_kv_cache_incremental_equals_full(trace, steps):
    steps = steps or default_steps(trace.T)
    logits, log = incremental_logits(trace.model, trace.idx, steps)
    with torch.no_grad():
        full = trace.model(trace.idx)
    torch.testing.assert_close(logits, full, atol=1e-4, rtol=1e-4)
    assert [r["T0"] for r in log] == list(np.cumsum([0] + steps[:-1]))
    view = kv_cache_view(trace, steps)
    assert view.df["max_abs_diff_vs_full"].max() < 1e-4


def test_default_kv_steps_cover_all_three_regimes(trace):
    _, log = incremental_logits(trace.model, trace.idx, default_steps(trace.T))
    assert [r["regime"] for r in log] == ["prefill", "chunk", "one_query", "one_query"]


@pytest.mark.parametrize("temperature,top_k,seed", [(1.0, 5, 0), (0.7, None, 123), (0.0, 3, 42), (1.5, 1, 9)])
def test_generate_steps_match_model_generate(trace, temperature, top_k, seed):
    prompt = trace.ids(0)[:5]
    expected = list(trace.model.generate(prompt, 6, temperature=temperature, top_k=top_k, seed=seed))
    steps = generate_steps(trace.model, prompt, 6, temperature, top_k, seed)
    assert [s["token"] for s in steps] == expected
    for s in steps:
        assert s["top_p"].sum() <= 1 + 1e-5
        if top_k:
            assert s["candidates"] >= min(top_k, V) and len([p for p in s["top_p"] if p > 0]) <= max(top_k, 1) + 1


def greedy_by_hand(model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding written out: a full forward of the whole sequence per token, argmax of the last position."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_generate_view_and_greedy_cached_equals_naive(trace):
    prompt = trace.ids(1)[:4]
    expected = greedy_by_hand(trace.model, prompt, 7)
    assert list(trace.model.generate(prompt, 7, temperature=0, use_cache=True)) == expected
    assert list(trace.model.generate(prompt, 7, temperature=0)) == expected
    view = generate_view(trace.model, prompt, max_tokens=3, temperature=0.9, top_k=20, seed=5)
    chosen = view.df.groupby("step")["chosen_id"].first()
    assert list(chosen) == list(trace.model.generate(prompt, 3, temperature=0.9, top_k=20, seed=5))
    steps = generate_steps(trace.model, prompt, 3, 0.9, 20, 5)
    assert [s["token"] for s in steps] == list(chosen)
    # each step's rank and probability, from the full next-token distribution of the same prefix after top-k and
    # temperature, computed here
    ids = prompt + [s["token"] for s in steps]
    for k, s in enumerate(steps):
        logits = trace.model(torch.tensor([ids[:len(prompt) + k]]))[0, -1].detach()
        assert s["rank"] == 1 + int((logits > logits[s["token"]]).sum())
        kept = logits.masked_fill(logits < logits.topk(20).values[-1], float("-inf"))
        assert s["p_token"] == pytest.approx(float((kept / 0.9).softmax(-1)[s["token"]]), rel=1e-5)


def test_flop_counts():
    cfg = GPTConfig(sequence_len=64, vocab_size=V, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
    model = new_model(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert model.flops_per_token(1) == 2 * linear + 4 * cfg.n_layer * cfg.n_embd
    # one token over `context` keys: every layer reads each key twice (q·k, then the weighted v), 2 FLOPs per C
    assert model.flops_per_token(9) == 2 * linear + 4 * cfg.n_layer * cfg.n_embd * 9
    P = 10
    for n in (1, 2, 7):
        naive, cached = generation_flops(model, P, n)
        assert naive == sum(model.forward_flops(P + s) for s in range(n))
        assert cached == model.forward_flops(P + n - 1)  # a cache processes each token exactly once
    big = new_model(GPTConfig(sequence_len=4096, vocab_size=V, n_layer=2, n_head=4, n_kv_head=2, n_embd=32))
    n1, n2 = generation_flops(big, 1, 1000)[0], generation_flops(big, 1, 2000)[0]
    assert n2 / n1 > 3.5  # quadratic in n: doubling n multiplies the naive cost by about 4


def test_generate_time_view_runs_both_loops(trace):
    view = generate_time_view(trace.model, trace.ids(0)[:3], lengths=(1, 3))
    assert list(view.df["n_new"]) == [1, 3]
    # both loops gave the greedy tokens of a hand-written loop, and the view says so
    for n in (1, 3):
        expected = greedy_by_hand(trace.model, trace.ids(0)[:3], n)
        assert list(trace.model.generate(trace.ids(0)[:3], n, temperature=0, use_cache=True)) == expected
    assert view.df["same_tokens"].tolist() == [True, True]


def test_shape_table_matches_a_real_forward():
    model = make_tiny_model(V, seed=1, n_head=4, n_kv_head=2)
    rec = Recorder()
    model(torch.zeros(3, 7, dtype=torch.long), recorder=rec)
    df = shape_table(model.config, model.member, B=3, T=7).set_index("name")
    for name, x in rec.items():
        key = name.replace("blocks.1.", "blocks.0.")
        if key in df.index:
            assert df.loc[key, "concrete"] == "[" + ", ".join(map(str, x.shape)) + "]", name
    assert df.loc["attention weights", "concrete"] == "[3, 4, 7, 7]"


def test_shape_table_tutorial_examples():
    inf = shape_table(TUTORIAL_CONFIG, TUTORIAL, B=2, T=5).set_index("name")
    assert inf.loc["return logits", "concrete"] == "[2, 5, 50304]"
    assert inf.loc["embed", "concrete"] == "[2, 5, 128]"
    assert inf.loc["lm_head.weight", "concrete"] == "[50304, 128]"
    train = shape_table(TUTORIAL_CONFIG, TUTORIAL, B=2, T=128).set_index("name")
    assert train.loc["loss", "concrete"] == "[]" and train.loc["targets", "concrete"] == "[2, 128]"
    kv = shape_table(TUTORIAL_CONFIG, TUTORIAL, B=1, T=1, T0=3).set_index("name")
    assert kv.loc["blocks.0.attn.q", "concrete"] == "[1, 4, 1, 32]"
    assert kv.loc["blocks.0.attn.k", "concrete"] == "[1, 4, 4, 32]"  # 3 cached + 1 new keys
    assert kv.loc["rotary.cos", "concrete"] == "[1, 1, 1, 16]" and kv.loc["rotary.cos", "dtype"] == "bfloat16"


def test_rotary_view_slice_is_what_forward_used():
    model = make_tiny_model(V, seed=2)
    view = rotary_view(model, T=2, T0=3)
    inside = view.df[view.df["in_slice"]]
    assert sorted(inside["position"].unique()) == [3, 4]
    # The recorded slice of a cached forward at T0 = 3:
    cache, rec = KVCache.for_model(model, 1, 5), Recorder()
    model(torch.tensor([[1, 2, 3]]), kv_cache=cache)
    model(torch.tensor([[4, 5]]), kv_cache=cache, recorder=rec)
    cos = rec["rotary.cos"][0, :, 0].float().numpy()
    got = inside.pivot(index="position", columns="pair", values="cos").to_numpy()
    np.testing.assert_allclose(got, cos, atol=1e-4)


def test_mask_regimes():
    df = mask_view([f"t{i}" for i in range(6)], chunk=2).df
    for regime, sub in df.groupby("regime"):
        assert (sub["allowed"] == (sub["key_pos"] <= sub["query_pos"])).all(), regime
    assert df[df["regime"] == "one_query"]["allowed"].all()
    assert set(df[df["regime"] == "chunk"]["query_pos"]) == {4, 5}


def test_softcap_view_values(trace):
    view = softcap_view(trace, position=4, row=0)
    df = view.df
    np.testing.assert_allclose(df["capped_logit"], SOFTCAP * np.tanh(df["raw_logit"].astype(np.float64) / SOFTCAP),
                               atol=2e-4)
    p = np.exp(log_softmax64(trace.logits[0, 4]))
    np.testing.assert_allclose(df["p_with_cap"], p[df["token_id"]], atol=1e-6)
    scatter = view.fig.data[2]  # the recorded (raw, capped) points lie on the curve
    np.testing.assert_allclose(scatter.y, SOFTCAP * np.tanh(np.asarray(scatter.x, np.float64) / SOFTCAP), atol=2e-3)


def test_long_prompt_views_are_windowed():
    model = make_tiny_model(V, seed=4, sequence_len=200)
    tr = trace_forward(model, torch.randint(0, V, (200,), generator=torch.Generator().manual_seed(0)).tolist())
    from explain.attention import attention_view
    att = attention_view(tr, layer=1, head=2, window_size=48)
    assert att.fig.data[0].z.shape == (48, 49)  # 48 queries x (1 summed column + 48 keys)
    np.testing.assert_allclose(np.nansum(att.fig.data[0].z, axis=1), 1.0, atol=2e-3)  # sums survive the window
    assert "152" in att.title and "199" in att.title
    nt = next_token_view(tr, window_size=32)
    assert nt.fig.data[0].z.shape[0] == 32 and len(nt.fig.data[2].y) == 200  # entropy for every position
    assert logit_lens_view(tr, window_size=32).df["position"].nunique() == 32
