"""Small things a user hits (issue 14), each against an independent computation: the training lesson's number of
examples, ranks of tied logits, the real next token's rank on the figure, subplot titles that fit, and why some
token labels are hex bytes."""
from __future__ import annotations

import re
import unicodedata

import numpy as np
import pytest
import torch

from explain import build_all
from explain.generate import generate_view
from explain.nexttoken import next_token_stats, next_token_view
from explain.shapes import TUTORIAL_CONFIG
from text import t, t_count
from explain.trace import trace_forward
from explain.training import training_view
from gpt.nanochat import GPT, new_model

LANGS = ("en", "zh")
STORY = "Once upon a time, there was a little"  # the presets of the Inside tab (demo/inside.py)
CHINESE = "今天天气不错，我们一起去"


@pytest.fixture(scope="module")
def tutorial_model() -> GPT:
    torch.manual_seed(0)
    model = new_model(TUTORIAL_CONFIG)  # the tutorial's forward (4a87a0d)
    model.init_weights()  # nanochat's init: lm_head is zero, so every logit is exactly 0
    return model.eval()


@pytest.fixture(scope="module")
def shipped():
    from gpt.checkpoint import DEFAULT_DIR, load_default

    if not (DEFAULT_DIR / "config.json").is_file():
        pytest.skip("no shipped model")
    return load_default(device="cpu")


# ---- 1. the training lesson says the number of examples the view shows ------------------------------------------
def test_training_lesson_says_how_many_examples_its_view_shows(tutorial_model):
    from demo.inside import PRESETS
    from demo.lessons import LESSONS, lesson_md
    from rules.inputs import parse_ids

    i, lesson = next((i, lesson) for i, lesson in enumerate(LESSONS) if lesson.settings.get("focus") == "training")
    req = parse_ids(PRESETS[lesson.settings["preset"]].ids, TUTORIAL_CONFIG.vocab_size)
    ids = req.ids
    trace = trace_forward(tutorial_model, ids)
    view = training_view(trace, next_ids=req.next_ids)  # as the app runs it (demo.inside: next_ids=req.next_ids)
    shown = int(view.df["ce"].notna().sum())  # one cross-entropy per position that has a target
    B, T = len(ids), len(ids[0])
    assert shown == B * T == 256  # nanochat's loader: every row fetched as T + 1 tokens, all B x T positions train
    # the loss the view reports is the cross-entropy of the logits against the rows' own next T tokens
    rows = torch.cat([torch.tensor(ids), torch.tensor(req.next_ids)[:, None]], dim=1)
    expected = torch.nn.functional.cross_entropy(trace.logits.reshape(B * T, -1).float(), rows[:, 1:].reshape(-1))
    assert abs(float(view.df["ce"].mean()) - float(expected)) < 1e-4
    for lang in LANGS:
        numbers = re.findall(r"\d+", lesson_md(lesson, i, lang))
        assert str(shown) in numbers and str(B * (T - 1)) not in numbers, (lang, numbers)


# ---- 2. tied logits share a rank, and the views say how many tokens they tie with --------------------------------
def test_rank_and_ties_against_numpy():
    from explain.common import rank_and_ties

    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (3, 7, 40), generator=gen).float()  # 6 values over 40 tokens: many ties
    ids = torch.randint(0, 40, (3, 7), generator=gen)
    rank, tied = rank_and_ties(scores, ids)
    s, i = scores.double().numpy(), ids.numpy()
    for b, p in np.ndindex(*i.shape):
        mine = s[b, p, i[b, p]]
        assert rank[b, p] == 1 + (s[b, p] > mine).sum()
        assert tied[b, p] == (s[b, p] == mine).sum() - 1


def test_all_tied_logits_are_rank_one_tied_with_every_other_token(tiny_model, tiny_tokenizer):
    with torch.no_grad():
        tiny_model.lm_head.weight.zero_()  # every logit exactly 0, as the random-init tutorial model
    trace = trace_forward(tiny_model, "The teacher asked the class", tiny_tokenizer)
    V = trace.config.vocab_size
    logits = trace.logits[0].double().numpy()
    nxt = trace.idx[0, 1:].numpy()
    higher = [(logits[p] > logits[p, k]).sum() for p, k in enumerate(nxt)]
    same = [(logits[p] == logits[p, k]).sum() - 1 for p, k in enumerate(nxt)]
    assert higher == [0] * len(nxt) and same == [V - 1] * len(nxt)  # the independent count

    s = next_token_stats(trace)
    np.testing.assert_array_equal(s["rank_next"], np.add(higher, 1))
    np.testing.assert_array_equal(s["tied_next"], same)
    for lang in LANGS:
        view = next_token_view(trace, lang=lang)
        np.testing.assert_array_equal(view.df.groupby("position")["tied_actual_next"].first()[:-1], same)
        rank_trace = next(d for d in view.fig.data if d.name == t("view.next_token.rank_next", lang))
        assert all(t_count("plot.tied_with", V - 1, lang) in label for label in rank_trace.text)
        assert t("view.next_token.ties", lang, n=len(nxt)) in view.text

        gen = generate_view(trace.model, trace.ids(), trace.tokenizer, max_tokens=3, top_k=None, lang=lang)
        assert (gen.df["rank_chosen"] == 1).all() and (gen.df["tied_chosen"] == V - 1).all()
        steps = gen.df.groupby("step")
        shown = steps.apply(lambda d: d["sampled"].any())  # the chosen token is one of the ten drawn
        labels = next(d for d in gen.fig.data if d.type == "heatmap").y
        assert len(labels) == len(shown)
        for label, drawn in zip(labels, shown):  # a token not drawn says where it was: rank 1, tied with the rest
            assert (t_count("plot.tied_with", V - 1, lang) in label.replace("<br>", " ")) != drawn, label


def test_no_tie_no_tie_sentence(tiny_model, tiny_tokenizer):
    view = next_token_view(trace_forward(tiny_model, "The teacher asked the class", tiny_tokenizer))
    assert (view.df["tied_actual_next"][view.df["actual_next_id"] >= 0] == 0).all()
    assert "tied" not in view.text


# ---- 3. the real next token's rank is on the figure ---------------------------------------------------------------
@pytest.mark.parametrize("lang", LANGS)
def test_next_token_figure_shows_the_real_next_tokens_rank(tiny_model, tiny_tokenizer, lang):
    trace = trace_forward(tiny_model, "The teacher asked the class a question.", tiny_tokenizer)
    logits = trace.logits[0].double().numpy()[:-1]
    nxt = trace.idx[0, 1:].numpy()
    assert all(len(np.unique(row)) == row.size for row in logits)  # no ties: a place in the sorted order is a rank
    order = np.argsort(-logits, axis=-1, kind="stable")
    expected = [int(np.flatnonzero(order[p] == k)[0]) + 1 for p, k in enumerate(nxt)]
    assert max(expected) > 1  # a perturbed model is not always right

    view = next_token_view(trace, lang=lang)
    ranks = next(d for d in view.fig.data if d.name == t("view.next_token.rank_next", lang))
    assert list(ranks.x) == list(range(len(nxt))) and list(ranks.y) == expected
    V = trace.config.vocab_size
    assert list(ranks.text) == [t("plot.rank_of", lang, rank=r, V=V) for r in expected]
    assert view.fig.layout[ranks.yaxis.replace("y", "yaxis")].type == "log"


# ---- 4. subplot titles fit their column, and the top margin holds them ---------------------------------------------
APP_WIDTH = 720  # px: a view's plot in the app: 3/5 of the Inside tab's row inside Gradio's 1280-px container
GLYPH_EM = 0.55  # a Latin glyph's average advance, in em (Arial's lowercase text is ~0.5 em: a little slack)
LINE_EM = 1.3  # a text line's height, in em


def units(text: str) -> int:
    """Width in Latin-glyph units: a CJK (wide or full-width) character is as wide as two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def subplot_titles(fig) -> list:
    """make_subplots' titles: paper-anchored annotations sitting on top of a subplot."""
    return [a for a in fig.layout.annotations if a.xref == "paper" and a.yref == "paper" and a.yanchor == "bottom"
            and a.showarrow is False and a.text]


def column_width(fig, x: float) -> float:
    """The paper width (0..1) of the subplot whose title is centred at x."""
    widths = [ax.domain[1] - ax.domain[0] for ax in fig.select_xaxes() if abs(sum(ax.domain) / 2 - x) < 1e-6]
    assert widths, x
    return max(widths)


def check_titles(name: str, fig) -> None:
    margin = fig.layout.margin
    plot_px = APP_WIDTH - margin.l - margin.r
    titles = subplot_titles(fig)
    for a in titles:
        size = a.font.size or 16  # make_subplots' own size
        # at most as many glyphs as fit in the column: px / (glyph width) units, a CJK character counting two
        most = int(column_width(fig, a.x) * plot_px / (GLYPH_EM * size))
        for line in a.text.split("<br>"):
            assert units(line) <= most, (name, line, units(line), most)
    if titles:
        top = max(a.y for a in titles)
        lines = max(a.text.count("<br>") + 1 for a in titles if a.y == top)
        size = max(a.font.size or 16 for a in titles)
        title_lines = fig.layout.title.text.count("<br>") + 1
        title_size = fig.layout.title.font.size
        needed = LINE_EM * (title_lines * title_size + lines * size)  # the figure's title above the top row's titles
        assert margin.t >= needed, (name, margin.t, needed)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("prompt", [STORY, CHINESE])
def test_subplot_titles_fit_the_figure(shipped, lang, prompt):
    views = build_all(shipped.model, shipped.tokenizer, prompt, lang=lang, position=4)
    assert sum(bool(subplot_titles(v.fig)) for v in views.values()) >= 6
    for name, view in views.items():
        check_titles(name, view.fig)


def test_subplot_titles_of_then_and_now_fit():
    from conftest import make_tiny_model
    from explain import then_now_view
    from test_explain_2026 import V, make_model_2026

    old, new = make_tiny_model(V, seed=3), make_model_2026()
    for lang in LANGS:
        check_titles("then_now", then_now_view(old, new, None, list(range(1, 40)), lang=lang).fig)


# ---- 5. labels that are part of a character say why they are hex bytes ---------------------------------------------
def partial(tokenizer, ids) -> list[bool]:
    """Whether each token's bytes are not whole UTF-8 characters (decoded here, not from the labels)."""
    out = []
    for i in ids:
        try:
            tokenizer.token_bytes(i).decode("utf-8")
            out.append(False)
        except UnicodeDecodeError:
            out.append(True)
    return out


PARTIAL_LABEL = re.compile(r"\\x[89a-f][0-9a-f]")  # how the tokenizer labels a byte of a split character


def shows_partial(view) -> bool:
    """A label of the view's table or figure holds a byte of a split character."""
    cells = [str(c) for col in view.df.select_dtypes(exclude="number").columns for c in view.df[col]]
    return any(PARTIAL_LABEL.search(c) for c in cells) or bool(PARTIAL_LABEL.search(view.fig.to_json()))


@pytest.mark.parametrize("lang", LANGS)
def test_hex_byte_labels_are_explained_exactly_when_shown(shipped, lang):
    tok = shipped.tokenizer
    assert any(partial(tok, tok.encode(CHINESE))) and not any(partial(tok, tok.encode(STORY)))
    note = t("plot.partial_bytes", lang)
    chars = t("plot.split_chars", lang)  # the prompt's byte tokens that form a character show it: 今(1/2), 今(2/2)
    for prompt in (CHINESE, STORY):
        views = build_all(shipped.model, tok, prompt, lang=lang)
        if prompt == CHINESE:  # the views that label the prompt's own tokens
            for name in ("mask", "attention", "training", "causality", "kv_cache", "next_token", "logit_lens"):
                assert chars in views[name].text, name
        else:
            assert note not in views["training"].text and chars not in views["training"].text
        for name, view in views.items():
            assert (note in view.text) == shows_partial(view), (prompt, name)
            shown = view.df.to_string() + view.fig.to_json()
            assert (chars in view.text) == bool(re.search(r"\(\d/\d\)|‹.›", shown)), (prompt, name)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_greedy_generate_says_no_seed_is_used_and_a_sampled_one_names_it(shipped, lang):
    """At temperature 0 GPT.generate takes the argmax: the view must not say a generator seeded 42 drew the tokens
    (it did, in both title and text, before); at temperature 1 it names the seed."""
    from explain.generate import generate_view

    model, tok = shipped.model, shipped.tokenizer
    ids = tok.encode("Once upon a time")
    greedy = generate_view(model, ids, tok, 3, temperature=0.0, top_k=None, seed=4242, lang=lang)
    sampled = generate_view(model, ids, tok, 3, temperature=1.0, top_k=None, seed=4242, lang=lang)
    assert "4242" not in greedy.title + greedy.text and "argmax" in greedy.text
    assert "4242" in sampled.title and "4242" in sampled.text and "argmax" not in sampled.text
