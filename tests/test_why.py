"""Issue 22's "why did it say that?": attribution, patching and saliency, each against a computation written out here
(forward hooks on the model's modules, a float64 forward of nanochat's definitions, closed forms of the lambdas and
the backout), on a test model of every nanochat version and on the shipped default model."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from explain.attribution import attribution_view, logit_attribution
from explain.patching import NothingToRestore, patching_sweep, patching_view, sweep_flops
from explain.resume import SameTokens
from explain.saliency import saliency, saliency_flops, saliency_table, saliency_view
from explain.trace import trace_forward
from gpt import nanochat
from rules.inputs import WHY_FLOPS, InputError, check_why, corrupt_ids, parse_token, why_tokens
from test_family import SMALL, family_model, forward64
from test_text import fake_language, fake_only  # noqa: F401 - a fixture, used below
from text import t

BOTH = [nanochat.TUTORIAL, nanochat.TODAY]  # the Nov-2025 architecture and today's


@pytest.fixture(scope="module")
def default():
    from gpt.checkpoint import load_default

    return load_default("cpu", torch.float32)


def prompt(n: int, seed: int = 3, vocab: int = 100) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


# ---- attribution ---------------------------------------------------------------------------------------------------
def _rms(x: torch.Tensor) -> torch.Tensor:
    return x / x.pow(2).mean(-1, keepdim=True).add(torch.finfo(torch.float32).eps).sqrt()


def hooked(model: nanochat.GPT, ids: list[int]) -> dict[str, torch.Tensor]:
    """One forward's parts caught by forward hooks on the model's modules (not its recorder): the token embedding,
    each attention's input to c_proj and its output, each MLP's output, what lm_head reads and writes."""
    got, hooks = {}, []

    def keep(name, use_input=False):
        def hook(module, inputs, output):
            got[name] = (inputs[0] if use_input else output).detach().double()[0]
        return hook

    hooks.append(model.transformer.wte.register_forward_hook(keep("wte")))
    for i, block in enumerate(model.transformer.h):
        hooks.append(block.attn.c_proj.register_forward_hook(keep(f"y{i}", use_input=True)))
        hooks.append(block.attn.register_forward_hook(keep(f"attn{i}")))
        hooks.append(block.mlp.register_forward_hook(keep(f"mlp{i}")))
    hooks.append(model.lm_head.register_forward_hook(keep("raw")))
    hooks.append(model.lm_head.register_forward_hook(keep("normed", use_input=True)))
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        for h in hooks:
            h.remove()
    return got


def weights_written_out(model: nanochat.GPT) -> tuple[float, list[float]]:
    """The factor by which x0 and each block's output reach the residual the final norm reads, in closed form:
    block i's output is multiplied by λr[j] of every later block j; x0 enters block 0 as (λr[0] + λ0[0])·x0 and
    again as λ0[i]·x0 before block i; the backout subtracts λb times the same sums taken up to block L // 2."""
    L, f = model.config.n_layer, model.features
    lr = model.resid_lambdas.detach().double().tolist() if f.lambdas else [1.0] * L
    l0 = model.x0_lambdas.detach().double().tolist() if f.lambdas else [0.0] * L

    def upto(last: int) -> tuple[float, list[float]]:
        later = lambda i: math.prod(lr[i + 1: last + 1])  # noqa: E731
        return (math.prod(lr[: last + 1]) + sum(l0[i] * later(i) for i in range(last + 1)),
                [later(i) if i <= last else 0.0 for i in range(L)])

    x0, blocks = upto(L - 1)
    if f.backout:
        lam = float(model.backout_lambda.detach().double())
        kept_x0, kept_blocks = upto(L // 2)
        x0, blocks = x0 - lam * kept_x0, [b - lam * k for b, k in zip(blocks, kept_blocks)]
    return x0, blocks


@torch.no_grad()
def expected_rows(model: nanochat.GPT, ids: list[int], p: int, target: int) -> tuple[dict[str, float], float]:
    """Each row's contribution, from the hooked parts and the closed-form weights, and the real pre-softcap logit."""
    got = hooked(model, ids)
    f, L, H = model.features, model.config.n_layer, model.config.n_head
    hd = model.config.n_embd // H
    e = _rms(got["wte"])
    smear = torch.zeros_like(e)
    if f.smear:  # x[t] += smear_lambda · σ(smear_gate(x[t, :24])) · x[t-1], written out
        gate = float(model.smear_lambda.double()) * torch.sigmoid(e[:, :24] @ model.smear_gate.weight.double().T)
        smear[1:] = gate[1:] * e[:-1]
    w0, wb = weights_written_out(model)
    final = w0 * (e + smear) + sum(wb[i] * (got[f"attn{i}"] + got[f"mlp{i}"]) for i in range(L))
    scale = float(got["normed"][p] @ final[p] / (final[p] @ final[p]))
    u = model.lm_head.weight[target].double() * scale
    rows = {"embed": float(u @ e[p]) * w0}
    if f.smear:
        rows["smear"] = float(u @ smear[p]) * w0
    for i in range(L):
        proj = model.transformer.h[i].attn.c_proj.weight.double()
        rows[f"L{i} attn"] = float(u @ got[f"attn{i}"][p]) * wb[i]
        for h in range(H):
            rows[f"L{i} H{h}"] = float(u @ proj[:, h * hd:(h + 1) * hd] @ got[f"y{i}"][p, h * hd:(h + 1) * hd]) * wb[i]
        rows[f"L{i} mlp"] = float(u @ got[f"mlp{i}"][p]) * wb[i]
    return rows, float(got["raw"][p, target])


@pytest.mark.parametrize("which", nanochat.MEMBERS, ids=lambda m: m.name)
def test_attribution_rows_add_up_to_the_real_logit_in_every_member(which):
    model = family_model(which).float()
    ids = prompt(14)
    df = logit_attribution(model, ids, position=9)
    with torch.no_grad():
        target = int(model(torch.tensor([ids]))[0, 9].argmax())
    rows, logit = expected_rows(model, ids, 9, target)
    shown = dict(zip(df["component"], df["contribution"]))
    assert set(shown) == set(rows)
    for name, value in rows.items():
        assert shown[name] == pytest.approx(value, rel=1e-4, abs=1e-4), name
    body = df[df["kind"] != "head"]
    assert abs(body["contribution"].sum() - logit) < 1e-3  # the sum identity, float32
    heads = df[df["kind"] == "head"].groupby("layer")["contribution"].sum()
    np.testing.assert_allclose(heads.to_numpy(), df[df["kind"] == "attn"]["contribution"].to_numpy(), atol=1e-4)
    assert body["contribution"].abs().min() < body["contribution"].abs().max() / 2  # not all one number


def test_attribution_weights_carry_the_lambdas_and_the_backout():
    model = family_model(nanochat.TODAY).float()
    df = logit_attribution(model, prompt(10))
    x0, blocks = weights_written_out(model)
    assert df.loc[df["kind"] == "embed", "weight"].item() == pytest.approx(x0, rel=1e-6)
    np.testing.assert_allclose(df[df["kind"] == "mlp"]["weight"], blocks, rtol=1e-6)
    assert len(set(np.round(blocks, 6))) == len(blocks)  # every block its own weight: the test means something


def test_attribution_with_a_contrast_and_on_the_default_model(default):
    model, tok = default.model, default.tokenizer
    ids = [tok.bos_token_id] + tok.encode("He is a good man, and she is a good")
    man, girl = tok.encode(" man")[0], tok.encode(" girl")[0]
    df = logit_attribution(model, ids, target=man, contrast=girl)
    got = hooked(model, ids)
    assert abs(df[df["kind"] != "head"]["contribution"].sum() - float(got["raw"][-1, man] - got["raw"][-1, girl])) \
        < 1e-3
    rows, logit = expected_rows(model, ids, len(ids) - 1, man)
    alone = logit_attribution(model, ids, target=man)
    shown = dict(zip(alone["component"], alone["contribution"]))
    assert all(shown[k] == pytest.approx(v, rel=1e-4, abs=1e-4) for k, v in rows.items())
    assert abs(alone[alone["kind"] != "head"]["contribution"].sum() - logit) < 1e-3


def test_attribution_refuses_what_it_cannot_explain():
    model = family_model(nanochat.TUTORIAL).float()
    for bad in (100, -1, 2.5):
        with pytest.raises(ValueError, match="target must be a token id in 0..99"):
            logit_attribution(model, [1, 2, 3], target=bad)
    with pytest.raises(SameTokens):
        logit_attribution(model, [1, 2, 3], target=5, contrast=5)
    with pytest.raises(ValueError, match="empty"):
        logit_attribution(model, [])
    with pytest.raises(ValueError, match="outside the prompt"):
        logit_attribution(model, [1, 2, 3], position=3)


# ---- patching ------------------------------------------------------------------------------------------------------
def reference(model: nanochat.GPT, ids: list[int], patch: tuple | None = None):
    """tests/test_family.py's float64 forward of nanochat's definitions (patched as `forward64` says): the last
    position's softcapped logits, the stream before each block and each block's attention and MLP output."""
    logits, states, outs = forward64(model, ids, patch)
    return logits[-1], states, outs


def reference_sweep(model, clean, corrupt, target, contrast, site) -> np.ndarray:
    """[layers, T] effects of every patch, each a float64 run of the forward written out in tests/test_family.py."""
    metric = lambda logits: float(logits[target] - logits[contrast])  # noqa: E731
    m_clean, clean_states, clean_outs = reference(model, clean)
    m_clean = metric(m_clean)
    m_corrupt = metric(reference(model, corrupt)[0])
    L, T = model.config.n_layer, len(clean)
    effects = np.zeros((L + (site == "resid"), T))
    for layer in range(effects.shape[0]):
        for p in range(T):
            if site == "resid" and layer == 0:
                ids = list(corrupt)
                ids[p] = clean[p]
                m = metric(reference(model, ids)[0])
            elif site == "resid" and layer == L:
                m = m_clean if p == T - 1 else m_corrupt  # the head reads the last position alone
            else:
                m = metric(reference(model, corrupt, (site, layer, p, clean_states if site == "resid"
                                                      else clean_outs))[0])
            effects[layer, p] = (m - m_corrupt) / (m_clean - m_corrupt)
    return effects


def one_token_pair(model, T: int, p: int, seed: int = 5) -> tuple[list[int], list[int], int, int]:
    """A prompt, the same with token p changed, the clean top-1 and the corrupt one (the clean second if equal)."""
    V = model.config.vocab_size
    clean = prompt(T, seed, V)
    corrupt = list(clean)
    corrupt[p] = (clean[p] + 1 + seed) % V
    with torch.no_grad():
        a = model(torch.tensor([clean]))[0, -1].topk(2).indices.tolist()
        b = int(model(torch.tensor([corrupt]))[0, -1].argmax())
    return clean, corrupt, a[0], b if b != a[0] else a[1]


@pytest.mark.parametrize("which", BOTH, ids=lambda m: m.name)
@pytest.mark.parametrize("site", ["resid", "attn", "mlp"])
def test_patching_is_the_float64_reference(which, site):
    model = family_model(which)  # float64: the two computations agree to rounding
    clean, corrupt, target, contrast = one_token_pair(model, 8, 3)
    df = patching_sweep(model, clean, corrupt, target, contrast, site)
    assert list(df.columns[:3]) == ["layer", "position", "effect"]
    ours = df["effect"].to_numpy().reshape(-1, 8)
    theirs = reference_sweep(model, clean, corrupt, target, contrast, site)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)  # (the head casts the logits to float32)
    assert np.abs(theirs).max() > 0.1  # something is restored somewhere


@pytest.mark.parametrize("which", [*BOTH, nanochat.member("aa530cd"), nanochat.member("e85db6b")],
                         ids=lambda m: m.name)
def test_a_one_token_change_is_undone_at_its_token_and_at_the_last_residual(which):
    model = family_model(which).float()
    p, T = 4, 10
    clean, corrupt, target, contrast = one_token_pair(model, T, p)
    z = patching_sweep(model, clean, corrupt, target, contrast, "resid")["effect"].to_numpy().reshape(-1, T)
    expected_first = np.eye(T)[p]  # layer 0: the token itself; back at p, nothing elsewhere
    np.testing.assert_allclose(z[0], expected_first, atol=1e-4)
    np.testing.assert_allclose(z[-1], np.eye(T)[T - 1], atol=1e-4)  # the final residual: only the last position's


@pytest.mark.parametrize("which", [nanochat.member("fbc1484"), nanochat.TODAY], ids=lambda m: m.name)
def test_a_sweep_from_a_recorded_prefix_is_the_whole_run(which, monkeypatch):
    """A batch of patches runs from its first patched position, the positions before it read from the corrupt run's
    recorded keys and values: the same effects as rerunning every position, with sliding windows that bite (fbc1484's
    short window is 8 keys at a context of 16) and with the smear (today's reads the token before the batch). Several
    batches a layer (2 rows each) share the recorded keys (KeyBuffers, the latest start first)."""
    import explain.patching

    model = family_model(which, config=dataclasses.replace(SMALL, sequence_len=16))
    clean, corrupt, target, contrast = one_token_pair(model, 14, 6)
    for site in ("resid", "attn", "mlp"):
        monkeypatch.setattr(explain.patching, "MIN_BATCH_ROWS_TOKENS", 1)  # batches of ceil(14 / 8) = 2 rows
        from_prefix = patching_sweep(model, clean, corrupt, target, contrast, site)["effect"]
        monkeypatch.setattr(explain.patching, "PREFIX_CHUNKS", 1)  # one batch a layer, from position 0
        monkeypatch.setattr(explain.patching, "MIN_BATCH_ROWS_TOKENS", 512)
        whole = patching_sweep(model, clean, corrupt, target, contrast, site)["effect"]
        monkeypatch.undo()
        np.testing.assert_allclose(from_prefix, whole, rtol=1e-6, atol=1e-6)
        assert np.abs(whole).max() > 0.1


def test_a_sweep_batch_stays_within_its_memory_bound_and_a_gpu_takes_the_largest():
    """Rows x tokens of a batch never pass BATCH_TOKENS; a CPU patches a layer in at most PREFIX_CHUNKS batches where
    memory allows it, with at least MIN_BATCH_ROWS_TOKENS rows x tokens each; a GPU in batches as large as memory
    allows (its host issuing kernels is the limit, not the work)."""
    from explain.patching import BATCH_TOKENS, MIN_BATCH_ROWS_TOKENS, PREFIX_CHUNKS, batch_rows

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for T in (1, 7, 32, 100, 256, 1000, 2048, BATCH_TOKENS, 3 * BATCH_TOKENS):
        for device in (cpu, gpu):
            rows = batch_rows(T, device)
            assert rows >= 1 and (rows * T <= BATCH_TOKENS or rows == 1)
        assert batch_rows(T, gpu) == max(1, BATCH_TOKENS // T)
        rows = batch_rows(T, cpu)
        if rows < BATCH_TOKENS // T:  # memory did not cap it
            assert -(-T // rows) <= PREFIX_CHUNKS and (rows * T >= MIN_BATCH_ROWS_TOKENS or rows >= T)
    assert batch_rows(256, cpu) < batch_rows(256, gpu)


def test_key_buffers_take_batches_latest_start_first():
    from explain.resume import KeyBuffers
    from gpt.recorder import Recorder

    rec = Recorder()
    rec["blocks.0.attn.k"] = rec["blocks.0.attn.v"] = torch.arange(8.0).view(1, 1, 8, 1)
    buffers = KeyBuffers(rec, rows=2)
    k, _ = buffers.insert(0, 5, torch.full((2, 1, 3, 1), -1.0), torch.zeros(2, 1, 3, 1))
    assert k[:, 0, :, 0].tolist() == [[0, 1, 2, 3, 4, -1, -1, -1]] * 2  # the recorded prefix, then this batch's
    k, _ = buffers.insert(0, 2, torch.full((1, 1, 6, 1), -2.0), torch.zeros(1, 1, 6, 1))
    assert k[:, 0, :, 0].tolist() == [[0, 1, -2, -2, -2, -2, -2, -2]]
    with pytest.raises(ValueError, match="latest first"):
        buffers.insert(0, 3, torch.zeros(1, 1, 5, 1), torch.zeros(1, 1, 5, 1))


def test_patching_the_default_model(default):
    model, tok = default.model, default.tokenizer
    clean = tok.encode("He is a good man, and she is a good")
    corrupt = tok.encode("He is a good boy, and she is a good")
    p = next(i for i, (a, b) in enumerate(zip(clean, corrupt)) if a != b)
    man, boy = tok.encode(" man")[0], tok.encode(" boy")[0]
    z = patching_sweep(model, clean, corrupt, man, boy, "resid")["effect"].to_numpy().reshape(-1, len(clean))
    np.testing.assert_allclose(z[0], np.eye(len(clean))[p], atol=1e-4)
    np.testing.assert_allclose(z[-1], np.eye(len(clean))[-1], atol=1e-4)
    # by the last block the answer has left the changed word for the last position
    assert z[-2, -1] > 0.5 and z[-2, p] < 0.5 and z[1, p] > 0.5


def test_patching_refuses_what_it_cannot_patch():
    model = family_model(nanochat.TUTORIAL).float()
    with pytest.raises(ValueError, match="same number of tokens, got 3 and 2"):
        patching_sweep(model, [1, 2, 3], [1, 2], 4, 5)
    with pytest.raises(ValueError, match="empty"):
        patching_sweep(model, [], [], 4, 5)
    with pytest.raises(ValueError, match="contrast must be a token id"):
        patching_sweep(model, [1, 2, 3], [1, 2, 4], 4, 100)
    with pytest.raises(ValueError, match="site must be one of resid, attn, mlp"):
        patching_sweep(model, [1, 2, 3], [1, 2, 4], 4, 5, site="head")
    with pytest.raises(NothingToRestore):
        patching_sweep(model, [1, 2, 3], [1, 2, 3], 4, 5)
    with pytest.raises(SameTokens):
        patching_sweep(model, [1, 2, 3], [1, 2, 4], 4, 4)


# ---- saliency ------------------------------------------------------------------------------------------------------
def hooked_saliency(model, ids, target, alphas, base_id) -> np.ndarray:
    """(input − baseline) · the gradient averaged over `alphas`, per position, with forward hooks that replace the
    output of the token embedding and of every value embedding by a point of the path (the model's forward
    otherwise untouched). base_id None: the baseline is zero (gradient × input)."""
    idx = torch.tensor([ids] * len(alphas))
    modules = [model.transformer.wte, *getattr(model, "value_embeds", {}).values()]
    with torch.no_grad():
        inputs = [m(torch.tensor([ids])).double() for m in modules]
        bases = [torch.zeros_like(x) if base_id is None else m(torch.full((1, len(ids)), base_id)).double()
                 for m, x in zip(modules, inputs)]
    a = torch.tensor(alphas, dtype=torch.float64).view(-1, 1, 1)
    leaves = [(b + a * (x - b)).requires_grad_(True) for x, b in zip(inputs, bases)]
    hooks = [m.register_forward_hook(lambda mod, i, o, leaf=leaf: leaf.to(o.dtype)) for m, leaf in zip(modules, leaves)]
    try:
        f = model(idx)[:, -1, target].sum()
    finally:
        for h in hooks:
            h.remove()
    grads = torch.autograd.grad(f, leaves)
    return sum(((x - b)[0] * g.mean(0)).sum(-1) for x, b, g in zip(inputs, bases, grads)).detach().numpy()


@pytest.mark.parametrize("which", BOTH, ids=lambda m: m.name)
def test_saliency_is_the_gradient_taken_with_hooks(which):
    model = family_model(which)  # float64
    ids = prompt(9)
    with torch.no_grad():
        target = int(model(torch.tensor([ids]))[0, -1].argmax())
    gxi = saliency(model, ids, method="gradient_x_input")
    np.testing.assert_allclose(gxi["score"], hooked_saliency(model, ids, target, [1.0], None), rtol=1e-6, atol=1e-9)
    ig = saliency(model, ids, steps=8)
    alphas = [(k + 0.5) / 8 for k in range(8)]
    np.testing.assert_allclose(ig["score"], hooked_saliency(model, ids, target, alphas, ids[0]), rtol=1e-6,
                               atol=1e-9)
    assert list(ig.columns) == ["position", "score"] and ig["score"][0] == 0  # position 0 is the baseline's token


def test_integrated_gradients_are_complete_at_64_steps():
    """The Nov-2025 architecture: the scores add up to f(x) − f(<|bos|> everywhere) within 5%, both logits taken from
    the model's plain forward."""
    model = family_model(nanochat.TUTORIAL).float()
    ids = [0, *prompt(11)]
    df = saliency(model, ids, steps=64)
    with torch.no_grad():
        logits = model(torch.tensor([ids, [0] * len(ids)]))[:, -1]
    target = int(logits[0].argmax())
    gap = float(logits[0, target] - logits[1, target])
    assert abs(gap) > 0.1 and abs(df["score"].sum() - gap) < 0.05 * abs(gap)


def test_integrated_gradients_on_the_default_model(default):
    model, tok = default.model, default.tokenizer
    ids = [tok.bos_token_id] + tok.encode("He is a good man, and she is a good")
    df, info = saliency_table(model, ids, steps=64)
    with torch.no_grad():
        logits = model(torch.tensor([ids, [tok.bos_token_id] * len(ids)]))[:, -1]
    gap = float(logits[0, info["target"]] - logits[1, info["target"]])
    assert abs(df["score"].sum() - gap) < 0.05 * abs(gap)
    assert info["target"] == tok.encode(" man")[0]


def test_saliency_refuses_what_it_cannot_take():
    model = family_model(nanochat.TUTORIAL).float()
    with pytest.raises(ValueError, match="method must be one of integrated_gradients, gradient_x_input"):
        saliency(model, [1, 2], method="attention")
    with pytest.raises(ValueError, match="target must be a token id"):
        saliency(model, [1, 2], target=100)
    with pytest.raises(ValueError, match="empty"):
        saliency(model, [])


# ---- what the app asks and shows -----------------------------------------------------------------------------------
def test_tokens_pairs_and_budgets_are_refused_with_a_message(tiny_tokenizer):
    model = family_model(nanochat.TUTORIAL).float()  # vocab 100, below the tokenizer's: a typed text id may not fit
    V = model.config.vocab_size
    assert parse_token(tiny_tokenizer, "", V, "target") is None and parse_token(None, "#7", V, "target") == 7
    with pytest.raises(InputError) as e:
        parse_token(None, "#100", V, "contrast")
    assert e.value.key == "ui.bad_token_id" and "contrast" in str(e.value) and "对照" in e.value.message("zh")
    with pytest.raises(InputError) as e:
        parse_token(tiny_tokenizer, "the teacher", 10_000, "target")
    assert e.value.key == "ui.bad_token" and f"{len(tiny_tokenizer.encode('the teacher'))} tokens" in str(e.value)
    with pytest.raises(InputError, match="itself"):
        why_tokens(None, model, "#5", "#5")
    with pytest.raises(InputError) as e:
        corrupt_ids(tiny_tokenizer, model, [1, 2, 3], "  ", as_ids=False)
    assert e.value.key == "ui.empty_corrupt"
    with pytest.raises(InputError) as e:
        corrupt_ids(None, model, [1, 2, 3], "1, 2", as_ids=True)
    assert e.value.key == "ui.unequal_lengths" and "3" in e.value.message("zh") and "2" in e.value.message("zh")
    assert corrupt_ids(None, model, [1, 2, 3], "1, 2, 9", as_ids=True) == [1, 2, 9]
    cost = lambda T: sweep_flops(model, T, "resid")  # noqa: E731
    limit = next(T for T in range(1, 10**6) if cost(T + 1) > WHY_FLOPS)
    check_why(model, limit, cost)
    with pytest.raises(InputError) as e:
        check_why(model, limit + 1, cost)
    assert e.value.values["limit"] == limit
    assert saliency_flops(model, 10, 64) > 64 * model.forward_flops(10)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_views_in_both_languages(tiny_tokenizer, lang):
    from conftest import make_tiny_model

    model = make_tiny_model(tiny_tokenizer.vocab_size, seed=1)
    clean = tiny_tokenizer.encode("The teacher opened the notebook")
    corrupt = list(clean)
    corrupt[2] = tiny_tokenizer.encode(" class")[0]
    trace = trace_forward(model, [clean], tiny_tokenizer)
    view = attribution_view(trace, lang=lang)
    total = view.df[view.df["kind"] != "head"]["contribution"].sum()
    raw = float(trace.rec["logits_raw"][0, -1].max())
    assert f"{raw:.4f}" in view.text and f"{total:.4f}" in view.text
    assert [tr.type for tr in view.fig.data][-2:] == ["heatmap", "bar"]
    view = patching_view(model, tiny_tokenizer, clean, corrupt, lang=lang)
    assert view.df["effect"].notna().all() and str(len(clean)) in view.title
    view = saliency_view(model, tiny_tokenizer, [tiny_tokenizer.bos_token_id, *clean], lang=lang)
    assert f"{view.df['score'].sum():.4f}" in view.text
    assert view.df["token"].tolist()[0] == "<|bos|>"


def test_a_third_language_reaches_the_why_views(fake_language, tiny_tokenizer):  # noqa: F811 - the fixture
    from conftest import make_tiny_model

    model = make_tiny_model(tiny_tokenizer.vocab_size, seed=1)
    clean = tiny_tokenizer.encode("The teacher opened the notebook")
    corrupt = list(clean)
    corrupt[2] = tiny_tokenizer.encode(" class")[0]
    views = [patching_view(model, tiny_tokenizer, clean, corrupt, lang=fake_language),
             saliency_view(model, tiny_tokenizer, clean, lang=fake_language, steps=4)]
    for view in views:
        assert fake_only(view.title) and fake_only(view.text), view.name
        assert all(fake_only(tr.hovertemplate or "") for tr in view.fig.data), view.name
    assert t("view.patching.row_token", fake_language) in list(views[0].fig.data[0].y)


# ---- the Inside tab, its presets, lesson and links -----------------------------------------------------------------
def test_the_presets_pair_prompts_of_equal_length_on_the_default_model(default):
    from demo.inside import PRESETS

    for key in ("why_en", "why_zh"):
        pair = PRESETS[key]
        clean, corrupt = default.tokenizer.encode(pair.prompt), default.tokenizer.encode(pair.corrupt)
        assert len(clean) == len(corrupt) and clean != corrupt, key
        a, b = (int(default.model(torch.tensor([ids]))[0, -1].argmax()) for ids in (clean, corrupt))
        assert a != b, key  # the changed token changes the answer: there is something to explain
        assert all(text == "" or len(default.tokenizer.encode(text)) == 1 for text in (pair.target, pair.contrast))


def test_the_inside_tab_shows_the_why_views_and_says_what_is_wrong(demo, models):
    import gradio as gr

    from demo.inside import PRESETS
    from demo.lessons import LESSONS
    from urllib.parse import parse_qsl

    from demo.inside import LINK_FIELDS
    from demo.links import decode, encode

    run = next(f.fn for f in demo.fns.values() if f.name == "show_views")
    request = gr.Request(session_hash="why-views")
    pair = PRESETS["why_en"]
    for focus in ("patching", "saliency", "attribution"):
        out = run("loaded", pair.prompt, "", 0, 0, -1, focus, "zh", request, pair.corrupt, "", "", "resid",
                  "integrated_gradients")
        views = out[-1]
        assert [v.name for v in views] == [focus] and views[0].title == out[6].split("\n")[0].removeprefix("### ")
    n = len(models.main.tokenizer.encode(pair.prompt))
    for why, message in (((pair.corrupt + " again", "", ""), t("ui.unequal_lengths", "zh", a=n, b=n + 1)),
                         (("", "", ""), t("ui.empty_corrupt", "zh")),
                         ((pair.corrupt, " man", " man"), t("ui.contrast_is_target", "zh"))):
        with pytest.raises(gr.Error) as caught:
            run("loaded", pair.prompt, "", 0, 0, -1, "patching", "zh", request, *why, "resid", "integrated_gradients")
        assert caught.value.message == message
    with pytest.raises(gr.Error) as caught:
        run("loaded", pair.prompt, "", 0, 0, -1, "attribution", "en", request, "", "#99999", "", "resid",
            "integrated_gradients")
    assert "#99999" in caught.value.message and "target" in caught.value.message
    lesson = next(x for x in LESSONS if x.id == "why_said")
    assert lesson.settings == {"preset": "why_en", "focus": "patching"}
    link = {"focus": "saliency", "corrupt": pair.corrupt, "target": " man", "site": "mlp",
            "method": "gradient_x_input"}
    assert decode(dict(parse_qsl(encode(link, LINK_FIELDS))), LINK_FIELDS) == link  # a link carries them all


def test_the_benchmark_runs_and_writes_its_json(tmp_path):
    from bench import why_bench

    out = why_bench.main(["--quick", "--profile", "--out", str(tmp_path / "why.json")])
    saved = json.loads((tmp_path / "why.json").read_text())
    assert saved["T"] == 8 and set(saved["results"]) == {"attribution", "attribution_view", "resid_sweep",
                                                          "resid_sweep_first_token", "patching_view", "saliency",
                                                          "saliency_view"}
    assert all(r["seconds"] > 0 and r["cpu_seconds"] >= 0 for r in out["results"].values())
    # the profile of the worst-case sweep: its matrix products are among the operations it lists, largest first
    top = saved["profile"]["top"]
    assert any(r["op"] in ("aten::mm", "aten::addmm", "aten::bmm") for r in top)
    assert [r["us"] for r in top] == sorted((r["us"] for r in top), reverse=True)


def test_the_api_serves_the_why_views_and_refuses_with_a_message(live_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from demo.inside import PRESETS

    pair = PRESETS["why_en"]
    tok, model = live_app.models.main.tokenizer, live_app.models.main.model
    n = len(tok.encode(pair.prompt))
    client = Client(live_app.url, verbose=False, analytics_enabled=False, download_files=False)
    try:
        out = client.predict("loaded", pair.prompt, "", 0, 0, -1, "patching", pair.corrupt, "", "", "attn",
                             "integrated_gradients", api_name="/inside")
        text, table = out[4 + 1], out[4 + 2]  # the notes and three sliders, then the view's plot, text, table, CSV
        # the default tokens: the prompt's top-1 and the corrupt prompt's (the default model: " man" and " boy")
        title = t("view.patching.title", site=t("view.patching.site_attn"), target="·man", contrast="·boy", T=n)
        assert text.startswith(f"### {title}\n")
        rows = [dict(zip(table["headers"], row)) for row in table["data"]]
        assert len(rows) == model.config.n_layer * n and {"layer", "position", "effect"} <= set(rows[0])
        with pytest.raises(AppError) as err:
            client.predict("loaded", pair.prompt, "", 0, 0, -1, "patching", pair.corrupt + " again", "", "", "resid",
                           "integrated_gradients", api_name="/inside")
        assert t("ui.unequal_lengths", a=n, b=n + 1) in str(err.value)
        out = client.predict("loaded", pair.prompt, "", 0, 0, -1, "attribution", api_name="/inside")  # why: defaults
        what = t("view.attribution.logit", target="·man")
        assert out[4 + 1].startswith("### " + t("view.attribution.title", target="·man", what=what, pos=n - 1,
                                                token="·good"))
    finally:
        client.close()
