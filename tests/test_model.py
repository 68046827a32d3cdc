"""The tutorial's forward (gpt/nanochat/tutorial.py, nanochat 4a87a0d) against independent computations: a float64
reference forward written from the spec, the cached path against one full forward, causality, the loss identity,
nanochat's init and the naive generate loop."""
import math
from dataclasses import replace
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from gpt import GPT, GPTConfig, KVCache, Recorder
from gpt.nanochat import causal_mask_for, new_model

SOFTCAP = 15.0  # logits = 15·tanh(raw / 15): nanochat 4a87a0d's gpt.py (the tutorial's forward)

CONFIGS = {
    "mha": GPTConfig(sequence_len=32, vocab_size=97, n_layer=2, n_head=4, n_kv_head=4, n_embd=32),
    "gqa": GPTConfig(sequence_len=32, vocab_size=97, n_layer=3, n_head=4, n_kv_head=2, n_embd=32),
    "mqa": GPTConfig(sequence_len=32, vocab_size=50, n_layer=1, n_head=2, n_kv_head=1, n_embd=16),
}


def make_model(config: GPTConfig, dtype=torch.float64, seed: int = 0) -> GPT:
    """nanochat init, then every weight perturbed: zero-init lm_head/c_proj would make all logits equal."""
    torch.manual_seed(seed)
    model = new_model(config)  # the tutorial's forward
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.to(dtype)


def reference_forward(sd: dict, config: GPTConfig, idx: torch.Tensor) -> torch.Tensor:
    """nanochat's forward written out from the spec in float64 with explicit attention, independent of gpt/nanochat/."""
    C, H, Hkv = config.n_embd, config.n_head, config.n_kv_head
    hd = C // H
    B, T = idx.shape
    rms = lambda x: x / torch.sqrt((x * x).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos = ang.cos().bfloat16().double()[None, :, None, :]  # nanochat stores the tables in bf16
    sin = ang.sin().bfloat16().double()[None, :, None, :]

    def rot(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], -1)

    w = {k: v.double() for k, v in sd.items()}
    x = rms(w["transformer.wte.weight"][idx])
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        h = rms(x)
        q = rms(rot((h @ w[p + "attn.c_q.weight"].T).view(B, T, H, hd))).transpose(1, 2)
        k = rms(rot((h @ w[p + "attn.c_k.weight"].T).view(B, T, Hkv, hd))).transpose(1, 2)
        v = (h @ w[p + "attn.c_v.weight"].T).view(B, T, Hkv, hd).transpose(1, 2)
        k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ w[p + "attn.c_proj.weight"].T
        m = torch.relu(rms(x) @ w[p + "mlp.c_fc.weight"].T) ** 2
        x = x + m @ w[p + "mlp.c_proj.weight"].T
    logits = rms(x) @ w["lm_head.weight"].T
    return SOFTCAP * torch.tanh(logits / SOFTCAP)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_matches_float64_reference(name):
    config = CONFIGS[name]
    model = make_model(config)
    idx = torch.randint(0, config.vocab_size, (2, 11))
    ref = reference_forward(model.state_dict(), config, idx)
    out = model(idx)
    assert out.shape == (2, 11, config.vocab_size) and out.dtype == torch.float32  # logits are cast to fp32
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)  # fp32 rounding of the logits only
    assert out.abs().max() < SOFTCAP


def test_state_dict_names_and_shapes_are_nanochats():
    c = GPTConfig(sequence_len=16, vocab_size=50, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
    sd = new_model(c).state_dict()
    hd = c.n_embd // c.n_head
    expected = {"transformer.wte.weight": (50, 32), "lm_head.weight": (50, 32)}
    for i in range(2):
        p = f"transformer.h.{i}."
        expected |= {p + "attn.c_q.weight": (4 * hd, 32), p + "attn.c_k.weight": (2 * hd, 32),
                     p + "attn.c_v.weight": (2 * hd, 32), p + "attn.c_proj.weight": (32, 32),
                     p + "mlp.c_fc.weight": (128, 32), p + "mlp.c_proj.weight": (32, 128)}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected  # rotary buffers are not persistent


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_path_equals_full_forward(name):
    """Prefill, chunked prefill after a prefix, and one-token steps: all three mask regimes, against one forward."""
    config = CONFIGS[name]
    model = make_model(config)
    idx = torch.randint(0, config.vocab_size, (2, 14))
    full = model(idx)
    hd = config.n_embd // config.n_head
    cache = KVCache(2, config.n_kv_head, config.sequence_len, hd, config.n_layer, dtype=torch.float64)
    pieces, starts = [], [0, 5, 9, 10, 11, 12, 13]  # prefill 5, chunk of 4, then single tokens
    for a, b in zip(starts, starts[1:] + [14]):
        assert cache.get_pos() == a
        pieces.append(model(idx[:, a:b], kv_cache=cache))
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-10, atol=1e-10)


def test_rotary_slice_is_offset_by_cache_position():
    config = CONFIGS["mha"]
    model = make_model(config)
    cache = KVCache(1, config.n_kv_head, config.sequence_len, config.n_embd // config.n_head, config.n_layer,
                    dtype=torch.float64)
    model(torch.tensor([[100 % 97, 200 % 97, 300 % 97]]), kv_cache=cache)
    rec = Recorder()
    model(torch.tensor([[400 % 97]]), kv_cache=cache, recorder=rec)
    torch.testing.assert_close(rec["rotary.cos"], model.cos[:, 3:4])
    assert rec["blocks.0.attn.k"].shape[2] == 4 and rec["blocks.0.attn.q"].shape[2] == 1


def test_mask_regimes():
    # independent construction: key j is visible to query i iff j <= (Tk - Tq) + i
    for Tq, Tk in [(5, 5), (1, 7), (3, 8)]:
        expected = torch.tensor([[j <= Tk - Tq + i for j in range(Tk)] for i in range(Tq)])
        assert torch.equal(causal_mask_for(Tq, Tk), expected)
    assert causal_mask_for(1, 7).all()


def test_causality_changing_token_j_leaves_earlier_logits_unchanged():
    config = CONFIGS["gqa"]
    model = make_model(config)
    idx = torch.randint(0, config.vocab_size, (1, 12))
    j = 7
    changed = idx.clone()
    changed[0, j] = (idx[0, j] + 1) % config.vocab_size
    a, b = model(idx), model(changed)
    assert torch.equal(a[:, :j], b[:, :j])  # exactly, not approximately
    assert (a[:, j:] - b[:, j:]).abs().amax(-1).min() > 0


def test_loss_is_mean_of_per_position_losses_and_honours_ignore_index():
    config = CONFIGS["mha"]
    model = make_model(config, dtype=torch.float32)
    idx = torch.randint(0, config.vocab_size, (2, 9))
    targets = torch.randint(0, config.vocab_size, (2, 9))
    targets[0, :3] = -1
    loss = model(idx, targets)
    per_pos = model(idx, targets, loss_reduction="none")
    assert per_pos.shape == (18,) and loss.ndim == 0
    keep = targets.view(-1) != -1
    assert torch.all(per_pos[~keep] == 0)
    torch.testing.assert_close(loss, per_pos[keep].mean())
    # and from the logits by hand: -log softmax at the target
    logp = model(idx).double().log_softmax(-1).view(-1, config.vocab_size)
    manual = -logp[keep.nonzero().squeeze(1), targets.view(-1)[keep]]
    torch.testing.assert_close(per_pos[keep].double(), manual, rtol=1e-5, atol=1e-5)


def test_nanochat_init():
    torch.manual_seed(0)
    c = GPTConfig(sequence_len=16, vocab_size=500, n_layer=2, n_head=4, n_kv_head=4, n_embd=64)
    model = new_model(c)
    model.init_weights()
    assert torch.all(model.lm_head.weight == 0)
    for block in model.transformer.h:
        assert torch.all(block.attn.c_proj.weight == 0) and torch.all(block.mlp.c_proj.weight == 0)
    assert abs(model.transformer.wte.weight.std().item() - 1.0) < 0.02
    c_fc = model.transformer.h[0].mlp.c_fc.weight  # fan_in 64, fan_out 256 -> std 1/8
    assert abs(c_fc.std().item() - 1 / 8) < 0.01
    # zero lm_head: every logit is 0, so the first loss is exactly ln(V)
    loss = model(torch.randint(0, 500, (1, 8)), torch.randint(0, 500, (1, 8)))
    assert abs(loss.item() - math.log(500)) < 1e-5


def test_generate_greedy_matches_argmax_of_full_forward():
    config = CONFIGS["gqa"]
    model = make_model(config, dtype=torch.float32)
    prompt = [3, 1, 4, 1, 5]
    out = list(model.generate(prompt, 8, temperature=0))
    ids = list(prompt)
    for _ in range(8):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert out == ids[len(prompt):]


def test_generate_sampling_is_seeded_and_top_k_restricts():
    config = CONFIGS["mha"]
    model = make_model(config, dtype=torch.float32)
    a = list(model.generate([1, 2], 12, temperature=1.0, seed=7))
    assert a == list(model.generate([1, 2], 12, temperature=1.0, seed=7))
    assert a != list(model.generate([1, 2], 12, temperature=1.0, seed=8))
    for off in (None, 0):  # "off" must not crash and must equal no top-k at all
        assert list(model.generate([1, 2], 6, top_k=off, seed=3)) == list(model.generate([1, 2], 6, seed=3))
    # top_k=1 is greedy whatever the temperature
    assert list(model.generate([1, 2], 6, top_k=1, temperature=2.0)) == list(model.generate([1, 2], 6, temperature=0))


class OpLog(TorchDispatchMode):
    """Every aten op a forward runs, with weak references to its output tensors and the ids of the tensors it read.
    `keep=True` also holds the outputs (so that ids stay unique while the log is alive)."""

    def __init__(self, keep: bool = False):
        super().__init__()
        self.keep = keep
        self.ops: list[tuple[str, list]] = []  # (op name, its outputs: strong refs if keep else weakrefs)
        self.read: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.read |= {id(a) for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        tensors = [o for o in tree_leaves(out) if isinstance(o, torch.Tensor)]
        self.ops.append((func.overloadpacket.__name__, tensors if self.keep else [weakref.ref(o) for o in tensors]))
        return out


def unused_results(model, idx, recorder) -> tuple[torch.Tensor, list[tuple[str, list]]]:
    """(logits, the ops whose outputs no later op read and that are not the logits): work the forward did for
    nothing but the recorder."""
    with torch.no_grad(), OpLog(keep=True) as log:
        out = model(idx, recorder=recorder)
    return out, [(name, outs) for name, outs in log.ops
                 if not any(id(o) in log.read or o is out for o in outs)]


def alive_after(model, idx, recorder) -> list[torch.Tensor]:
    """The tensors that the forward's ops made and that are still alive once its output is dropped."""
    with torch.no_grad(), OpLog() as log:
        model(idx, recorder=recorder)
    return [t for _, refs in log.ops for r in refs if (t := r()) is not None]


def test_recorder_costs_nothing_when_off_and_records_every_point():
    config = CONFIGS["gqa"]
    model = make_model(config)
    idx = torch.randint(0, config.vocab_size, (2, 6))
    rec = Recorder()
    out = model(idx, recorder=rec)
    assert torch.equal(out, model(idx))
    # off costs nothing: every op of the forward feeds the logits (none computes a value only a recorder would
    # read, such as a tap's argument), and once the logits are dropped no tensor of the forward stays alive
    off, unused = unused_results(model, idx, None)
    assert torch.equal(off, out)
    assert [name for name, _ in unused] == []
    assert [tuple(t.shape) for t in alive_after(model, idx, None)] == []
    # on, recording adds one detach per point and nothing else, and keeps exactly the recorded tensors
    on = Recorder()
    _, unused = unused_results(model, idx, on)
    assert [name for name, _ in unused] == ["detach"] * len(on)
    assert {id(t) for _, outs in unused for t in outs} == {id(t) for t in on.values()}
    on = Recorder()
    assert {id(t) for t in alive_after(model, idx, on)} == {id(t) for t in on.values()}

    class Spy(Recorder):  # the model calls its recorder once per point, never twice
        def __call__(self, name, tensor):
            calls.append(name)
            super().__call__(name, tensor)

    calls = []
    model(idx, recorder=Spy())
    per_block = ["input", "attn.q", "attn.k", "attn.v", "attn.y", "attn.out", "resid_mid", "mlp.hidden", "mlp.out",
                 "output"]
    expected = {"rotary.cos", "rotary.sin", "embed", "embed_norm", "final_norm", "logits_raw", "logits"}
    expected |= {f"blocks.{i}.{n}" for i in range(config.n_layer) for n in per_block}
    assert set(rec) == expected
    assert sorted(calls) == sorted(expected)
    assert rec["blocks.0.attn.q"].shape == (2, 4, 6, 8) and rec["blocks.0.attn.k"].shape == (2, 2, 6, 8)
    # 4a87a0d softcaps in the compute dtype (here float64), then casts the logits to float32
    torch.testing.assert_close(rec["logits"], (SOFTCAP * torch.tanh(rec["logits_raw"] / SOFTCAP)).float())
    # the residual stream is the sum of what each sublayer wrote
    torch.testing.assert_close(rec["blocks.1.output"],
                               rec["blocks.1.input"] + rec["blocks.1.attn.out"] + rec["blocks.1.mlp.out"])
    only = Recorder(names={"logits"})
    model(idx, recorder=only)
    assert set(only) == {"logits"}


def test_fused_qkv_is_the_same_forward_and_is_checked_where_a_model_is_prepared(tiny_tokenizer):
    """Fusion is decided once (fuse_qkv, where a model is prepared for inference) and trusted by forward: a .to()
    keeps it right by fusing again; a weight replaced afterwards is caught by check_fused, which every serving path
    runs (Engine, StaticDecoder), and fuse_qkv() again computes with the new weight."""
    from gpt.engine import Engine

    config = CONFIGS["gqa"]
    model = make_model(config, dtype=torch.float32)
    idx = torch.randint(0, config.vocab_size, (2, 9))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = reference_forward(before, config, idx)
    unfused = model(idx)
    model.fuse_qkv()
    assert all(block.attn.is_fused() for block in model.transformer.h)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    fused = model(idx)
    torch.testing.assert_close(fused, unfused, rtol=1e-6, atol=1e-6)  # one matmul vs three: fp32 rounding only
    torch.testing.assert_close(fused.double(), ref, rtol=1e-5, atol=1e-5)
    # a dtype round trip converts the three weights one by one: the layer fuses them again, same function
    model.to(torch.float64).to(torch.float32)
    assert all(block.attn.is_fused() for block in model.transformer.h)
    torch.testing.assert_close(model(idx).double(), ref, rtol=1e-5, atol=1e-5)
    # replacing a weight breaks the sharing: refused where the model is prepared, until fused again
    attn = model.transformer.h[1].attn
    attn.c_k.weight = torch.nn.Parameter(attn.c_k.weight.detach() * 2)
    assert not attn.is_fused() and model.transformer.h[0].attn.is_fused()
    with pytest.raises(RuntimeError, match="layer 1"):
        model.check_fused()
    big = make_model(replace(config, vocab_size=tiny_tokenizer.vocab_size), dtype=torch.float32)
    big.fuse_qkv()
    big.transformer.h[0].attn.c_v.weight = torch.nn.Parameter(big.transformer.h[0].attn.c_v.weight.detach().clone())
    for batched in (False, True):
        with pytest.raises(RuntimeError, match="layer 0"):
            Engine(big, tiny_tokenizer, batched=batched)
    model.fuse_qkv()
    model.check_fused()
    sd = model.state_dict()
    torch.testing.assert_close(model(idx).double(), reference_forward(sd, config, idx), rtol=1e-5, atol=1e-5)
