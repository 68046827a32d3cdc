"""text/: every language has every key with the same placeholders, the one rule for unknown languages, table
headers for every column, and a third language added as one file reaches the whole UI."""
from __future__ import annotations

import json
import re

import pytest

from explain import build_all
from text import FOLDER, LANGS, LANGUAGES, keys, lang_code, read_folder, t

PLACEHOLDER = re.compile(r"{(\w+)")
FAKE = re.compile(r"⟦[^⟦⟧]*⟧")  # an innermost one: a string may hold others (a sentence chosen by the view)
PROSE = re.compile(r"[A-Za-z\u4e00-\u9fff]")


def fake_only(text: str) -> bool:
    """Nothing readable outside the fake language's ⟦…⟧, nested ones too (Plotly's %{x} and <extra> are markup, not
    text)."""
    while (inner := FAKE.sub("", text)) != text:
        text = inner
    return not PROSE.search(re.sub(r"%{\w+}|<extra></extra>", "", text))


def test_every_language_has_every_key_with_the_same_placeholders():
    assert list(LANGS) == ["en", "zh"] and LANGS["zh"] == "简体中文"
    assert read_folder(FOLDER).keys() == LANGUAGES.keys()
    en = LANGUAGES["en"].strings
    for code, language in LANGUAGES.items():
        assert language.strings.keys() == en.keys(), (code, set(language.strings) ^ set(en))
        for key, text in language.strings.items():
            assert isinstance(text, str) and text.strip(), (code, key)
            assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(en[key])), (code, key)


def test_unknown_language_raises_and_lang_code_maps_it_to_english():
    with pytest.raises(ValueError, match="fr"):
        t("view.shapes.stage1", "fr")
    with pytest.raises(KeyError, match="ui.no_such_key"):
        t("ui.no_such_key", "zh")
    assert t("view.shapes.stage1", "zh") == "1 · 旋转位置切片"
    assert t("ui.too_big", "en", rows=8, T=5) == "At most 8 rows (sequences) of at most 5 ids at once."
    assert [lang_code(c) for c in ("zh", "简体中文", "English", "fr", "", None)] == ["zh", "zh", "en", "en", "en", "en"]


def test_every_table_column_has_a_header_in_every_language(tiny_model, tiny_tokenizer):
    from demo.i18n import headers

    views = build_all(tiny_model, tiny_tokenizer, "The teacher asked the class a question.")
    for code in LANGS:
        for name, view in views.items():
            shown = list(headers(view.df, code).columns)
            assert len(set(shown)) == len(shown), (code, name, shown)
            if code == "en":  # English headers are the DataFrame's own names (the API and CSVs read them)
                assert shown == list(view.df.columns)


@pytest.fixture
def fake_language(tmp_path, monkeypatch) -> str:
    """A third language "xx" ("Test"): en.toml with every string wrapped in ⟦…⟧, read from its own folder."""
    lines = [f"{key} = {json.dumps(f'⟦{text}⟧', ensure_ascii=False)}" for key, text in LANGUAGES["en"].strings.items()]
    (tmp_path / "xx.toml").write_text("\n".join(lines) + '\n[language]\nname = "Test"\n', encoding="utf-8")
    monkeypatch.setitem(LANGUAGES, "xx", read_folder(tmp_path)["xx"])
    return "xx"


def test_a_third_language_reaches_every_view(fake_language, tiny_model, tiny_tokenizer):
    assert list(LANGS) == ["en", "zh", "xx"] and LANGS["xx"] == "Test" and lang_code("Test") == "xx"
    views = build_all(tiny_model, tiny_tokenizer, "The teacher asked the class a question.", lang=fake_language)
    for name, view in views.items():
        assert view.title.startswith("⟦") and fake_only(view.title), (name, view.title)
        assert view.text.startswith("⟦") and fake_only(view.text), (name, view.text[:200])
        for trace in view.fig.data:
            assert fake_only(trace.hovertemplate or ""), (name, trace.hovertemplate)


def test_a_third_language_reaches_the_2026_views_and_then_and_now(fake_language, tiny_model):
    import torch

    from explain import then_now_view
    from test_explain_2026 import make_model_2026

    new = make_model_2026(vocab_size=tiny_model.config.vocab_size)
    ids = torch.randint(0, 200, (180,), generator=torch.Generator().manual_seed(0)).tolist()  # longer than S = 128
    views = build_all(new, None, ids, lang=fake_language, views=("shapes", "rotary", "mask", "attention",
                                                                  "logit_lens"))
    views["then_now"] = then_now_view(tiny_model, new, None, ids[:60], lang=fake_language)
    for name, view in views.items():
        assert view.title.startswith("⟦") and fake_only(view.title), (name, view.title)
        assert view.text.startswith("⟦") and fake_only(view.text), (name, view.text[:200])
        for trace in view.fig.data:
            assert fake_only(trace.hovertemplate or ""), (name, trace.hovertemplate)
    assert all(s.startswith("⟦") for s in views["then_now"].df["status"])
    assert all(n == "" or n.startswith("⟦") for n in views["then_now"].df["note"])
    from demo.i18n import headers

    for code in LANGS:  # the new table's columns have headers in every language
        for name in ("then_now", "mask"):
            shown = list(headers(views[name].df, code).columns)
            assert len(set(shown)) == len(shown) == len(views[name].df.columns), (code, name)


def test_a_third_language_reaches_the_whole_ui(fake_language, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from demo import lessons
    from demo.app import build_demo, link_fields
    from demo.models import load

    demo = build_demo(load())
    radio = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "lang")
    assert ("Test", "Test") in radio.choices
    assert fake_language in next(f for f in link_fields(256) if f.key == "lang").choices
    set_language = next(f for f in demo.fns.values() if f.name == "set_language").fn
    code, title, model_line, _, *updates = set_language("Test")
    assert code == fake_language and fake_only(title) and "⟦" in model_line
    shown = [value for update in updates for prop, value in update.items() if prop != "__type__"]
    assert len(shown) > 50
    for value in shown:  # a label, a placeholder, a Markdown value, or a list of (label, value) choices
        for text in [label for label, _ in value] if isinstance(value, list) else [value]:
            assert fake_only(text), text
    for i, lesson in enumerate(lessons.LESSONS):
        assert fake_only(lessons.lesson_md(lesson, i, fake_language))
    assert len(keys("lesson.")) == 2 * len(lessons.LESSONS)
