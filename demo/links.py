"""Shareable links: the app's state <-> a URL query string.

Only what differs from the defaults goes into the link, and everything read back from a link is validated (a bad
value is ignored, never an error), because links are typed, truncated and edited by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlencode

from rules.inputs import Setting


@dataclass(frozen=True)
class Field:
    key: str
    default: Any
    lo: float | None = None  # numbers are clipped into [lo, hi]
    hi: float | None = None
    choices: tuple[str, ...] | None = None  # strings restricted to these
    max_len: int = 2000  # free text is cut to this many characters

    @classmethod
    def of(cls, key: str, setting: Setting) -> "Field":
        """A number field for one of rules.inputs' settings: its default and range."""
        default = int(setting.default) if float(setting.step).is_integer() else setting.default
        return cls(key, default, setting.lo, setting.hi)

    def parse(self, raw: str) -> Any:
        """The value of `raw` for this field, or None when it is not valid."""
        if isinstance(self.default, bool):
            return raw.lower() in ("1", "true", "yes")
        if isinstance(self.default, (int, float)):
            try:
                value = float(raw)
            except ValueError:
                return None
            if value != value:  # NaN
                return None
            if self.lo is not None:
                value = max(self.lo, value)
            if self.hi is not None:
                value = min(self.hi, value)
            return int(value) if isinstance(self.default, int) else value
        if self.choices is not None:
            return raw if raw in self.choices else None
        return raw[: self.max_len]


def encode(values: Mapping[str, Any], fields: list[Field]) -> str:
    """Query string of the values that differ from their field's default (order = field order)."""
    pairs = []
    for f in fields:
        value = values.get(f.key, f.default)
        if value is None or value == f.default:
            continue
        if isinstance(value, float) and value.is_integer() and isinstance(f.default, int):
            value = int(value)
        pairs.append((f.key, value))
    return urlencode(pairs)


def decode(query: Mapping[str, str], fields: list[Field]) -> dict[str, Any]:
    """The valid values found in `query` (missing or invalid keys are simply absent)."""
    out = {}
    for f in fields:
        if f.key in query:
            value = f.parse(str(query[f.key]))
            if value is not None:
                out[f.key] = value
    return out
