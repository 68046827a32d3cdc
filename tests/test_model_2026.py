"""Today's forward (gpt/nanochat/current.py as member a825e63, which nanochat 92d63d4 computes the same) against computations written here from nanochat's spec.

- A float64 reference forward written from nanochat 92d63d4's gpt.py / flash_attention.py (explicit attention with an
  explicit sliding-window causal mask, smear, per-layer lambdas, value embeddings, rotary base 1e5, QK norm x1.2,
  relu^2, backout, padded vocab, softcap), and the state_dict names and shapes nanochat's GPT has, derived from the
  config.
- Cached decoding (KVCache; RowKVCache driven the way gpt/fast.py's StaticDecoder drives it) against the full forward,
  across the short window's boundary.
- Causality and the loss identities; the recorder's points and identities between them.
- Checkpoints written the way nanochat 92d63d4 writes them; member detection, refusal, forcing and patching;
  our own format.
- Serving: Engine (plain loop and BatchServer) against the naive generate loop.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pickle

import pytest
import torch

from conftest import TINY_CORPUS, make_tiny_model
from gpt.nanochat import GPT, TODAY, TUTORIAL, GPTConfig, new_model
from gpt.checkpoint import CheckpointError, load_model, load_nanochat, random_model, save_model
from gpt.engine import Engine, SamplingParams
from gpt.kv_cache import KVCache, RowKVCache
from gpt.recorder import Recorder
from gpt.tokenizer import Tokenizer

NEW, OLD = TODAY.name, TUTORIAL.name  # a825e63 (computes as 92d63d4), 4a87a0d (the tutorial)

# Configs: sequence_len 512 -> S = ceil(512/4/128)*128 = 128; 640 -> S = 256. vocab 300 -> padded to 320.
MHA = dict(sequence_len=512, vocab_size=300, n_layer=4, n_head=4, n_kv_head=4, n_embd=48, window_pattern="SSSL")
GQA = dict(sequence_len=640, vocab_size=300, n_layer=3, n_head=6, n_kv_head=2, n_embd=48, window_pattern="sl")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tensors are tiny: intra-op threads only add overhead, and on a loaded machine (more runnable processes
    than cores) their spin-waits made each small matmul ~50x slower. One thread while this file runs, then back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the model under test, with non-trivial weights ------------------------------------------------------------------

def make_model(seed: int = 0, dtype: torch.dtype = torch.float64, **config) -> GPT:
    """nanochat's init (init_weights), then seeded noise on every parameter (nanochat's init zeroes the output
    projections, smear_lambda and more, which would hide whole stages), in `dtype`."""
    torch.manual_seed(seed)
    model = new_model(GPTConfig(**config), TODAY)
    model.init_weights()
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for p in model.parameters():
            scale = 1 / math.sqrt(p.shape[-1]) if p.ndim > 1 else 0.3
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.to(dtype).eval()


def random_ids(n: int, vocab: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, n), generator=torch.Generator().manual_seed(seed))


# ---- the reference: nanochat 92d63d4's forward, written out in float64 --------------------------------------------

def ref_padded_vocab(v: int) -> int:
    return (v + 63) // 64 * 64


def ref_has_ve(i: int, n_layer: int) -> bool:
    return i % 2 == (n_layer - 1) % 2


def ref_windows(cfg: dict) -> list[int]:
    """window_pattern tiled over the layers, the last layer always L; L = sequence_len, S = ceil(L/4/128)*128."""
    L = cfg["sequence_len"]
    S = math.ceil(L / 4 / 128) * 128
    pattern = cfg["window_pattern"].upper()
    sizes = [L if pattern[i % len(pattern)] == "L" else S for i in range(cfg["n_layer"])]
    sizes[-1] = L
    return sizes


def ref_rms(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)


def ref_rotary(T: int, hd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [T, hd/2], computed in float32 (as nanochat), returned in float64."""
    inv_freq = 1.0 / (100000 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return freqs.cos().double(), freqs.sin().double()


def ref_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """nanochat's convention on [B, T, H, hd]: halves x1, x2; y1 = x1 cos + x2 sin, y2 = -x1 sin + x2 cos."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c + x2 * s, -x1 * s + x2 * c], -1)


def ref_window_mask(Tq: int, Tk: int, window: int) -> torch.Tensor:
    """[Tq, Tk] bool: the query at absolute position i = Tk - Tq + r sees keys j with i - window <= j <= i."""
    i = torch.arange(Tk - Tq, Tk)[:, None]
    j = torch.arange(Tk)[None, :]
    return (j <= i) & (j >= i - window)


def ref_attention(q, k, v, window):
    """Explicit attention. q [B, T, H, hd], k/v [B, Tk, Hkv, hd] -> [B, T, H, hd]; query head h reads kv head
    h // (H / Hkv) (SDPA's enable_gqa)."""
    H, Hkv, hd = q.shape[2], k.shape[2], q.shape[3]
    rep = H // Hkv
    k = k.repeat_interleave(rep, dim=2)
    v = v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hd)
    scores = scores.masked_fill(~ref_window_mask(q.shape[1], k.shape[1], window), float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)


def reference_forward(sd: dict[str, torch.Tensor], cfg: dict, idx: torch.Tensor, windows: list[int] | None = None):
    """nanochat 92d63d4's GPT.forward in float64 from a state_dict. Returns (final normed hidden [B, T, C], logits
    [B, T, V], both float64)."""
    sd = {k: v.double() for k, v in sd.items()}
    B, T = idx.shape
    C, H, Hkv, n_layer, V = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"], cfg["n_layer"], cfg["vocab_size"]
    hd = C // H
    windows = ref_windows(cfg) if windows is None else windows
    cos, sin = ref_rotary(T, hd)

    x = ref_rms(sd["transformer.wte.weight"][idx])
    gate = sd["smear_lambda"] * torch.sigmoid(x[:, 1:, :24] @ sd["smear_gate.weight"].T)
    x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], 1)
    x0, x_backout = x, None
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        x = sd["resid_lambdas"][i] * x + sd["x0_lambdas"][i] * x0
        h = ref_rms(x)
        q = (h @ sd[p + "attn.c_q.weight"].T).view(B, T, H, hd)
        k = (h @ sd[p + "attn.c_k.weight"].T).view(B, T, Hkv, hd)
        v = (h @ sd[p + "attn.c_v.weight"].T).view(B, T, Hkv, hd)
        if ref_has_ve(i, n_layer):
            ve = sd[f"value_embeds.{i}.weight"][idx].view(B, T, Hkv, hd)
            g = 3 * torch.sigmoid(h[..., :12] @ sd[p + "attn.ve_gate.weight"].T)  # [B, T, Hkv]
            v = v + g[..., None] * ve
        q, k = ref_rotate(q, cos, sin), ref_rotate(k, cos, sin)
        q, k = ref_rms(q) * 1.2, ref_rms(k) * 1.2
        y = ref_attention(q, k, v, windows[i]).reshape(B, T, C)
        x = x + y @ sd[p + "attn.c_proj.weight"].T
        m = torch.relu(ref_rms(x) @ sd[p + "mlp.c_fc.weight"].T) ** 2
        x = x + m @ sd[p + "mlp.c_proj.weight"].T
        if i == n_layer // 2:
            x_backout = x
    x = ref_rms(x - sd["backout_lambda"] * x_backout)
    logits = (x @ sd["lm_head.weight"].T)[..., :V]
    return x, 15 * torch.tanh(logits / 15)


def expected_state_dict_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """The state_dict of nanochat 92d63d4's GPT(config): names and shapes (no rotary buffers: non-persistent)."""
    C, H, Hkv, L = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"], cfg["n_layer"]
    Vp, hd = ref_padded_vocab(cfg["vocab_size"]), C // H
    kv = Hkv * hd
    out = {"transformer.wte.weight": (Vp, C), "lm_head.weight": (Vp, C), "resid_lambdas": (L,),
           "x0_lambdas": (L,), "smear_gate.weight": (1, 24), "smear_lambda": (1,), "backout_lambda": (1,)}
    for i in range(L):
        p = f"transformer.h.{i}."
        out.update({p + "attn.c_q.weight": (H * hd, C), p + "attn.c_k.weight": (kv, C),
                    p + "attn.c_v.weight": (kv, C), p + "attn.c_proj.weight": (C, C),
                    p + "mlp.c_fc.weight": (4 * C, C), p + "mlp.c_proj.weight": (C, 4 * C)})
        if ref_has_ve(i, L):
            out[p + "attn.ve_gate.weight"] = (Hkv, 12)
            out[f"value_embeds.{i}.weight"] = (Vp, kv)
    return out


def run_recorded(model, idx, **kwargs):
    rec = Recorder()
    with torch.no_grad():
        logits = model(idx, recorder=rec, **kwargs)
    return logits, rec


def assert_hidden_close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10)


def assert_logits_close(actual, expected):
    # the model returns float32 logits (nanochat's .float() before the softcap): a float32 ulp or two
    torch.testing.assert_close(actual.double(), expected.double(), rtol=2e-6, atol=2e-5)


# ---- 1. the forward against the reference ------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, T", [(MHA, 260), (GQA, 300)], ids=["mha-SSSL", "gqa-sl"])
def test_forward_equals_float64_reference(cfg, T):
    model = make_model(**cfg)
    idx = random_ids(T, cfg["vocab_size"], batch=2, seed=1)
    logits, rec = run_recorded(model, idx)
    assert logits.shape == (2, T, cfg["vocab_size"])
    hidden, ref_logits = reference_forward(model.state_dict(), cfg, idx)
    assert_hidden_close(rec["final_norm"], hidden)
    assert_logits_close(logits, ref_logits)

    # the short window really hides keys here: the same weights with every layer L give other logits, but only at
    # positions beyond the short window (S + 1 keys: a query at i <= S sees all of 0..i either way)
    S = min(ref_windows(cfg))
    assert S < T - 1
    full = make_model(**{**cfg, "window_pattern": "L"})
    full.load_state_dict(model.state_dict())
    with torch.no_grad():
        logits_full = full(idx)
    _, ref_full = reference_forward(model.state_dict(), cfg, idx, windows=[cfg["sequence_len"]] * cfg["n_layer"])
    assert_logits_close(logits_full, ref_full)
    assert_logits_close(logits_full[:, : S + 1], logits[:, : S + 1])
    assert (logits_full[:, S + 1:] - logits[:, S + 1:]).abs().amax() > 1e-2
    # and the window's edge is exact: a key exactly S back is still visible (the reference with window S - 1 differs)
    _, ref_narrow = reference_forward(model.state_dict(), cfg, idx,
                                      windows=[w - 1 if w == S else w for w in ref_windows(cfg)])
    assert (ref_narrow[:, S:] - logits[:, S:].double()).abs().amax() > 1e-3


@pytest.mark.parametrize("cfg", [MHA, GQA, dict(MHA, n_layer=1, window_pattern="S"),
                                 dict(GQA, n_layer=6, window_pattern="SSL", sequence_len=2048)],
                         ids=["mha", "gqa", "one-layer", "deep"])
def test_state_dict_names_shapes_and_windows_are_nanochats(cfg):
    with torch.device("meta"):
        model = new_model(GPTConfig(**cfg), TODAY)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected_state_dict_shapes(cfg)
    assert model.window_sizes == ref_windows(cfg)
    assert model.window_sizes[-1] == cfg["sequence_len"]  # the last layer is always L
    assert model.member.name == NEW


def test_windows_with_sequence_len_not_a_multiple_of_512():
    # S = ceil(L/4/128)*128: 600 -> 256 (not 150), 100 -> 128 (more than the context: hides nothing)
    for L, S in [(600, 256), (100, 128), (2048, 512), (2049, 640)]:
        with torch.device("meta"):
            model = new_model(GPTConfig(sequence_len=L, vocab_size=64, n_layer=3, n_head=2, n_kv_head=2, n_embd=32,
                                        window_pattern="SSL"), TODAY)
        assert model.window_sizes == [S, S, L]


def test_init_weights_is_nanochats():
    cfg = dict(MHA, n_embd=96, n_head=4, n_kv_head=4)
    torch.manual_seed(0)
    model = new_model(GPTConfig(**cfg), TODAY)
    model.init_weights()
    L, C = cfg["n_layer"], cfg["n_embd"]
    s = math.sqrt(3) / math.sqrt(C)
    torch.testing.assert_close(model.resid_lambdas.detach(),
                               torch.tensor([1.15 - 0.10 * i / (L - 1) for i in range(L)]))
    torch.testing.assert_close(model.x0_lambdas.detach(), torch.tensor([0.20 - 0.15 * i / (L - 1) for i in range(L)]))
    assert model.smear_lambda.item() == 0 and model.backout_lambda.item() == pytest.approx(0.2)
    sd = model.state_dict()
    for i in range(L):
        p = f"transformer.h.{i}."
        assert not sd[p + "attn.c_proj.weight"].any() and not sd[p + "mlp.c_proj.weight"].any()
        for name in ("c_q", "c_k", "c_v"):
            w = sd[p + f"attn.{name}.weight"]
            assert w.abs().max() <= s and w.abs().max() > 0.9 * s  # uniform(-s, s)
        assert sd[p + "mlp.c_fc.weight"].abs().max() <= 0.4 * s
        if ref_has_ve(i, L):
            w = sd[p + "attn.ve_gate.weight"]
            assert w.min() >= 0 and w.max() <= 0.02 and w.max() > 0
            assert sd[f"value_embeds.{i}.weight"].abs().max() <= s
    assert sd["smear_gate.weight"].min() >= 0 and sd["smear_gate.weight"].max() <= 0.02
    assert sd["transformer.wte.weight"].std().item() == pytest.approx(0.8, rel=0.05)
    assert sd["lm_head.weight"].std().item() == pytest.approx(0.001, rel=0.05)


# ---- 2. cached decoding against the full forward -------------------------------------------------------------------

def test_kv_cache_prefill_chunk_and_steps_equal_full_forward():
    cfg = MHA  # S = 128: the chunk and the steps cross the window's edge (a query at 129 no longer sees key 0)
    model = make_model(**cfg)
    idx = random_ids(200, cfg["vocab_size"], batch=2, seed=2)
    full, rec = run_recorded(model, idx)
    cache = KVCache.for_model(model, 2)
    pieces = [(0, 100), (100, 140)] + [(t, t + 1) for t in range(140, 200)]  # prefill, a chunk, single tokens
    with torch.no_grad():
        for a, b in pieces:
            r = Recorder({"final_norm"})
            out = model(idx[:, a:b], kv_cache=cache, recorder=r)
            assert_hidden_close(r["final_norm"], rec["final_norm"][:, a:b])
            assert_logits_close(out, full[:, a:b])
    assert cache.get_pos() == 200


def test_row_cache_two_rows_at_different_positions_equal_full_forward():
    """Driven as gpt/fast.py's StaticDecoder drives it: one row prefilled exactly (mask_free), another prefilled
    padded (masks, span larger than the prompt, `valid` = its real length), then both decoded together."""
    cfg = GQA  # S = 256
    model = make_model(**cfg)
    a = random_ids(330, cfg["vocab_size"], seed=3)
    b = random_ids(290, cfg["vocab_size"], seed=4)
    full_a, rec_a = run_recorded(model, a)
    full_b, rec_b = run_recorded(model, b)
    cache = RowKVCache.for_model(model, 3)  # a third row stays idle
    with torch.no_grad():
        # row 0: 270 real tokens, exact length, no mask (what the eager prefill does)
        cache.pos[0] = 0
        r = Recorder({"final_norm"})
        step = cache.step(270, rows=torch.tensor([0]), mask_free=True, valid=torch.tensor([270]))
        out = model(a[:, :270], kv_cache=step, recorder=r)
        assert_logits_close(out, full_a[:, :270])
        assert_hidden_close(r["final_norm"], rec_a["final_norm"][:, :270])
        cache.pos[0] = 270
        # row 1: 240 real tokens padded to 256 with junk, span 320, masks (what a captured prefill does)
        padded = torch.cat([b[:, :240], a[:, :16]], 1)
        cache.pos[1] = 0
        r = Recorder({"final_norm"})
        out = model(padded, kv_cache=cache.step(320, rows=torch.tensor([1]), valid=torch.tensor([240])), recorder=r)
        assert_logits_close(out[:, :240], full_b[:, :240])
        assert_hidden_close(r["final_norm"][:, :240], rec_b["final_norm"][:, :240])
        cache.pos[1] = 240
        # both rows, one token each per step: row 0 from 270, row 1 from 240 (its queries cross 257 = S + 1)
        for s in range(40):
            pa, pb = 270 + s, 240 + s
            span = min(-(-(pa + 1) // 64) * 64, cfg["sequence_len"])  # a bucket: stale keys beyond
            step = torch.tensor([[a[0, pa]], [b[0, pb]]])
            r = Recorder({"final_norm"})
            out = model(step, kv_cache=cache.step(span, batch=2), recorder=r)
            assert_logits_close(out[0, 0], full_a[0, pa])
            assert_logits_close(out[1, 0], full_b[0, pb])
            assert_hidden_close(r["final_norm"][0, 0], rec_a["final_norm"][0, pa])
            assert_hidden_close(r["final_norm"][1, 0], rec_b["final_norm"][0, pb])
    assert cache.pos[:2].tolist() == [310, 280]


# ---- 3. causality and the loss --------------------------------------------------------------------------------

def test_causality_earlier_logits_exactly_unchanged():
    cfg = MHA
    model = make_model(**cfg)
    idx = random_ids(220, cfg["vocab_size"], seed=5)
    with torch.no_grad():
        base = model(idx)
        for j in (1, 140, 219):
            changed = idx.clone()
            changed[0, j] = (changed[0, j] + 1) % cfg["vocab_size"]
            out = model(changed)
            assert torch.equal(out[:, :j], base[:, :j]), j
            assert (out[:, j] - base[:, j]).abs().max() > 0  # the changed position itself does change
            if j + 1 < idx.size(1):
                assert (out[:, j + 1:] - base[:, j + 1:]).abs().max() > 0


def test_loss_identities():
    cfg = GQA
    model = make_model(**cfg)
    idx = random_ids(150, cfg["vocab_size"], batch=2, seed=6)
    targets = random_ids(150, cfg["vocab_size"], batch=2, seed=7)
    targets[0, :30] = -1
    targets[1, 100:] = -1
    with torch.no_grad():
        logits = model(idx)
        loss = model(idx, targets)
        per_token = model(idx, targets, loss_reduction="none")
    assert loss.dim() == 0 and per_token.shape == (2 * 150,)
    flat_logits, flat_t = logits.reshape(-1, cfg["vocab_size"]).double(), targets.reshape(-1)
    keep = flat_t != -1
    assert not per_token[~keep].any()  # ignored targets contribute exactly 0
    ce = torch.logsumexp(flat_logits[keep], -1) - flat_logits[keep].gather(1, flat_t[keep][:, None])[:, 0]
    torch.testing.assert_close(per_token[keep].double(), ce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss.double(), per_token[keep].double().mean(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss.double(), ce.mean(), rtol=1e-5, atol=1e-5)


# ---- 4. the recorder ----------------------------------------------------------------------------------------

def test_recorder_points_and_identities():
    cfg = MHA
    model = make_model(**cfg)
    B, T = 2, 180
    idx = random_ids(T, cfg["vocab_size"], batch=B, seed=8)
    logits, rec = run_recorded(model, idx)
    names = model.recording_points()
    assert list(rec) == names  # every point recorded, once each, in forward order
    L, C, H, Hkv = cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"]
    hd = C // H
    for must in ("embed_smear", "backout", "blocks.1.attn.ve_gate", "blocks.3.attn.ve_gate"):
        assert must in names
    assert "blocks.0.attn.ve_gate" not in names and "blocks.2.attn.ve_gate" not in names
    p = {k: v.detach() for k, v in model.state_dict().items()}
    eq = assert_hidden_close

    eq(rec["rotary.cos"][0, :, 0], ref_rotary(T, hd)[0])
    eq(rec["rotary.sin"][0, :, 0], ref_rotary(T, hd)[1])
    eq(rec["embed"], p["transformer.wte.weight"][idx])
    eq(rec["embed_norm"], ref_rms(rec["embed"]))
    assert torch.equal(rec["embed_smear"][:, 0], rec["embed_norm"][:, 0])
    e = rec["embed_norm"]
    gate = p["smear_lambda"] * torch.sigmoid(e[:, 1:, :24] @ p["smear_gate.weight"].T)
    eq(rec["embed_smear"][:, 1:], e[:, 1:] + gate * e[:, :-1])
    assert (rec["embed_smear"][:, 1:] - e[:, 1:]).abs().max() > 1e-3  # the smear does something here

    x0 = rec["embed_smear"]
    prev = x0
    for i in range(L):
        b = f"blocks.{i}."
        eq(rec[b + "input"], p["resid_lambdas"][i] * prev + p["x0_lambdas"][i] * x0)
        h = ref_rms(rec[b + "input"])
        if ref_has_ve(i, L):
            g = rec[b + "attn.ve_gate"]
            assert g.shape == (B, T, Hkv)
            eq(g, 3 * torch.sigmoid(h[..., :12] @ p[b.replace("blocks", "transformer.h") + "attn.ve_gate.weight"].T))
        q, k, v = rec[b + "attn.q"], rec[b + "attn.k"], rec[b + "attn.v"]
        assert q.shape == (B, H, T, hd) and k.shape == (B, Hkv, T, hd) and v.shape == (B, Hkv, T, hd)
        # QK norm then x1.2: every query and key vector has RMS exactly 1.2
        eq(q.pow(2).mean(-1).sqrt(), torch.full((B, H, T), 1.2, dtype=q.dtype))
        eq(k.pow(2).mean(-1).sqrt(), torch.full((B, Hkv, T), 1.2, dtype=k.dtype))
        # the attention output from the recorded q, k, v with this layer's window
        y = ref_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), ref_windows(cfg)[i])
        eq(rec[b + "attn.y"], y.transpose(1, 2))
        eq(rec[b + "resid_mid"], rec[b + "input"] + rec[b + "attn.out"])
        eq(rec[b + "output"], rec[b + "resid_mid"] + rec[b + "mlp.out"])
        eq(rec[b + "mlp.hidden"], torch.relu(ref_rms(rec[b + "resid_mid"]) @ p[
            f"transformer.h.{i}.mlp.c_fc.weight"].T) ** 2)
        prev = rec[b + "output"]

    eq(rec["backout"], rec[f"blocks.{L - 1}.output"] - p["backout_lambda"] * rec[f"blocks.{L // 2}.output"])
    eq(rec["final_norm"], ref_rms(rec["backout"]))
    V = cfg["vocab_size"]
    raw = (ref_rms(rec["backout"]) @ p["lm_head.weight"].T)[..., :V]
    assert rec["logits_raw"].shape == rec["logits"].shape == (B, T, V)
    assert_logits_close(rec["logits_raw"], raw)
    assert_logits_close(rec["logits"], 15 * torch.tanh(raw / 15))
    assert torch.equal(rec["logits"], logits)


# ---- 5. checkpoints --------------------------------------------------------------------------------------------

def write_nanochat(base, tokenizer, model, *, step=650, tag=None, config=None, edit_sd=None, bf16_embeddings=True):
    """As nanochat 92d63d4 writes an SFT checkpoint: tokenizer/tokenizer.pkl (pickled tiktoken Encoding),
    chatsft_checkpoints/d<N>/model_<step>.pt (state_dict, torch.compile's prefix; wte and the value embeddings in the
    compute dtype, bf16 on a GPU) and meta_<step>.json (model_config with window_pattern for the 2026 model)."""
    (base / "tokenizer").mkdir(parents=True, exist_ok=True)
    with open(base / "tokenizer" / "tokenizer.pkl", "wb") as f:
        pickle.dump(tokenizer.encoding, f)
    model_dir = base / "chatsft_checkpoints" / (tag or f"d{model.config.n_layer}")
    model_dir.mkdir(parents=True, exist_ok=True)
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().clone().float()
        if bf16_embeddings and (k == "transformer.wte.weight" or k.startswith("value_embeds.")):
            v = v.bfloat16()
        sd["_orig_mod." + k] = v
    if edit_sd:
        edit_sd(sd)
    torch.save(sd, model_dir / f"model_{step:06d}.pt")
    c = model.config
    model_config = config if config is not None else {
        "sequence_len": c.sequence_len, "vocab_size": c.vocab_size, "n_layer": c.n_layer, "n_head": c.n_head,
        "n_kv_head": c.n_kv_head, "n_embd": c.n_embd, "window_pattern": c.window_pattern}
    meta = {"step": step, "val_bpb": 0.81, "model_config": model_config, "user_config": {}}
    with open(model_dir / f"meta_{step:06d}.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    return model_dir


def bf16_rounded(model):
    """A float32 copy of the writer with wte and the value embeddings rounded to bf16, as stored."""
    sd = {k: (v.bfloat16().float() if k == "transformer.wte.weight" or k.startswith("value_embeds.") else v.float())
          for k, v in model.state_dict().items()}
    return sd


def tok_cfg(tokenizer, **kw):
    return dict(sequence_len=512, vocab_size=tokenizer.vocab_size, n_layer=3, n_head=4, n_kv_head=2, n_embd=32,
                window_pattern="SL", **kw)


def test_nanochat_2026_checkpoint_loads_and_reproduces_logits(tiny_tokenizer, tmp_path):
    cfg = tok_cfg(tiny_tokenizer)
    writer = make_model(seed=3, dtype=torch.float32, **cfg)
    write_nanochat(tmp_path, tiny_tokenizer, writer)
    loaded = load_nanochat(tmp_path, device="cpu", dtype="float32")
    assert loaded.arch == NEW and loaded.model.member.name == NEW
    assert loaded.meta["val_bpb"] == 0.81 and "d3" in loaded.name and "000650" in loaded.name
    assert loaded.model.config.window_pattern == "SL" and loaded.model.window_sizes == [128, 512, 512]
    idx = random_ids(200, cfg["vocab_size"], seed=9)  # past the short window
    with torch.no_grad():
        got = loaded.model(idx)
    sd = bf16_rounded(writer)
    _, expected = reference_forward(sd, cfg, idx)
    assert_logits_close(got, expected)
    ref = make_model(**cfg, dtype=torch.float32)
    ref.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(got, ref(idx), rtol=1e-5, atol=1e-5)
    # the rotary tables are nanochat's float32 values (base 100000), not the tutorial's bf16-rounded base-10000 ones
    cos, sin = ref_rotary(loaded.model.cos.size(1), cfg["n_embd"] // cfg["n_head"])
    assert loaded.model.cos.dtype == torch.float32
    assert torch.equal(loaded.model.cos[0, :, 0].double(), cos) and torch.equal(loaded.model.sin[0, :, 0].double(), sin)
    assert loaded.model.cos.size(1) == 10 * cfg["sequence_len"]


def test_nanochat_2026_checkpoint_with_padded_vocab(tmp_path):
    tokenizer = Tokenizer.train(TINY_CORPUS, 300)
    assert tokenizer.vocab_size % 64 != 0  # so the padding is exercised
    cfg = tok_cfg(tokenizer)
    writer = make_model(seed=4, dtype=torch.float32, **cfg)
    assert writer.transformer.wte.weight.shape[0] == ref_padded_vocab(tokenizer.vocab_size)
    write_nanochat(tmp_path, tokenizer, writer)
    loaded = load_nanochat(tmp_path, device="cpu", dtype="float32")
    assert loaded.arch == NEW and loaded.tokenizer.vocab_size == tokenizer.vocab_size
    idx = random_ids(150, tokenizer.vocab_size, seed=10)
    with torch.no_grad():
        got = loaded.model(idx)
    assert got.shape == (1, 150, tokenizer.vocab_size)
    assert_logits_close(got, reference_forward(bf16_rounded(writer), cfg, idx)[1])


def test_nanochat_2025_checkpoint_still_loads_as_the_tutorials(tiny_tokenizer, tmp_path):
    old = make_tiny_model(tiny_tokenizer.vocab_size, seed=2)
    c = old.config
    config = {"sequence_len": c.sequence_len, "vocab_size": c.vocab_size, "n_layer": c.n_layer, "n_head": c.n_head,
              "n_kv_head": c.n_kv_head, "n_embd": c.n_embd}
    write_nanochat(tmp_path, tiny_tokenizer, old, config=config)
    loaded = load_nanochat(tmp_path, device="cpu", dtype="float32")
    assert loaded.arch == OLD
    idx = random_ids(40, c.vocab_size, seed=11)
    old.transformer.wte.weight.data = old.transformer.wte.weight.data.bfloat16().float()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(idx), old(idx), rtol=1e-5, atol=1e-5)


def _drop(*keys):
    def edit(sd):
        for k in keys:
            del sd["_orig_mod." + k]
    return edit


@pytest.mark.parametrize("edit_sd, message", [
    # some of today's keys but not all: no member of the family, the closest one and what does not fit it named
    (_drop("smear_lambda"), r"fits no forward .* closest is a825e63 .* no smear_lambda"),
    # without smear_gate and backout_lambda the closest is the member before smear and backout (6ed7d1d), which has
    # no smear_lambda either
    (_drop("backout_lambda", "smear_gate.weight"), r"fits no forward .* closest is 6ed7d1d .* unexpected smear_lambda"),
    (lambda sd: sd.update({"_orig_mod.smear_gate.weight": torch.zeros(1, 12)}),
     r"closest is a825e63 .* smear_gate\.weight is \[1, 12\], not \[1, 24\]"),
    (lambda sd: sd.update({"_orig_mod.value_embeds.2.weight": torch.zeros(512, 32)}),
     r"closest is a825e63 .* value_embeds\.2\.weight is \[512, 32\], not \[512, 16\]"),
    (lambda sd: sd.update({"_orig_mod.value_embeds.1.weight": torch.zeros(512, 16)}),
     r"closest is a825e63 .* unexpected value_embeds\.1\.weight"),
], ids=["no-smear_lambda", "no-backout-no-gate", "smear-gate-shape", "value-embeds-shape", "value-embeds-layer"])
def test_broken_2026_checkpoints_are_refused_naming_the_key(tiny_tokenizer, tmp_path, edit_sd, message):
    writer = make_model(dtype=torch.float32, **tok_cfg(tiny_tokenizer))
    write_nanochat(tmp_path, tiny_tokenizer, writer, edit_sd=edit_sd)
    with pytest.raises(CheckpointError, match=message):
        load_nanochat(tmp_path, device="cpu", dtype="float32")


def test_forced_2026_arch_patches_like_nanochats_loader(tiny_tokenizer, tmp_path):
    """A checkpoint from before window_pattern, resid_lambdas and x0_lambdas (but with the other new weights):
    fits no member; forced to today's (a825e63) it gets nanochat's patches: window "L", resid 1, x0 0."""
    cfg = tok_cfg(tiny_tokenizer)
    writer = make_model(seed=5, dtype=torch.float32, **cfg)
    config = {k: v for k, v in cfg.items() if k != "window_pattern"}
    write_nanochat(tmp_path, tiny_tokenizer, writer, config=config, edit_sd=_drop("resid_lambdas", "x0_lambdas"))
    with pytest.raises(CheckpointError, match=r"closest is a825e63 .*no config key 'window_pattern'.*no resid_lambdas"):
        load_nanochat(tmp_path, device="cpu", dtype="float32")
    loaded = load_nanochat(tmp_path, device="cpu", dtype="float32", arch=NEW)
    m = loaded.model
    assert loaded.arch == NEW and m.config.window_pattern == "L"
    assert m.window_sizes == [cfg["sequence_len"]] * cfg["n_layer"]
    assert torch.equal(m.resid_lambdas.detach(), torch.ones(cfg["n_layer"]))
    assert torch.equal(m.x0_lambdas.detach(), torch.zeros(cfg["n_layer"]))
    sd = bf16_rounded(writer)
    sd["resid_lambdas"], sd["x0_lambdas"] = torch.ones(cfg["n_layer"]), torch.zeros(cfg["n_layer"])
    idx = random_ids(200, cfg["vocab_size"], seed=12)
    with torch.no_grad():
        got = m(idx)
    assert_logits_close(got, reference_forward(sd, dict(cfg, window_pattern="L"), idx)[1])
    # what the checkpoint did carry is kept (not re-initialised)
    assert torch.equal(m.smear_lambda.detach(), writer.smear_lambda.detach())
    assert torch.equal(m.backout_lambda.detach(), writer.backout_lambda.detach())


def test_own_format_round_trip(tiny_tokenizer, tmp_path):
    cfg = tok_cfg(tiny_tokenizer)  # "SL": not the default "SSSL", so a lost pattern would change the logits
    writer = make_model(seed=6, dtype=torch.float32, **cfg)
    save_model(tmp_path / "m", writer, tiny_tokenizer)
    loaded = load_model(tmp_path / "m", device="cpu", dtype="float32")
    assert loaded.arch == NEW and loaded.model.config == writer.config
    idx = random_ids(200, cfg["vocab_size"], seed=13)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(idx), writer(idx), rtol=1e-5, atol=1e-5)
    assert_logits_close(loaded.model(idx).detach(), reference_forward(writer.state_dict(), cfg, idx)[1])


def test_random_model_of_a_2026_config(tiny_tokenizer):
    config = GPTConfig(**tok_cfg(tiny_tokenizer))
    a = random_model(config, tiny_tokenizer, seed=1, device="cpu", member=TODAY)
    b = random_model(config, tiny_tokenizer, seed=1, device="cpu", member=TODAY)
    assert a.arch == NEW and a.model.window_sizes == [128, 512, 512]
    assert {k: tuple(v.shape) for k, v in a.model.state_dict().items()} == expected_state_dict_shapes(
        dataclasses.asdict(config))
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.model.resid_lambdas[0].item() == pytest.approx(1.15)  # nanochat's init, not the tutorial's


# ---- 6. serving ----------------------------------------------------------------------------------------------

def forbid_stops(monkeypatch, model, stop_ids):
    """Every forward's logits with the stop tokens pushed far down (for the engine and the naive loop alike)."""
    forward = model.forward

    def wrapped(*args, **kwargs):
        out = forward(*args, **kwargs)
        if out.dim() == 3:
            out = out.clone()
            out[..., sorted(stop_ids)] = -1e4
        return out

    monkeypatch.setattr(model, "forward", wrapped)


@pytest.mark.parametrize("batched", [False, True], ids=["plain-loop", "batch-server"])
def test_engine_greedy_equals_generate_across_the_window(tiny_tokenizer, monkeypatch, batched):
    cfg = tok_cfg(tiny_tokenizer)  # S = 128
    model = make_model(seed=7, dtype=torch.float32, **cfg)
    model.fuse_qkv()  # as a loaded model is
    engine = Engine(model, tiny_tokenizer, batched=batched)
    forbid_stops(monkeypatch, model, engine.stop_ids)
    text = tiny_tokenizer.encode(TINY_CORPUS[0])
    prompts = [[tiny_tokenizer.bos_token_id] + text[:119], [tiny_tokenizer.bos_token_id] + text[60:200]]
    assert [len(p) for p in prompts] == [120, 141]  # decoding runs from below 129 (S + 1 keys) to beyond it
    params = SamplingParams(temperature=0.0, top_k=None, max_tokens=20)
    got = engine.generate_batch(prompts, params)
    for prompt, tokens in zip(prompts, got):
        expected = list(model.generate(prompt, 20, temperature=0.0))
        assert tokens == expected
        assert list(model.generate(prompt, 20, temperature=0.0, use_cache=True)) == expected
        assert len(set(tokens)) > 3  # not a degenerate repetition
    # and one stream on its own gives the same as in the batch
    events = list(engine.stream(prompts[0], params))
    assert [e.token for e in events if not e.done] == got[0] and events[-1].stop_reason == "max_tokens"
