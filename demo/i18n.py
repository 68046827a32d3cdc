"""The UI's languages: one event relabels every component (Relabel), and tables show their headers translated.

The strings themselves live in text/ (one TOML file per language, keys like "ui.send"); LANGS, lang_code and
t are re-exported from there for the UI's modules.
"""
from __future__ import annotations

from typing import Callable

import gradio as gr
import pandas as pd

from explain.common import shown_table
from rules.inputs import Setting
from text import LANGS, lang_code, t

__all__ = ["LANGS", "Relabel", "headers", "lang_code", "t"]


def headers(df: pd.DataFrame, lang: str) -> pd.DataFrame:
    """`df` as the UI's tables show it: its column names in `lang` (text keys column.<name>) and its floats at a
    sensible precision (explain.common.shown_table); CSV downloads keep the names themselves and every digit."""
    return shown_table(df).rename(columns=lambda name: t(f"column.{name}", lang))


class Relabel:
    """Remembers which property of which component shows which label, so one event can switch them all."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[gr.components.Component, dict[str, str | Callable[[str], object]]]] = {}

    def __call__(self, component, key: str | None = None, **props: str | Callable[[str], object]):
        """Register `component`: its `label` shows the text `key`. Other props: a text key (value="ui.send") or a
        function of the language code (choices=lambda lang: [...])."""
        if key is not None:
            props = {"label": key, **props}
        entry = self._items.setdefault(id(component), (component, {}))
        entry[1].update(props)
        return component

    def slider(self, setting: Setting, key: str, elem_id: str) -> gr.Slider:
        """A slider for one of rules.inputs' settings (its range, step and default), labelled with the text `key`."""
        return self(gr.Slider(setting.lo, setting.hi, value=setting.default, step=setting.step, label=t(key),
                              elem_id=elem_id), key)

    @property
    def components(self) -> list:
        return [c for c, _ in self._items.values()]

    def updates(self, lang: str) -> list:
        return [gr.update(**{prop: key(lang) if callable(key) else t(key, lang) for prop, key in props.items()})
                for _, props in self._items.values()]
