"""What a user typed -> what the model takes: sampling settings, seeds, token ids, prompts, a conversation that must
fit the context, and chat text made safe to show. The UI only wires these to its components.

Every error here is an `InputError`: a ValueError whose text comes from the registry (explain/text/), in English by
str(), in any language by `.message(lang)`. The settings' ranges and defaults live here once (`SETTINGS`): the
sliders, the links and the validation read them from here.
"""
from __future__ import annotations

import dataclasses
import html
import random
from dataclasses import dataclass, field

import torch

from explain.generate import forward_flops, generation_flops
from explain.shapes import TUTORIAL_CONFIG
from explain.text import LANGS, t
from gpt import arch as archs
from gpt.stream import SamplingParams
from gpt.tokenizer import Tokenizer

MAX_ROWS = 8  # sequences in one forward: enough to show the batch dimension, small enough for any machine
MAX_RANDOM_T = 100_000  # longer random rows are refused before they are drawn (anything past the context is cut)
MAX_GEN_STEPS = 64  # the Generate tab's step limit
# Work budgets: what one request may cost, in counted FLOPs (explain.generate.flops_per_token) and bytes, so that the
# limits scale with the loaded model: a few seconds of work on a 2-core CPU at most (the default model's cost
# comparison up to 64 tokens, 83 GFLOP, took 3-6 s there).
FORWARD_FLOPS = 10**11  # one Inside-forward request's recorded forward (its views run a few more of that size)
LOGIT_BYTES = 2**28  # that forward's float32 logits, B·T·V·4 bytes (recorded twice: before and after the softcap)
GENERATE_FLOPS = 10**11  # the Generate tab: a step's naive generate loop, or the whole cost comparison
MAX_PROMPT_CHARS = 20_000  # text is cut to this before it is tokenized


class InputError(ValueError):
    """Bad user input: the registry key of the message and its values."""

    def __init__(self, key: str, **values: object):
        self.key, self.values = key, values
        super().__init__(t(key, "en", **values))

    def message(self, lang: str) -> str:
        return t(self.key, lang, **self.values)


@dataclass(frozen=True)
class Setting:
    """A number a user sets: its range, its slider step and its default."""
    lo: float
    hi: float
    step: float
    default: float


SETTINGS = {
    "temperature": Setting(0, 2, 0.05, 0.8),
    "top_k": Setting(0, 200, 1, 50),
    "top_p": Setting(0.05, 1, 0.05, 1.0),
    "gen_seed": Setting(0, 2**31 - 1, 1, 42),
    "gen_steps": Setting(1, MAX_GEN_STEPS, 1, 16),
    "cost_len": Setting(8, 256, 8, 64),
}


def max_tokens_setting(ctx: int) -> Setting:
    """The reply length a chat may ask for, on a model with a context of ctx tokens."""
    return Setting(1, ctx, 1, min(256, ctx))


# ---- the visitor's language ----------------------------------------------------------------------------------------
def browser_language(accept_language: str | None) -> str:
    """The first language of the browser's Accept-Language header (e.g. "zh-CN,zh;q=0.9,en;q=0.8") that the app
    speaks, by preference (q) and then order; "en" when none is."""
    ranked = []
    for k, part in enumerate((accept_language or "").split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, k, tag.strip().lower().split("-")[0]))
    return next((code for _, _, code in sorted(ranked) if code in LANGS and code), "en")


# ---- chat -------------------------------------------------------------------------------------------------------
def parse_seed(text: str | int | float | None) -> int | None:
    """'' / 'random' -> None (a seed is then picked and reported); a whole number -> that number."""
    s = str(text if text is not None else "").strip().lower()
    if s in ("", "random", "none", "随机"):
        return None
    try:
        value = float(s)
    except ValueError:
        raise InputError("ui.bad_seed") from None
    if not value.is_integer() or not 0 <= value < 2**63:  # the engine keeps seeds in int64 tensors
        raise InputError("ui.bad_seed")
    return int(value)


def sampling(temperature: float, top_k: float, top_p: float, max_tokens: float, seed) -> SamplingParams:
    """The chat's sampling settings; a random seed is chosen here, so the reply's stats can show it."""
    seed_value = parse_seed(seed)
    if seed_value is None:
        seed_value = random.SystemRandom().randrange(2**31)
    return SamplingParams(temperature=float(temperature), top_k=int(top_k) or None, top_p=float(top_p),
                          seed=seed_value, max_tokens=int(max_tokens))


def fit_context(tokenizer: Tokenizer, messages: list[dict], ctx: int, max_tokens: int) -> tuple[list[int], int]:
    """Prompt ids for the next reply, dropping the oldest turns until prompt + reply room fit the context of ctx.

    Returns (prompt ids, number of messages dropped); InputError when the last user message alone is too long.
    """
    reserve = min(max_tokens, ctx // 2)  # room for at least part of the reply
    dropped = 0
    while True:
        ids = tokenizer.render_for_completion(messages[dropped:])
        if len(ids) + reserve <= ctx:
            return ids, dropped
        if len(messages) - dropped <= 1:
            raise InputError("ui.message_too_long", n=len(ids), ctx=ctx)
        dropped += 2 if len(messages) - dropped > 2 else 1  # a user turn and the reply to it


def to_chatbot(messages: list[dict]) -> list[dict]:
    """The conversation as the Chatbot shows it: Markdown stays Markdown, but every '<' and '&' is escaped, so no
    HTML from the model or the user (a script, an image from another site) becomes part of the page."""
    return [{"role": m["role"], "content": html.escape(m["content"], quote=False)} for m in messages]


def from_chatbot(history: list[dict] | None) -> list[dict]:
    """Chatbot value (content as a string or as a list of text parts) -> the conversation's own
    [{"role", "content": str}], which is what the model reads: undoes `to_chatbot`."""
    out = []
    for m in history or []:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": m["role"], "content": html.unescape(content if isinstance(content, str) else str(content))})
    return out


# ---- a model config typed by hand -----------------------------------------------------------------------------------
def parse_config(spec: str):
    """'n_layer=4,n_head=4,n_embd=128' -> a model config (unnamed fields keep the tutorial config's values).
    'arch=...' picks the architecture (gpt/arch.py); a window_pattern (e.g. SSSL) implies nanochat-2026-07."""
    entries: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise _bad_config(f"{part!r} has no '='", archs.NEW)
        entries[key.strip()] = value.strip()
    arch = entries.pop("arch", archs.NEW if "window_pattern" in entries else archs.OLD)
    if arch not in archs.ARCHS:
        raise _bad_config(f"unknown arch {arch!r}", archs.NEW)
    known = archs.config_keys(arch)
    values = {**dataclasses.asdict(TUTORIAL_CONFIG), **({"window_pattern": "SSSL"} if arch == archs.NEW else {})}
    for key, value in entries.items():
        if key not in known:
            raise _bad_config(f"unknown key {key!r}", arch)
        if key == "window_pattern":
            if not value or set(value.upper()) - set("SL"):
                raise _bad_config(f"window_pattern {value!r} is not made of S and L", arch)
            values[key] = value
        elif (number := _whole(value)) and number <= 10**7:
            values[key] = number
        else:
            raise _bad_config(f"{key}={value!r} is not a whole number from 1 to 10000000", arch)
    if "n_kv_head" not in entries:
        values["n_kv_head"] = values["n_head"]
    if values["n_embd"] % values["n_head"] or values["n_head"] % values["n_kv_head"]:
        raise _bad_config("n_embd must be a multiple of n_head, and n_head a multiple of n_kv_head", arch)
    if (values["n_embd"] // values["n_head"]) % 2:
        raise _bad_config("the head dim n_embd / n_head must be even (rotary turns pairs of channels)", arch)
    return archs.config_class(arch)(**values)


def _bad_config(why: str, arch: str) -> InputError:
    return InputError("ui.bad_config", why=why, keys=", ".join(["arch", *sorted(archs.config_keys(arch))]))


# ---- work budgets ---------------------------------------------------------------------------------------------------
def forward_fits(config, rows: int, T: int) -> bool:
    """Whether one recorded forward of rows x T tokens is within FORWARD_FLOPS and LOGIT_BYTES on this config."""
    return (rows * forward_flops(config, T) <= FORWARD_FLOPS
            and rows * T * config.vocab_size * 4 <= LOGIT_BYTES)


def max_forward_tokens(config) -> int:
    """The longest one-row prompt within the forward budget (at most the context): shown in the UI."""
    lo, hi = 1, config.sequence_len
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if forward_fits(config, 1, mid) else (lo, mid - 1)
    return lo


def check_forward(config, rows: int, T: int) -> None:
    """InputError naming the limit when rows x T tokens are more than one request may cost on this model."""
    if not forward_fits(config, rows, T):
        raise InputError("ui.over_forward_budget", rows=rows, T=T, limit=max_forward_tokens(config))


def generate_cost(config, prompt_len: int, lengths: list[int], cached_too: bool) -> int:
    """Counted FLOPs of GPT.generate's naive loop for each of `lengths` new tokens after the prompt (and of its
    cached loop too, for the cost comparison, which times both)."""
    return sum(sum(generation_flops(config, prompt_len, n)[: 2 if cached_too else 1]) for n in lengths)


def check_generate(config, prompt_len: int, lengths: list[int], cached_too: bool = False) -> None:
    """InputError naming the limit when generating `lengths` tokens after this prompt costs more than
    GENERATE_FLOPS."""
    if generate_cost(config, prompt_len, lengths, cached_too) > GENERATE_FLOPS:
        most = max(lengths)
        while most > 1 and generate_cost(config, prompt_len, [n for n in lengths if n <= most], cached_too) \
                > GENERATE_FLOPS:
            most //= 2
        raise InputError("ui.over_generate_budget", n=max(lengths), P=prompt_len, limit=most)


def limits_md(config, lang: str) -> str:
    """The limits of one request on this model, for the UI."""
    return t("ui.limits", lang, tokens=max_forward_tokens(config), rows=MAX_ROWS, chars=MAX_PROMPT_CHARS)


def cut_text(text: str | None) -> str:
    """Text as the model will read it: at most MAX_PROMPT_CHARS characters (the rest is refused by the limits)."""
    text = text or ""
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError("ui.prompt_chars", n=len(text), limit=MAX_PROMPT_CHARS)
    return text


# ---- one forward's input ------------------------------------------------------------------------------------------
@dataclass
class Request:
    """What to run: a [B, T] batch of ids, of which the first `prefix` positions are (conceptually) cached; notes to
    show with the views and warnings to raise (both already in the user's language)."""
    ids: list[list[int]]
    prefix: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _whole(text: str) -> int | None:
    """A short run of ASCII digits as an int, else None ('²' and '١' pass str.isdigit but are no ids; a 5000-digit
    number is no id either, and int() would refuse it)."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def parse_ids(text: str, vocab_size: int) -> Request:
    """'1, 2, 3 | 4; 5, 6, 7 | 8' (rows split by ';', a '|' ends the cached prefix) or 'random 2x128' (B rows of T
    ids drawn with seed 0, the tutorial's torch.randint) -> Request."""
    text = text.strip()
    if text.lower().startswith("random"):
        dims = [_whole(d) for d in text[6:].strip().lower().replace("×", "x").split("x")]
        if len(dims) != 2 or not all(dims):
            raise InputError("ui.bad_ids", v=vocab_size, bad=text)
        rows, T = dims
        if rows > MAX_ROWS or T > MAX_RANDOM_T:
            raise InputError("ui.too_big", rows=MAX_ROWS, T=MAX_RANDOM_T)
        gen = torch.Generator().manual_seed(0)
        return Request(torch.randint(0, vocab_size, (rows, T), generator=gen).tolist())
    rows, prefixes, bad = [], set(), []
    for row_text in filter(str.strip, text.split(";")):
        parts = row_text.split("|")
        if len(parts) > 2:
            bad.append(row_text.strip())
            continue
        row = []
        for piece in ",".join(parts).replace(",", " ").split():
            value = _whole(piece)
            if value is not None and value < vocab_size:
                row.append(value)
            else:
                bad.append(piece)
        rows.append(row)
        prefixes.add(len(parts[0].replace(",", " ").split()) if len(parts) == 2 else 0)
    if bad:
        raise InputError("ui.bad_ids", v=vocab_size, bad=", ".join(bad[:8]))
    if not rows or not rows[0]:
        raise InputError("ui.empty_prompt")
    if len({len(r) for r in rows}) > 1 or len(prefixes) > 1:
        raise InputError("ui.ragged_ids")
    if len(rows) > MAX_ROWS:
        raise InputError("ui.too_big", rows=MAX_ROWS, T=MAX_RANDOM_T)
    prefix = prefixes.pop()
    return Request(rows, prefix if prefix < len(rows[0]) else 0)


def forward_request(tokenizer: Tokenizer, config, prompt: str, ids: str, lang: str) -> Request:
    """The Inside-forward input on a model of `config`: token ids if any were typed, else the tokenized prompt; cut to
    the last sequence_len positions (with a warning); a note on batches; refused past the work budget."""
    if (ids or "").strip():
        req = parse_ids(cut_text(ids), config.vocab_size)
    elif (prompt or "").strip() and (encoded := tokenizer.encode(cut_text(prompt))):
        req = Request([encoded])
    else:
        raise InputError("ui.empty_prompt")
    T, ctx = len(req.ids[0]), config.sequence_len
    if T > ctx:
        req.warnings.append(t("ui.prompt_too_long", lang, n=T, ctx=ctx))
        req.ids, req.prefix = [r[-ctx:] for r in req.ids], 0
    check_forward(config, len(req.ids), len(req.ids[0]))
    if len(req.ids) > 1:
        req.notes.append(t("ui.batch_note", lang, b=len(req.ids)))
    return req


def generation_prompt(tokenizer: Tokenizer, text: str, ctx: int, lang: str) -> tuple[list[int], list[str]]:
    """The Generate tab's prompt ids, cut so that MAX_GEN_STEPS more tokens still fit the context, and the warnings
    to show."""
    ids = tokenizer.encode(cut_text(text))
    if not ids:
        raise InputError("ui.empty_prompt")
    room = ctx - MAX_GEN_STEPS
    if len(ids) > room:
        return ids[-room:], [t("ui.prompt_too_long", lang, n=len(ids), ctx=room)]
    return ids, []
