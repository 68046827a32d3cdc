"""Every string a user reads, in every language: one TOML file per language in this folder, `<code>.toml`.

Each file has a `[language]` table with the `name` the language radio shows, and the strings under dotted keys:

    ui.<name>                       the app's chrome: buttons, sliders, tabs, notices
    preset.<id>                     the examples of the Inside-forward tab
    lesson.<id>.question / .answer  the Lessons tab
    column.<name>                   the header of a table column (in English: the DataFrame's own column name)
    plot.<name>                     figure strings that several views share
    view.<view>.<name>              one view's title, figure strings and explanation (Markdown)

Strings are str.format templates whose `{name}` placeholders the caller fills (the same placeholders in every
language). `%{x}` is Plotly's hover syntax: such strings are used without values, so nothing formats them. A phrase
that counts ("{n} tokens") has a `<key>_one` form for one ("{n} token"), which t_count() picks.

The rule, everywhere: no fallback. t() raises ValueError for a language with no file and KeyError for a key that
language's file lacks (tests/test_text.py checks that every file has every key, with the same placeholders). Only
lang_code(), which reads what a page or a link sends, forgives: anything it does not know is "en".

Adding a language is adding one `<code>.toml` here; LANGS, and so the language radio and the links' `lang` field,
pick it up. At run time, LANGUAGES.update(read_folder(path)) adds the files of another folder.
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).parent
REFERENCE = "en"  # listed first; the language unknown choices map to, and whose key order keys() follows


@dataclass(frozen=True)
class Language:
    name: str  # as the language radio shows it
    strings: dict[str, str]  # dotted key -> template


def _flatten(table: dict, prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def read_folder(folder: Path | str) -> dict[str, Language]:
    """Every `<code>.toml` in `folder` as {code: Language}: "en" first, then by code."""
    languages = {}
    for path in sorted(Path(folder).glob("*.toml"), key=lambda p: (p.stem != REFERENCE, p.stem)):
        with path.open("rb") as f:
            table = tomllib.load(f)
        languages[path.stem] = Language(table.pop("language")["name"], dict(_flatten(table)))
    return languages


LANGUAGES: dict[str, Language] = read_folder(FOLDER)


class _Names(Mapping[str, str]):
    """code -> display name of every language in LANGUAGES, always current (a language added there is here too)."""

    def __getitem__(self, code: str) -> str:
        return LANGUAGES[code].name

    def __iter__(self) -> Iterator[str]:
        return iter(LANGUAGES)

    def __len__(self) -> int:
        return len(LANGUAGES)


LANGS: Mapping[str, str] = _Names()


def t(key: str, lang: str = "en", **values: object) -> str:
    """The string `key` in language `lang`, its {placeholders} filled from `values` (as written when none given)."""
    try:
        strings = LANGUAGES[lang].strings
    except KeyError:
        raise ValueError(f"unknown language {lang!r}; known: {', '.join(LANGUAGES)}") from None
    try:
        text = strings[key]
    except KeyError:
        raise KeyError(f"{key!r} is missing from {lang}.toml") from None
    return text.format(**values) if values else text


_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")  # ASCII punctuation: what Markdown syntax is made of
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def literal(text: str) -> str:
    """`text` (a model's name, an error message: anything the app did not write) for a Markdown string, so that it
    shows as written, on one line: no HTML ('<img onerror=...>'), no image or link ('![x](http://...)'), no emphasis
    or heading. '&', '<' and '>' become entities and every other ASCII punctuation mark gets a backslash (CommonMark
    shows any escaped punctuation as itself); line breaks become spaces."""
    one_line = re.sub(r"\s*[\r\n]+\s*", " ", text)
    return _PUNCTUATION.sub(lambda m: _ENTITIES.get(m[0], "\\" + m[0]), one_line)


def t_count(key: str, n: int, lang: str = "en", **values: object) -> str:
    """t() of a phrase that counts `n` things: the key's `_one` form when n is 1 ("1 token", "2 tokens"). A language
    without a singular gives both keys the same text."""
    return t(f"{key}_one" if n == 1 else key, lang, n=n, **values)


def keys(prefix: str = "") -> list[str]:
    """The keys that start with `prefix`, in the order of the "en" file."""
    return [key for key in LANGUAGES[REFERENCE].strings if key.startswith(prefix)]


def lang_code(choice: str | None) -> str:
    """What a page or a link sends (a code or a display name) -> a language code; anything unknown -> "en"."""
    for code, name in LANGS.items():
        if choice in (code, name):
            return code
    return REFERENCE
