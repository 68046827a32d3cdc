"""explain/: every view builds a non-empty table and a figure with data, for a tiny model with a real tokenizer and
for the tutorial's random-init config with input [2, 5]. (The text registry's own tests: test_text.py.)"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from explain.trace import sequence_labels
import torch

from explain import VIEWS, ViewResult, build_all, shapes_view
from explain.shapes import TUTORIAL_CONFIG, TUTORIAL_EXAMPLES
from gpt.nanochat import GPT, TUTORIAL, new_model


def check_views(views: dict[str, ViewResult]) -> None:
    assert list(views) == list(VIEWS)
    for name, v in views.items():
        assert isinstance(v.df, pd.DataFrame) and len(v.df) > 0, name
        assert isinstance(v.fig, go.Figure) and len(v.fig.data) > 0, name
        assert v.title and len(v.text) > 100 and "{" not in v.text and "{" not in v.title, name


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_all_views_tiny_model_with_tokenizer(tiny_model, tiny_tokenizer, lang):
    text = "The teacher asked the class a question. 老师问了一个问题。"
    views = build_all(tiny_model, tiny_tokenizer, text, lang=lang, layer=1, head=3, position=4)
    check_views(views)
    ids = tiny_tokenizer.encode(text)
    labels = sequence_labels(tiny_tokenizer, ids)  # the characters split over byte tokens shown as characters
    assert any("(1/" in label for label in labels) and "\\x" not in "".join(labels)
    att = views["attention"].df
    assert set(att["query_token"]) <= set(labels) and att["layer"].eq(1).all() and att["head"].eq(3).all()
    nt = views["next_token"].df
    assert nt["position"].nunique() == len(ids)
    if lang == "zh":
        assert "注意力" in views["attention"].text and "forward" in views["shapes"].title


@pytest.fixture(scope="module")
def tutorial_model() -> GPT:
    torch.manual_seed(0)
    model = new_model(TUTORIAL_CONFIG)  # the tutorial's forward (4a87a0d)
    model.init_weights()  # nanochat's init: lm_head is zero, so every logit is exactly 0 (uniform predictions)
    return model


def test_all_views_tutorial_config_batch_of_two(tutorial_model):
    idx = [[100, 200, 300, 400, 500], [600, 700, 800, 900, 1000]]
    views = build_all(tutorial_model, None, idx)
    check_views(views)
    shapes = views["shapes"].df.set_index("name")
    assert shapes.loc["return logits", "concrete"] == "[2, 5, 50304]"
    assert shapes.loc["idx", "concrete"] == "[2, 5]"
    # Random init: all logits 0 -> every position is a uniform guess with entropy ln V, loss ln V.
    np.testing.assert_allclose(views["next_token"].df["entropy"], np.log(50304), rtol=1e-5)
    np.testing.assert_allclose(views["training"].df["ce"].dropna(), np.log(50304), rtol=1e-5)
    assert views["training"].df["row"].nunique() == 2


def tutorial_boxes(B: int, T: int, T0: int) -> list[str]:
    """What each box of the forward picture must say, 'symbolic = concrete', for input [B, T] after T0 cached
    positions of TUTORIAL_CONFIG, the concrete shapes computed here from the config's numbers."""
    c = TUTORIAL_CONFIG
    C, H, Hkv, V, Tk = c.n_embd, c.n_head, c.n_kv_head, c.vocab_size, T0 + T
    hd = C // H
    boxes = [("[B, T]", [B, T]),  # idx
             ("[1, T, 1, hd/2]", [1, T, 1, hd // 2]),  # the rotary slice
             ("[B, T, C]", [B, T, C]), ("[B, T, C]", [B, T, C]),  # wte(idx), norm
             ("[B, H, T, hd]", [B, H, T, hd]), ("[B, Hkv, Tk, hd]", [B, Hkv, Tk, hd]),  # q, k
             ("[B, Hkv, Tk, hd]", [B, Hkv, Tk, hd]), ("[B, H, T, Tk]", [B, H, T, Tk]),  # v, attention weights
             ("[B, H, T, hd]", [B, H, T, hd]), ("[B, T, C]", [B, T, C]),  # y, x + c_proj(y)
             ("[B, T, 4C]", [B, T, 4 * C]), ("[B, T, C]", [B, T, C]),  # MLP hidden, final norm
             ("[B, T, V]", [B, T, V]), ("[B, T, V]", [B, T, V]), ("[B, T, V]", [B, T, V]),  # raw, softcap, returned
             ("[]", [])]  # the loss
    return [f"{sym} = [{', '.join(map(str, conc))}]" for sym, conc in boxes]


def test_tutorial_examples_as_views():
    for name, (B, T, T0) in TUTORIAL_EXAMPLES.items():
        view = shapes_view(TUTORIAL_CONFIG, TUTORIAL, B, T, T0, lang="zh")
        boxes = [a for a in view.fig.layout.annotations if a.text and "<br>" in a.text]  # '<b>label</b><br>shape'
        assert sorted(a.text.split("<br>")[1] for a in boxes) == sorted(tutorial_boxes(B, T, T0)), name
        centres = {((r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2) for r in view.fig.layout.shapes if r.type == "rect"}
        for a in boxes:  # each shape is written in the middle of a drawn box
            assert any(abs(x - a.x) < 1e-9 and abs(y - a.y) < 1e-9 for x, y in centres), (name, a.text)
    train = shapes_view(TUTORIAL_CONFIG, TUTORIAL, 2, 128).df.set_index("name")
    assert train.loc["loss", "concrete"] == "[]" and train.loc["logits", "concrete"] == "[2, 128, 50304]"


def test_kv_tutorial_example(tutorial_model):
    from explain.kvcache import kv_cache_view
    from explain.trace import trace_forward
    view = kv_cache_view(trace_forward(tutorial_model, [100, 200, 300, 400]), steps=[3, 1])
    assert list(view.df["T0"]) == [0, 3] and list(view.df["rotary_slice"]) == ["[0:3]", "[3:4]"]
    assert list(view.df["Tk"]) == [3, 4] and list(view.df["regime"]) == ["prefill", "one_query"]


def test_bad_input_gives_clear_errors(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        build_all(tiny_model, tiny_tokenizer, "")
    with pytest.raises(ValueError, match="context"):
        build_all(tiny_model, None, [1] * (tiny_model.config.sequence_len + 1))
    with pytest.raises(ValueError, match="token ids"):
        build_all(tiny_model, None, [tiny_model.config.vocab_size])
    with pytest.raises(ValueError, match="tokenizer"):
        build_all(tiny_model, None, "text without a tokenizer")
    with pytest.raises(ValueError, match="layer"):
        build_all(tiny_model, None, [1, 2, 3], layer=99)
    with pytest.raises(ValueError, match="unknown views"):
        build_all(tiny_model, None, [1, 2, 3], views=("nope",))


def test_single_token_prompt(tiny_model):
    check_views(build_all(tiny_model, None, [7]))
