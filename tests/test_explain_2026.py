"""explain/ on today's nanochat (member a825e63 of gpt/nanochat/, which 92d63d4 computes the same), every number
against an independent computation: attention weights on sliding-window layers, the logit lens through the head with
its backout, the mask view's band, the flow picture's new boxes, every view in both languages, and the then-and-now
view of a tutorial model beside today's."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, perturbed
from explain import VIEWS, build_all, shapes_view, then_now_view
from explain.attention import attention_view, attention_weights
from explain.lens import lens_logits, logit_lens_view
from explain.mask import mask_view
from text import t
from explain.then_now import then_now_from_traces
from explain.trace import trace_forward
from gpt.nanochat import GPT, TODAY, GPTConfig, new_model
from gpt.recorder import POINTS, Recorder
from test_explain_views import check_views

V, T = 300, 180
CONFIG = dict(sequence_len=512, vocab_size=V, n_layer=4, n_head=4, n_kv_head=2, n_embd=32, window_pattern="SL")


def make_model_2026(seed: int = 0, **config) -> GPT:
    """A small GPT of today's member (a825e63): nanochat's init, then every parameter perturbed with seeded noise
    (the init zeroes the output projections, and sets smear to 0: outputs would not depend on much)."""
    torch.manual_seed(seed)
    return perturbed(new_model(GPTConfig(**{**CONFIG, **config}), TODAY), seed)


def expected_windows(sequence_len: int, pattern: str, n_layer: int) -> list[int]:
    """Keys back per layer, from nanochat's rule written out here: the pattern tiled, the last layer L; L = the context,
    S = a quarter of it rounded up to a multiple of 128."""
    short = math.ceil(sequence_len / 4 / 128) * 128
    sizes = [sequence_len if pattern[i % len(pattern)] == "L" else short for i in range(n_layer)]
    return sizes[:-1] + [sequence_len]


def band(n: int, w: int) -> np.ndarray:
    """[n, n] bool: query q may read key k iff k <= q and q - k <= w."""
    q, k = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return (k <= q) & (q - k <= w)


@pytest.fixture(scope="module")
def model() -> GPT:
    return make_model_2026()


@pytest.fixture(scope="module")
def ids() -> list[list[int]]:
    return torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(5)).tolist()


@pytest.fixture(scope="module")
def trace(model, ids):
    return trace_forward(model, ids)


def test_windows_are_nanochats(model):
    assert expected_windows(512, "SL", 4) == [128, 512, 128, 512]
    assert [b.attn.window for b in model.transformer.h] == expected_windows(512, "SL", 4)


def test_attention_weights_reproduce_recorded_output_on_windowed_layers(trace):
    H, Hkv = trace.config.n_head, trace.config.n_kv_head
    windows = expected_windows(512, "SL", 4)
    assert min(windows) < T - 1  # the S layers' window hides keys in this prompt
    for layer, w_back in enumerate(windows):
        w = attention_weights(trace, layer).double()
        v = trace.rec[f"blocks.{layer}.attn.v"].double()[:, [h * Hkv // H for h in range(H)]]
        torch.testing.assert_close(w @ v, trace.rec[f"blocks.{layer}.attn.y"].double(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
        allowed = torch.from_numpy(band(T, w_back))
        assert (w[..., ~allowed] == 0).all(), layer  # exactly 0 outside the band (and in the future)
        assert (w[..., allowed] > 0).all(), layer
        # The weights themselves, independently: float64 softmax over the band from the recorded q, k.
        q = trace.rec[f"blocks.{layer}.attn.q"].double()
        k = trace.rec[f"blocks.{layer}.attn.k"].double()[:, [h * Hkv // H for h in range(H)]]
        s = (q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))).masked_fill(~allowed, -math.inf)
        torch.testing.assert_close(w, s.softmax(-1), atol=1e-6, rtol=1e-5)
    # The S layers' weights differ from what a plain causal mask would give: the band matters.
    assert (attention_weights(trace, 0)[..., ~torch.from_numpy(band(T, 128)) & torch.ones(T, T).tril().bool()]
            == 0).all()


def test_attention_view_says_s_or_l_and_blanks_the_band(trace):
    for lang in ("en", "zh"):
        s_view = attention_view(trace, layer=0, head=1, row=1, position=150, window_size=64, lang=lang)
        assert s_view.title.startswith(t("view.attention.title", lang, layer=0, head=1, kv=0)
                                       + t("view.attention.kind_s", lang, w=128))
        assert t("view.attention.body_s_hides", lang, w=128, n=129, T=T, first=129, context=512) in s_view.text
        l_view = attention_view(trace, layer=1, head=0, lang=lang)
        assert t("view.attention.kind_l", lang) in l_view.title
        assert l_view.text.endswith(t("view.attention.body_l", lang, context=512))
    # Queries 87..150 over keys 87..150 and the summed earlier column: a key further than 128 back is not listed.
    df = attention_view(trace, layer=0, head=1, row=1, position=150, window_size=64).df
    shown = df[df["key_pos"] >= 0]
    assert ((shown["query_pos"] - shown["key_pos"]).between(0, 128)).all()
    w = attention_weights(trace, 0)[1, 1].double().numpy()
    for q in (87, 128, 129, 150):  # the summed column: only the earlier keys the window lets q see
        got = df[(df["query_pos"] == q) & (df["key_pos"] == -1)]["weight"].to_numpy()
        np.testing.assert_allclose(got, [w[q, max(0, q - 128):87].sum()], atol=1e-4)


def test_lens_goes_through_the_head_with_its_backout(model, trace):
    L, mid = model.config.n_layer, model.backout_layer
    assert mid == 2
    for row in range(trace.B):
        torch.testing.assert_close(lens_logits(trace, L, row), trace.logits[row], atol=0, rtol=0)
    # Independently, in float64: (x − λ·x_mid when block >= mid) -> rms norm -> lm_head cut to V -> softcap.
    lam = model.backout_lambda.detach().double()
    W = model.lm_head.weight.detach().double()[:V]

    def lens64(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        x = x / x.pow(2).mean(-1, keepdim=True).add(torch.finfo(torch.float32).eps).sqrt()
        return 15 * torch.tanh(x @ W.T / 15)

    x_mid = trace.rec[f"blocks.{mid}.output"][1]
    for layer in range(L + 1):
        x = trace.rec["embed_smear" if layer == 0 else f"blocks.{layer - 1}.output"][1]
        ref = lens64(x - lam * x_mid if layer - 1 >= mid else x)
        torch.testing.assert_close(lens_logits(trace, layer, 1).double(), ref, atol=2e-4, rtol=1e-4)
    view = logit_lens_view(trace, row=1, window_size=32)
    last = view.df[view.df["layer"] == f"block {L - 1}"].sort_values("position")
    np.testing.assert_array_equal(last["top_token_id"], trace.logits[1, T - 32:].argmax(-1).numpy())
    assert t("view.logit_lens.backout", "en", mid=mid, lam=float(lam)) in view.text


def test_mask_view_draws_the_band(model, trace):
    short = expected_windows(512, "SL", 4)[0]
    view = build_all(model, None, trace.ids(0), views=("mask",))["mask"]
    df = view.df
    win = df[df["regime"] == "window"]
    assert len(win) > 0 and len(view.fig.data) == 4
    q, k = win["query_pos"].to_numpy(), win["key_pos"].to_numpy()
    np.testing.assert_array_equal(win["allowed"].to_numpy(), (k <= q) & (q - k <= short))
    assert ((k <= q) & ~win["allowed"].to_numpy()).any()  # the band hides past keys somewhere
    assert (win.groupby("query_pos")["allowed"].sum() <= short + 1).all()
    assert {0, T - 1} <= set(q)  # the grid covers the whole prompt
    # (the title is wrapped to fit: <br> where it breaks)
    band_title = [a.text.replace("<br>", " ") for a in view.fig.layout.annotations if str(short) in a.text]
    assert band_title == [t("view.mask.window", "en", w=short, layers="0, 2")
                          + t("view.mask.window_step", "en", step=2)]
    # The three regimes stay the plain causal ones (the L layers'); a short prompt draws no band.
    for regime, sub in df[df["regime"] != "window"].groupby("regime"):
        assert (sub["allowed"] == (sub["key_pos"] <= sub["query_pos"])).all(), regime
    short_prompt = build_all(model, None, trace.ids(0)[:100], views=("mask",), lang="zh")["mask"]
    assert "window" not in set(short_prompt.df["regime"]) and len(short_prompt.fig.data) == 3
    assert t("view.mask.body_fits", "zh", w=short, n=short + 1, s_layers="0, 2", l_layers="1, 3", context=512,
             T=100) in short_prompt.text


def test_mask_view_of_a_2025_model_is_unchanged():
    old = make_tiny_model(V, seed=1, sequence_len=256)
    tokens = torch.randint(0, V, (200,), generator=torch.Generator().manual_seed(2)).tolist()
    view = build_all(old, None, tokens, views=("mask",))["mask"]
    plain = mask_view([f"#{i}" for i in tokens])
    assert view.df.equals(plain.df) and view.fig.to_json() == plain.fig.to_json() and view.text == plain.text


def test_the_flow_picture_grows_the_new_stages(model):
    def boxes(view):
        return [a.text.split("<br>")[0] for a in view.fig.layout.annotations if a.text and "<br>" in a.text]

    new = shapes_view(model.config, model.member, 1, 5)
    tutorial = make_tiny_model(V)
    old = shapes_view(tutorial.config, tutorial.member, 1, 5)
    added = [b for b in boxes(new) if b not in boxes(old)]
    assert added == ["<b>smear: x + λ·σ·x[t−1]</b>", "<b>λr·x + λ0·x0</b>", "<b>v += 3σ(gate)·ve</b>",
                     "<b>backout: x − λ·x_mid</b>"]
    assert set(boxes(old)) <= set(boxes(new))
    shapes = new.df.set_index("name")
    texts = {a.text.split("<br>")[0]: a.text.split("<br>")[1] for a in new.fig.layout.annotations
             if a.text and "<br>" in a.text}
    assert texts["<b>v += 3σ(gate)·ve</b>"] == "[B, T, Hkv] = [1, 5, 2]"
    assert shapes.loc["blocks.0.attn.ve_gate", "concrete"] == "[1, 5, 2]"
    assert texts["<b>backout: x − λ·x_mid</b>"] == "[B, T, C] = [1, 5, 32]"
    assert shapes.loc["lm_head.weight", "concrete"] == "[320, 32]"  # padded to a multiple of 64
    # The boxes keep their order down the page: norm, smear, mix, q, ..., MLP, backout, final norm.
    y = {a.text.split("<br>")[0]: a.y for a in new.fig.layout.annotations if a.text and "<br>" in a.text}
    order = ["<b>norm</b>", "<b>smear: x + λ·σ·x[t−1]</b>", "<b>λr·x + λ0·x0</b>", "<b>q</b>",
             "<b>MLP relu²</b>", "<b>backout: x − λ·x_mid</b>", "<b>final norm</b>", "<b>lm_head</b>"]
    assert [y[b] for b in order] == sorted((y[b] for b in order), reverse=True)
    assert y["<b>v += 3σ(gate)·ve</b>"] == y["<b>λr·x + λ0·x0</b>"] > y["<b>v</b>"]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_view_renders_for_a_2026_model(model, ids, lang):
    views = build_all(model, None, ids, lang=lang, layer=2, head=3, position=170, row=1)
    check_views(views)
    assert list(views) == list(VIEWS)
    assert t("view.attention.kind_s", lang, w=128) in views["attention"].title
    # the rotary base 100000 (nanochat 6ed7d1d on), said raised; full-precision tables (1076f97 on): no bf16 note
    rotary = views["rotary"].text
    assert t("view.rotary.note_base", lang, base="100000") + t("view.rotary.note_base_raised", lang) in rotary
    assert t("view.rotary.note_bf16", lang) not in rotary
    # the shapes text ends with the member's feature card: each switch a825e63 turns on, with the commit that added
    # it and this config's numbers, written out here (V 300 padded to 320 = 5·64, S = ceil(512/4/128)·128 = 128,
    # backout after block 4 // 2 = 2, gate 3·σ over 12 channels and q/k x 1.2 from 6ed7d1d/a825e63)
    numbers = dict(V=V, Vp=320, pattern="SL", S=128, L=512, scale="3", channels=12, base="100000", qk="1.2", mid=2)
    card = [("pad_vocab_to", "f1bf69d"), ("softcap_fp32", "bffdb2e"), ("lambdas", "aa530cd"), ("windows", "fbc1484"),
            ("value_embeds", "e85db6b"), ("rotary_bf16", "1076f97"), ("rotary_base", "6ed7d1d"),
            ("qk_scale", "6ed7d1d"), ("ve_gate_channels", "6ed7d1d"), ("smear", "a825e63"), ("backout", "a825e63")]
    items = [t("family.item", lang, name=t(f"feature_title.{name}", lang), commit=commit,
               what=t(f"feature.{name}", lang, **numbers)) for name, commit in card]
    assert views["shapes"].text.endswith("\n".join(items))
    assert "a825e63" in views["shapes"].text
    targets = torch.tensor(ids).roll(-1, 1).index_fill(1, torch.tensor([T - 1]), -1)  # the next token; none last
    with torch.no_grad():
        loss = float(model(torch.tensor(ids), targets=targets))
    np.testing.assert_allclose(views["training"].df["ce"].dropna().mean(), loss, rtol=1e-5)


@pytest.fixture(scope="module")
def old_model():
    return make_tiny_model(V, seed=3, n_layer=3, sequence_len=256)


def test_then_and_now_table_has_every_recorded_name_once(model, old_model, ids):
    prompt = ids[0][:150]
    view = then_now_view(old_model, model, None, prompt)
    df = view.df
    names_old, names_new = old_model.recording_points(), model.recording_points()
    assert df["name"].is_unique and set(df["name"]) == set(names_old) | set(names_new)
    # Each model's names in its forward order, each with the shape a forward of its own records.
    for m, names, column, rms_column in ((old_model, names_old, "shape_then", "rms_then"),
                                         (model, names_new, "shape_now", "rms_now")):
        assert df[df[column] != ""]["name"].tolist() == names
        rec = Recorder()
        with torch.no_grad():
            m(torch.tensor([prompt]), recorder=rec)
        assert set(rec) == set(names)
        shapes = df.set_index("name")[column]
        for name in names:
            assert shapes[name] == "[" + ", ".join(map(str, rec[name].shape)) + "]", name
        rms = df.set_index("name")[rms_column]
        for name in ("embed", "blocks.0.attn.q", "logits"):
            x = rec[name][0].double().numpy()
            assert rms[name] == pytest.approx(np.sqrt((x ** 2).mean()), rel=1e-4, abs=1e-5), name
    assert {p.name: p.feature for p in POINTS if p.feature is not None} == {
        "embed_smear": "smear", "blocks.{i}.attn.ve": "value_embeds", "blocks.{i}.attn.ve_gate": "value_embeds",
        "backout": "backout"}
    is_new = df["status"] == t("view.then_now.status.new", "en")
    assert set(df[is_new]["name"]) == {"embed_smear", "blocks.1.attn.ve", "blocks.1.attn.ve_gate", "blocks.3.attn.ve",
                                       "blocks.3.attn.ve_gate", "backout"}
    assert (df[df["name"].str.startswith("blocks.3.")]["shape_then"] == "").all()  # the tutorial model has 3 layers
    only = df[df["status"] == t("view.then_now.status.only_now", "en")]
    assert set(only["name"]) == {n for n in names_new if n.startswith("blocks.3.") and ".ve" not in n}
    changed = set(df[df["status"] == t("view.then_now.status.changed", "en")]["name"])
    assert {"blocks.0.attn.y", "blocks.2.attn.y", "blocks.1.attn.v", "final_norm", "logits_raw"} <= changed
    assert not {"blocks.1.attn.y", "blocks.0.attn.v", "embed", "logits"} & changed
    assert df.set_index("name").loc["blocks.0.attn.q", "rms_now"] == pytest.approx(1.2, rel=1e-3)  # q·1.2 (a825e63)
    assert df.set_index("name").loc["blocks.0.attn.q", "rms_then"] == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_then_and_now_view_in_both_languages(model, old_model, ids, lang):
    view = then_now_view(model, old_model, None, ids, lang=lang, row=1)  # either order
    assert view.name == "then_now" and "{" not in view.title and "{" not in view.text and len(view.text) > 500
    assert t("view.then_now.window_bites", lang, T=T, keys_last=129, S=128, n_window=129) in view.text
    rms, keys_old, keys_new = view.fig.data[0], view.fig.data[2], view.fig.data[3]
    assert list(keys_old.y) == [T] * 3 and list(keys_new.y) == [129, T, 129, T]
    assert "embed_smear" in rms.x and "backout" in rms.x and len(rms.x) == len(view.fig.data[1].y)
    same = then_now_from_traces(trace_forward(model, ids), trace_forward(old_model, ids), row=1, lang=lang)
    assert same.df.equals(view.df) and same.text == view.text
    with pytest.raises(ValueError, match="two different nanochat versions"):
        then_now_view(model, model, None, ids)


def test_flop_counts_follow_the_windows_and_the_padded_vocab(model):
    cfg = model.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))  # lm_head: 320 rows
    C = cfg.n_embd
    assert model.flops_per_token(1) == 2 * linear + 4 * cfg.n_layer * C
    keys = [min(300, w + 1) for w in expected_windows(512, "SL", 4)]  # S layers read 129 of 300 keys
    assert model.flops_per_token(300) == 2 * linear + 4 * C * sum(keys) == 2 * linear + 4 * C * (129 + 300) * 2
