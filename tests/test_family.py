"""The nanochat family (gpt/nanochat/): every forward nanochat had loads from the files nanochat wrote and computes
what nanochat computed.

Two independent references:
- tests/fixtures/nanochat/<commit>/: trees written by nanochat's own save code at each commit where the forward
  changed, with the logits and greedy continuation nanochat's own model code computed on them (README.md there says
  how). They load through gpt.anywhere.load and must reproduce nanochat (float32, relative error < 1e-4).
- `forward64` below (`reference_forward` for a batch): the forward written out from nanochat's definitions in float64,
  one `if` per feature, sharing no code with gpt/nanochat/ (it reads only the weights). Every member, random weights,
  across window edges.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gpt import nanochat
from gpt.anywhere import load
from gpt.checkpoint import CheckpointError
from gpt.kv_cache import KVCache, RowKVCache

FIXTURES = Path(__file__).parent / "fixtures" / "nanochat"
# commit of the tree -> the member it must load as without --arch (the files of the three commits of 2026-01-16 ..
# 2026-03-04 are byte-identical: the first is the default, the others need --arch)
LOADS_AS = {"4a87a0d": "4a87a0d", "f1bf69d": "f1bf69d", "aa530cd": "aa530cd", "fbc1484": "fbc1484",
            "e85db6b": "e85db6b", "aba30cb": "e85db6b", "1076f97": "e85db6b", "6ed7d1d": "6ed7d1d",
            "a825e63": "a825e63", "92d63d4": "a825e63"}
# trees of short-lived experiments no release computed with (one afternoon, or reverted): refused, naming what fits not
REFUSED = {"9a88194": "v0_lambdas", "e3f58b8": "v0_lambdas", "0b58d70": "v0_lambdas", "59e36cc": "unexpected"}


def reference(commit: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / commit / "reference.safetensors")


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.mark.parametrize("commit", sorted(LOADS_AS))
def test_a_tree_nanochat_wrote_loads_and_computes_as_nanochat(commit):
    """The member is read off the files; where the files cannot tell (softcap 20, rotary dtype), --arch picks the
    commit, and then the logits are nanochat's."""
    found = load(FIXTURES / commit, device="cpu", dtype="float32")
    assert found.arch == LOADS_AS[commit]
    if LOADS_AS[commit] != nanochat.member(commit).name:
        assert commit in found.same_files  # the header's model card says which versions look the same
        found = load(FIXTURES / commit, device="cpu", dtype="float32", arch=commit)
    ref = reference(commit)
    with torch.no_grad():
        logits = found.model(ref["ids"])[0, ref["positions"]]
    assert relative_error(logits, ref["logits"]) < 1e-4
    prompt = ref["ids"][0, :40].tolist()
    assert list(found.model.generate(prompt, len(ref["greedy"]), temperature=0)) == ref["greedy"].tolist()


@pytest.mark.parametrize("commit", ["aba30cb", "1076f97"])
def test_the_files_cannot_tell_these_apart_and_the_default_is_wrong_for_them(commit):
    """What the override is for: read with the default member (e85db6b: softcap 15, bf16-rounded rotary), these two
    trees give logits measurably different from nanochat's (softcap 20; rotary in float32)."""
    found = load(FIXTURES / commit, device="cpu", dtype="float32")
    ref = reference(commit)
    with torch.no_grad():
        logits = found.model(ref["ids"])[0, ref["positions"]]
    assert relative_error(logits, ref["logits"]) > 1e-3


@pytest.mark.parametrize("commit", sorted(REFUSED))
def test_a_checkpoint_that_fits_no_forward_is_refused_naming_what_does_not_fit(commit):
    with pytest.raises(CheckpointError, match="fits no forward nanochat had") as e:
        load(FIXTURES / commit, device="cpu", dtype="float32")
    assert REFUSED[commit] in str(e.value)


def test_every_fixture_names_the_commit_it_came_from():
    for commit in [*LOADS_AS, *REFUSED]:
        assert json.loads((FIXTURES / commit / "reference.json").read_text())["commit"] == commit


# ---- a float64 reference of every feature ------------------------------------------------------------------------
def _rms(x: torch.Tensor) -> torch.Tensor:
    return x / x.pow(2).mean(-1, keepdim=True).add(torch.finfo(x.dtype).eps).sqrt()


def reference_forward(model: nanochat.GPT, idx: torch.Tensor) -> torch.Tensor:
    """Softcapped logits [B, T, V] of `forward64`, row by row."""
    return torch.stack([forward64(model, row)[0] for row in idx.tolist()])


def forward64(model: nanochat.GPT, ids: list[int], patch: tuple | None = None
              ) -> tuple[torch.Tensor, list[dict], dict[str, torch.Tensor]]:
    """nanochat's forward from its definitions (HISTORY.md), in float64, written out with plain loops over heads and
    one `if` per feature: only the weights and the switches come from `model`. Returns the softcapped logits [T, V],
    the stream before each block {x, x0, kept, tokens} and each block's attention and MLP output ("attn{i}",
    "mlp{i}"). patch = ("resid", layer, p, clean_states): before block `layer`, position p of the stream and the
    token the value embeddings read come from a clean run's states; ("attn" | "mlp", layer, p, clean_outputs): that
    output at p (tests/test_why.py's activation patching)."""
    f, c = model.features, model.config
    W = {k: v.double() for k, v in model.state_dict().items()}
    T, H, Hkv, C = len(ids), c.n_head, c.n_kv_head, c.n_embd
    hd = C // H
    # rotary tables
    inv = 1.0 / (f.rotary_base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    cos, sin = ang.cos(), ang.sin()
    if f.rotary_bf16:
        cos, sin = cos.bfloat16().double(), sin.bfloat16().double()

    def rotate(x):  # [T, hd]
        x1, x2 = x[:, : hd // 2], x[:, hd // 2:]
        return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], -1)

    short = f.short_window_of(c.sequence_len)
    pattern = c.window_pattern.upper()
    back = torch.arange(T)[:, None] - torch.arange(T)[None, :]  # how far back key j is from query t
    tokens = torch.tensor(ids)
    e = _rms(W["transformer.wte.weight"][tokens])  # [T, C]
    x = e.clone()
    if f.smear:
        g = torch.sigmoid(e[:, :24] @ W["smear_gate.weight"].T) * W["smear_lambda"]
        x[1:] = e[1:] + g[1:] * e[:-1]
    x0, kept, states, outs = x, None, [], {}
    for i in range(c.n_layer):
        if patch is not None and patch[:2] == ("resid", i):
            p, clean = patch[2], patch[3][i]
            x, x0, tokens = x.clone(), x0.clone(), tokens.clone()
            x[p], x0[p], tokens[p] = clean["x"][p], clean["x0"][p], clean["tokens"][p]
            if kept is not None:
                kept = kept.clone()
                kept[p] = clean["kept"][p]
        states.append(dict(x=x, x0=x0, kept=kept, tokens=tokens))
        pre = f"transformer.h.{i}."
        if f.lambdas:
            x = W["resid_lambdas"][i] * x + W["x0_lambdas"][i] * x0
        a = _rms(x)
        q = (a @ W[pre + "attn.c_q.weight"].T).view(T, H, hd)
        k = (a @ W[pre + "attn.c_k.weight"].T).view(T, Hkv, hd)
        v = (a @ W[pre + "attn.c_v.weight"].T).view(T, Hkv, hd)
        if f.value_embeds and i % 2 == (c.n_layer - 1) % 2:
            gate = f.ve_gate_scale * torch.sigmoid(a[:, : f.ve_gate_channels] @ W[pre + "attn.ve_gate.weight"].T)
            v = v + gate[..., None] * W[f"value_embeds.{i}.weight"][tokens].view(T, Hkv, hd)
        if f.windows:
            w = c.sequence_len if i == c.n_layer - 1 or pattern[i % len(pattern)] == "L" else short
        else:
            w = T
        hidden = (back < 0) | (back > w)  # the future, and keys further back than the window
        y = torch.zeros(T, H, hd, dtype=torch.float64)
        for h in range(H):
            g_ = h // (H // Hkv)
            qh, kh = _rms(rotate(q[:, h])) * f.qk_scale, _rms(rotate(k[:, g_])) * f.qk_scale
            scores = (qh @ kh.T / math.sqrt(hd)).masked_fill(hidden, -math.inf)
            y[:, h] = torch.softmax(scores, -1) @ v[:, g_]
        for name in ("attn", "mlp"):
            if name == "attn":
                out = y.reshape(T, C) @ W[pre + "attn.c_proj.weight"].T
            else:
                out = torch.relu(_rms(x) @ W[pre + "mlp.c_fc.weight"].T).square() @ W[pre + "mlp.c_proj.weight"].T
            if patch is not None and patch[:2] == (name, i):
                out = out.clone()
                out[patch[2]] = patch[3][f"{name}{i}"][patch[2]]
            outs[f"{name}{i}"] = out
            x = x + out
        if f.backout and i == c.n_layer // 2:
            kept = x
    if kept is not None:
        x = x - W["backout_lambda"] * kept
    raw = (_rms(x) @ W["lm_head.weight"].T)[:, : c.vocab_size]
    return f.softcap * torch.tanh(raw / f.softcap), states, outs


def noisy(model: nanochat.GPT, seed: int) -> nanochat.GPT:
    """Every parameter nonzero and away from its init, so that each feature changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if p.ndim < 2 else 1.0 / math.sqrt(p.size(-1))
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
            if name in ("smear_lambda", "backout_lambda"):
                p.fill_(0.4)
    return model


# A small config: the short window L/2 = 48 (fbc1484 .. 1076f97) bites within 70 positions, and past 97 positions the
# long one (96) does too; the later members' short windows round up to 128 (a tile). Small enough for the loops below.
SMALL = nanochat.GPTConfig(sequence_len=96, vocab_size=100, n_layer=4, n_head=4, n_kv_head=2, n_embd=32,
                           window_pattern="SSSL")


def family_model(which: nanochat.Member, seed: int = 0, config: nanochat.GPTConfig = SMALL) -> nanochat.GPT:
    torch.manual_seed(seed)
    model = nanochat.new_model(config, which)
    model.init_weights()
    return noisy(model, seed).double().eval()


@pytest.mark.parametrize("which", nanochat.MEMBERS, ids=lambda m: m.name)
def test_every_member_matches_the_float64_reference(which):
    model = family_model(which)
    idx = torch.randint(0, SMALL.vocab_size, (2, 110), generator=torch.Generator().manual_seed(1))  # past L = 96
    with torch.no_grad():
        ours = model(idx)  # float32 logits (nanochat casts them), from a float64 trunk: float32 rounding at most
    assert ours.dtype == torch.float32
    assert (ours.double() - reference_forward(model, idx)).abs().max() < 1e-5


def test_the_reference_sees_each_feature():
    """Flipping one switch changes the reference's logits, so the reference test above is not vacuous for it."""
    idx = torch.randint(0, SMALL.vocab_size, (1, 70), generator=torch.Generator().manual_seed(2))
    base = nanochat.TODAY
    model = family_model(base)
    logits = reference_forward(model, idx)
    for switch, other in (("softcap", 20.0), ("qk_scale", 1.0), ("rotary_base", 10000.0), ("ve_gate_scale", 2.0),
                          ("short_window", (2, 1)), ("rotary_bf16", True)):
        twin = dataclasses.replace(base, features=dataclasses.replace(base.features, **{switch: other}))
        changed = nanochat.new_model(SMALL, twin).double()
        changed.load_state_dict(model.state_dict())
        assert not torch.allclose(reference_forward(changed, idx), logits, atol=1e-6), switch


@pytest.mark.parametrize("which", nanochat.MEMBERS, ids=lambda m: m.name)
def test_cached_decode_equals_the_full_forward_across_window_edges(which):
    """A prefill, then one token at a time, then a chunk: every position's logits as the full forward's, past the
    short window (48 keys back for fbc1484..e85db6b) and, for members with windows, past the long one (sequence_len
    96: an L layer slides too)."""
    model = family_model(which, seed=3)
    T = 110
    idx = torch.randint(0, SMALL.vocab_size, (1, T), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache.for_model(model, 1, T)
        parts = [model(idx[:, :30], kv_cache=cache)]
        parts += [model(idx[:, t: t + 1], kv_cache=cache) for t in range(30, 100)]
        parts.append(model(idx[:, 100:], kv_cache=cache))
    assert (torch.cat(parts, 1) - full).abs().max() < 1e-5  # float32 logits of a float64 trunk


@pytest.mark.parametrize("which", nanochat.MEMBERS, ids=lambda m: m.name)
def test_the_last_block_on_the_last_position_alone_gives_the_full_forwards_last_logits(which):
    """run_blocks(last_only=True) (explain reads only the last logits): the last block works out the last position
    alone, with every key, whole (past both windows), as a chunk after a cached prefix and for rows at different
    positions (a RowKVCache's masks); its logits are the full forward's at the last position."""
    model = family_model(which, seed=5)
    T = 110
    idx = torch.randint(0, SMALL.vocab_size, (2, T), generator=torch.Generator().manual_seed(6))

    def last_logits(x, kept):  # the head on the last residual (and the kept one, for the backout)
        return model.head(x) if kept is None else model.head(x, x_backout=kept[:, -1:])

    with torch.no_grad():
        want = model(idx)[:, -1]
        for prefix in (0, 70):
            cache = KVCache.for_model(model, 2, T)
            if prefix:
                model(idx[:, :prefix], kv_cache=cache)
            chunk = idx[:, prefix:]
            x, kept = model.run_blocks(model.embed(chunk, cache), model.rotary_at(T - prefix, cache), cache,
                                       idx=chunk, last_only=True)
            assert x.shape == (2, 1, SMALL.n_embd)
            assert (last_logits(x, kept)[:, 0] - want).abs().max() < 1e-5, prefix
        # rows at different positions (a RowKVCache: its attention masks, the last query's row of them)
        lengths, n = (70, 45), 25
        cache = RowKVCache.for_model(model, 2, T)
        for row, length in enumerate(lengths):
            model(idx[row: row + 1, :length], kv_cache=cache.step(T, rows=torch.tensor([row])))
            cache.pos[row] = length
        chunk = torch.stack([idx[row, length: length + n] for row, length in enumerate(lengths)])
        step = cache.step(T, batch=2)
        x, kept = model.run_blocks(model.embed(chunk, step), model.rotary_at(n, step), step, idx=chunk,
                                   last_only=True)
        got = last_logits(x, kept)
        for row, length in enumerate(lengths):
            want = model(idx[row: row + 1, : length + n])[0, -1]
            assert (got[row, 0] - want).abs().max() < 1e-5, row


def test_window_sizes_follow_each_members_rule():
    """S = L // 2 at fbc1484, ceil(L / 3 / 128)·128 at 6ed7d1d, ceil(L / 4 / 128)·128 from a825e63; L layers reach
    sequence_len back (FlashAttention-3's window (L, 0)); the last layer is always L; no windows before fbc1484."""
    config = dataclasses.replace(SMALL, sequence_len=1024)
    sizes = {m.name: nanochat.new_model(config, m).window_sizes for m in nanochat.MEMBERS}
    assert sizes["fbc1484"] == [512, 512, 512, 1024]
    assert sizes["6ed7d1d"] == [384, 384, 384, 1024]
    assert sizes["a825e63"] == [256, 256, 256, 1024]
    assert sizes["aa530cd"] == sizes["4a87a0d"] == [None] * 4


# ---- the model's answers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", nanochat.MEMBERS, ids=lambda m: m.name)
def test_recording_points_are_what_the_forward_records(which):
    from gpt.recorder import Recorder

    model = family_model(which)
    rec = Recorder()
    with torch.no_grad():
        model(torch.zeros(1, 5, dtype=torch.long), recorder=rec)
    assert list(rec) == model.recording_points()


@pytest.mark.parametrize("which", nanochat.MEMBERS, ids=lambda m: m.name)
def test_flops_and_kv_bytes_count_the_real_tensors(which):
    """FLOPs per token: 2 per weight of every matmul the token goes through, counted here from the state_dict's
    shapes (embeddings are lookups), plus 4·C per key read; KV bytes: the cache's own tensor size per position."""
    model = family_model(which).float()
    matmul = sum(v.numel() for k, v in model.state_dict().items()
                 if k.endswith(".weight") and "wte" not in k and "value_embeds" not in k)
    keys = sum(min(40, (w if w is not None else 10**9) + 1) for w in model.window_sizes)
    assert model.flops_per_token(40) == 2 * matmul + 4 * SMALL.n_embd * keys
    cache = KVCache.for_model(model, 1, 10)
    assert model.kv_bytes_per_token() * 10 == cache.kv.numel() * cache.kv.element_size()


def test_the_feature_card_lists_what_each_member_adds_in_order():
    names = [[name for name, _, _ in nanochat.new_model(SMALL, m).feature_card()] for m in nanochat.MEMBERS]
    assert names[0] == []  # the tutorial adds nothing
    for earlier, later in zip(names, names[1:]):
        assert set(earlier) <= set(later) or "softcap" in earlier  # features accumulate (softcap 20 came and went)
    assert names[-1][-2:] == ["smear", "backout"]


def test_an_unknown_version_is_refused_naming_the_known_ones():
    with pytest.raises(nanochat.FamilyError, match="4a87a0d.*a825e63"):
        nanochat.member("nanochat-2027-01")


@pytest.mark.parametrize("commit", sorted(set(LOADS_AS.values())))
def test_the_chat_server_decodes_every_member_as_nanochat(commit):
    """The batched server's decoder (gpt/fast.py: static per-row cache, tensor-only sampling) on the trees nanochat
    wrote: two rows at different positions decoded together, greedy, each row's tokens nanochat's own greedy
    continuation."""
    from gpt.fast import StaticDecoder

    model = load(FIXTURES / commit, device="cpu", dtype="float32", arch=commit).model
    ref = reference(commit)
    decoder = StaticDecoder(model, 2, graphs=False)
    prompts = [ref["ids"][0, :40].tolist(), ref["ids"][0, :40].tolist()[5:]]  # row 1: another prompt, shorter
    first = [int(decoder.prefill(row, p, None)) for row, p in enumerate(prompts)]
    steps = [decoder.decode(2, 0, None).tolist() for _ in range(len(ref["greedy"]) - 1)]
    row0 = [first[0]] + [s[0] for s in steps]
    assert row0 == ref["greedy"].tolist()
    row1 = [first[1]] + [s[1] for s in steps]
    assert row1 == list(model.generate(prompts[1], len(row1), temperature=0))


@pytest.mark.parametrize("commit", sorted(set(LOADS_AS.values())))
def test_the_export_to_transformers_converts_what_it_can_and_names_what_it_cannot(commit, tmp_path):
    """The tutorial's forward converts; f1bf69d's too (the padded rows are never read: cropped, and the folder read
    back gives nanochat's logits); every later member is refused, naming each feature transformers has no place for."""
    from gpt.hf_format import from_transformers, to_transformers

    found = load(FIXTURES / commit, device="cpu", dtype="float32")
    blocked = {"lambdas": "lambdas", "windows": "sliding-window", "value_embeds": "value embeddings",
               "smear": "smear", "backout": "backout", "qk_scale": "scale on q and k"}
    missing = [words for name, words in blocked.items() if name in found.model.features.changed()]
    if missing:
        with pytest.raises(CheckpointError) as e:
            to_transformers(found.model, found.tokenizer, tmp_path)
        assert all(words in str(e.value) for words in missing), str(e.value)
        return
    to_transformers(found.model, found.tokenizer, tmp_path)
    back = from_transformers(tmp_path, device="cpu", dtype="float32")
    ref = reference(commit)
    with torch.no_grad():
        logits = back.model(ref["ids"])[0, ref["positions"]]
    assert back.model.padded_vocab == 300  # cropped
    # transformers' format keeps no bf16 rounding of the rotary tables: read back, the tutorial's rounding is redone
    assert relative_error(logits, ref["logits"]) < 1e-4


@pytest.mark.parametrize("which", nanochat.MEMBERS[1:], ids=lambda m: m.name)
def test_then_and_now_compares_the_tutorial_with_any_member(which):
    """Either order; the table's "new" rows are exactly the recording points the later member's features add, and
    the text names each feature that differs, in both languages."""
    from explain.then_now import then_now_view
    from text import t

    old, new = family_model(nanochat.TUTORIAL).float(), family_model(which).float()
    ids = [[5, 9, 13, 2, 7, 1]]
    for lang in ("en", "zh"):
        view = then_now_view(new, old, None, ids, lang)  # either order: the earlier member is "then"
        new_rows = set(view.df.loc[view.df["status"] == t("view.then_now.status.new", lang), "name"])
        assert new_rows == set(new.recording_points()) - set(old.recording_points())
        for name, _ in nanochat.CARD:  # the card's switches (a gate's scale goes with its channels, ...)
            if name in which.features.changed():
                assert t(f"feature_title.{name}", lang) in view.text
    with pytest.raises(ValueError, match="two different"):
        then_now_view(new, family_model(which, seed=1).float(), None, ids)


@pytest.mark.parametrize("commit", ["4a87a0d", "aba30cb", "92d63d4"])
def test_the_app_serves_a_tree_and_its_card_says_which_nanochat(commit):
    """What `python app.py --model TREE [--arch COMMIT]` does (demo.models.load): the tree is served, not the
    fallback, and the header and the model card name the version and its features; files several versions write
    alike are flagged on the card."""
    from demo.models import describe, load as app_load, model_card
    from text import t

    models = app_load(model=str(FIXTURES / commit), device="cpu")
    assert models.notice == "" and models.main.source.startswith(str(FIXTURES / commit))
    member = nanochat.member(LOADS_AS[commit])
    assert f"`{member.name}` ({member.date})" in describe(models.main, "zh")
    card = model_card(models.main, "zh")
    for name, _ in nanochat.CARD:
        assert (t(f"feature_title.{name}", "zh") in card) == (name in member.features.changed())
    assert ("--arch" in card) == (commit == "aba30cb")
    forced = app_load(model=str(FIXTURES / commit), device="cpu", arch=commit)
    assert forced.main.arch == nanochat.member(commit).name


@pytest.mark.parametrize("commit", ["e85db6b", "a825e63"])
def test_a_warm_up_before_a_capture_leaves_no_trace(commit):
    """On a GPU every new step shape is run twice before it is captured as a CUDA graph (StaticDecoder.warm_up).
    Those runs must leave nothing behind: here each decode step is warmed up first, and the tokens must be those of
    a decoder that never warms up. (The smear's carried embedding once stayed overwritten: today's member then
    decoded wrong tokens under CUDA graphs only.)"""
    from gpt.fast import StaticDecoder

    model = load(FIXTURES / commit, device="cpu", dtype="float32", arch=commit).model
    ids = reference(commit)["ids"][0]
    plain, warmed = StaticDecoder(model, 2, graphs=False), StaticDecoder(model, 2, graphs=False)
    out = {}
    for name, decoder in (("plain", plain), ("warmed", warmed)):
        for row, prompt in enumerate((ids[:40].tolist(), ids[5:40].tolist())):
            decoder.prefill(row, prompt, None)
        steps = []
        for _ in range(12):
            if decoder is warmed:
                span = int(decoder.cache.pos[:2].max()) + 1
                decoder.warm_up(lambda: decoder._decode_fn(2, span, None))
            steps.append(decoder.decode(2, 0, None).tolist())
        out[name] = steps
    assert out["warmed"] == out["plain"]


@pytest.mark.parametrize("which", nanochat.MEMBERS, ids=lambda m: m.name)
def test_every_view_builds_for_every_member(which):
    """The Inside tab's views (and generate) on a model of each version, with a cached prefix: each is made, and the
    views that read the recorded stream see this version's own points (smear, backout, value-embedding gates)."""
    from explain import build_all

    model = family_model(which).float()
    ids = torch.randint(0, SMALL.vocab_size, (1, 60), generator=torch.Generator().manual_seed(5)).tolist()
    views = build_all(model, None, ids, "zh", layer=1, head=1, cached=20, gen_tokens=3)
    from explain.build import VIEWS

    assert list(views) == list(VIEWS)
    shapes = views["shapes"].df["name"].tolist()
    # (the shapes walk shows one block for all: a value-embedding gate when the version has them on any layer)
    for point, feature in (("embed_smear", "smear"), ("backout", "backout"), ("blocks.0.attn.ve_gate", "value_embeds")):
        assert (point in shapes) == model.has_point(feature), point


@pytest.mark.parametrize("which", [nanochat.TUTORIAL, nanochat.member("fbc1484")], ids=lambda m: m.name)
def test_forward_flops_is_the_sum_over_its_tokens(which):
    """The closed form the budgets use equals flops_per_token summed token by token, inside and past the windows."""
    model = family_model(which).float()
    for T, T0 in ((1, 0), (30, 0), (70, 0), (5, 40), (60, 45), (1, 200)):
        assert model.forward_flops(T, T0) == sum(model.flops_per_token(T0 + i + 1) for i in range(T))
