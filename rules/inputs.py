"""What a user typed -> what the model takes: sampling settings, seeds, token ids, prompts, a conversation that must
fit the context, and chat text made safe to show. The UI only wires these to its components.

Every error here is an `InputError`: a ValueError whose text comes from the registry (text/), in English by
str(), in any language by `.message(lang)`. The settings' ranges and defaults live here once (`SETTINGS`): the
sliders, the links and the validation read them from here.
"""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from rules import chat_markdown
from explain.generate import generation_flops
from explain.shapes import TUTORIAL_CONFIG
from text import LANGS, t
from gpt import nanochat
from gpt.nanochat import GPT, GPTConfig
from gpt.stream import SamplingParams
from gpt.tokenizer import Tokenizer

MAX_ROWS = 8  # sequences in one forward: enough to show the batch dimension, small enough for any machine
MAX_RANDOM_T = 100_000  # longer random rows are refused before they are drawn (anything past the context is cut)
MAX_GEN_STEPS = 64  # the Generate tab's step limit
# Work budgets: what one request may cost, in counted FLOPs (explain.generate.flops_per_token) and bytes, so that the
# limits scale with the loaded model: a few seconds of work on a 2-core CPU at most (the default model's cost
# comparison up to 64 tokens, 83 GFLOP, took 3-6 s there).
FORWARD_FLOPS = 10**11  # one Inside-forward request's recorded forward (its views run a few more of that size)
LOGIT_BYTES = 2**27  # that forward's float32 logits, B·T·V·4 bytes (made again by a few views)
RECORD_BYTES = 2**29  # everything that forward records (recorded_bytes): with these two, the heaviest request keeps the
# server under 2 GB (bench/serve_bench.py)
GENERATE_FLOPS = 10**11  # the Generate tab: a step's naive generate loop, or the whole cost comparison
WHY_FLOPS = 2 * 10**11  # one "why did it say that?" view: a patching sweep (every layer × position) or a saliency (64
# forwards and backwards); the default model's 32 tokens fit, ~1-3 s on 2 cores (bench/why_bench.py)
MAX_PROMPT_CHARS = 20_000  # text is cut to this before it is tokenized


class InputError(ValueError):
    """Bad user input: the registry key of the message and its values (a value that is itself a (key, values) pair
    is a phrase of the registry, said in the same language)."""

    def __init__(self, key: str, **values: object):
        self.key, self.values = key, values
        super().__init__(self.message("en"))

    def message(self, lang: str) -> str:
        said = {k: t(v[0], lang, **v[1]) if isinstance(v, tuple) else v for k, v in self.values.items()}
        return t(self.key, lang, **said)


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
    """Prompt ids for the next reply to `messages` (a conversation from `from_chatbot` that ends with the user's
    message), leaving out the oldest turns until the prompt and room for the reply fit the context of ctx.

    Turns go a user message and its reply at a time, so the prompt never starts with a reply; a leading system message
    stays as long as it fits. The reply's room is min(max_tokens, ctx // 2) where the conversation allows; when even
    the last message alone leaves less, the reply gets what is left (`context_notice` says so). Returns (prompt
    ids, number of messages left out); InputError when the last message alone leaves no room at all.
    """
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    if not turns:
        raise InputError("ui.empty_message")
    reserve = min(max_tokens, ctx // 2)
    options = [system + turns[k:] for k in range(0, len(turns), 2)] + ([turns[-1:]] if system else [])
    for option in options:
        ids = tokenizer.render_for_completion(option)
        if len(ids) + reserve <= ctx:
            return ids, len(messages) - len(option)
    if len(ids) < ctx:  # the last message alone, with less room for the reply than asked
        return ids, len(messages) - 1
    raise InputError("ui.message_too_long", n=len(ids), ctx=ctx)


def context_notice(ctx: int, prompt_len: int, dropped: int, max_tokens: int, lang: str) -> str:
    """What fit_context did, for the chat's notice ("" when nothing): the messages it left out, and a reply room
    smaller than asked for (Max new tokens, or half the context)."""
    room = ctx - prompt_len
    return "\n\n".join(filter(None, [
        t("ui.dropped_turns", lang, ctx=ctx, n=dropped) if dropped else "",
        t("ui.reply_room", lang, n=prompt_len, ctx=ctx, room=room, max=max_tokens)
        if room < min(max_tokens, ctx // 2) else ""]))


def to_reply(history) -> list[dict]:
    """The conversation a reply is asked for (a chat's history): in order, ending with a user message that says
    something."""
    messages = from_chatbot(history)
    if not messages or (messages[-1]["role"] == "user" and not messages[-1]["content"].strip()):
        raise InputError("ui.empty_message")
    check_order(messages, reply=True)
    return messages


def with_message(tokenizer: Tokenizer, history, text: str, ctx: int, max_tokens: int, seed) -> list[dict]:
    """The conversation with the user's new message last, if a reply to it can start: what would refuse it (an empty
    or too long message, a bad seed) refuses it here, before it joins the history. A message left without a reply
    (stopped while it waited, or failed) gives way to this one: two user turns in a row could not be answered."""
    messages = from_chatbot(history)
    if messages and messages[-1]["role"] == "user":
        messages = messages[:-1]
    if not (text or "").strip():
        raise InputError("ui.empty_message")
    messages.append({"role": "user", "content": cut_text(text)})  # a huge message is refused before it is tokenized
    fit_context(tokenizer, messages, ctx, max_tokens)
    parse_seed(seed)
    return messages


def check_numbers(values) -> None:
    """InputError for a number that is not finite (NaN, ±inf: Gradio's bounds check lets NaN through, and a JSON
    call can send all three). Anything else passes: what is not a number is not checked here."""
    for value in values:
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError("ui.bad_number", value=value)


def to_chatbot(messages: list[dict]) -> list[dict]:
    """The conversation as the Chatbot shows it: Markdown stays Markdown (links too), but no HTML from the model or
    the user (a script, an image from another site) becomes part of the page, and no Markdown image either; code
    shows as typed."""
    return [{"role": m["role"], "content": chat_markdown.shown(m["content"])} for m in messages]


ROLES = ("system", "user", "assistant")


def from_chatbot(history: list[dict] | None) -> list[dict]:
    """Chatbot value (content as a string or as a list of parts, of which the text ones count) -> the conversation's
    own [{"role", "content": str}], which is what the model reads: undoes `to_chatbot`.

    The history must be a conversation: an optional system message first, then user and assistant in turn
    (InputError "ui.bad_message" for an entry that is no message, "ui.bad_history" for one out of order)."""
    if history is None:
        return []
    if not isinstance(history, list):
        raise InputError("ui.bad_message", i=1)
    out = []
    for i, m in enumerate(history, 1):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            content = "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str) or not isinstance(m.get("role"), str):
            raise InputError("ui.bad_message", i=i)
        out.append({"role": m["role"], "content": chat_markdown.typed(content)})
    check_order(out)
    return out


def check_order(messages: list[dict], reply: bool = False) -> None:
    """InputError "ui.bad_history" naming the first message out of order: after an optional system message, user and
    assistant take turns, starting with the user; with reply=True the last message must be the user's (one to reply
    to)."""
    start = 1 if messages and messages[0]["role"] == "system" else 0
    for i, m in enumerate(messages):
        expected = "system" if i < start else ("user", "assistant")[(i - start) % 2]
        if m["role"] != expected:
            raise InputError("ui.bad_history", i=i + 1, role=str(m["role"])[:40])
    if reply and (len(messages) == start or messages[-1]["role"] != "user"):
        raise InputError("ui.bad_history", i=len(messages), role=messages[-1]["role"] if messages else "-")


# ---- a model config typed by hand -----------------------------------------------------------------------------------
class ConfigSpec(NamedTuple):
    config: GPTConfig
    member: nanochat.Member


def parse_config(spec: str) -> ConfigSpec:
    """'n_layer=4,n_head=4,n_embd=128' -> a model config (unnamed fields keep the tutorial config's values) and the
    nanochat member it is of. 'arch=...' picks the member (a commit, or nanochat-2025-11 / nanochat-2026-07); a
    window_pattern (e.g. SSSL) without one implies today's."""
    entries: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise _bad_config("no_equals", part=part)
        entries[key.strip()] = value.strip()
    name = entries.pop("arch", nanochat.TODAY.name if "window_pattern" in entries else nanochat.TUTORIAL.name)
    try:
        member = nanochat.member(name)
    except nanochat.FamilyError:
        raise _bad_config("unknown_arch", arch=name) from None
    values = {**dataclasses.asdict(TUTORIAL_CONFIG), "window_pattern": "SSSL" if member.features.windows else "L"}
    known = set(values) - ({"window_pattern"} if not member.features.windows else set())
    for key, value in entries.items():
        if key not in known:
            raise _bad_config("unknown_key", name=key)
        if key == "window_pattern":
            if not value or set(value.upper()) - set("SL"):
                raise _bad_config("bad_pattern", value=value)
            values[key] = value
        elif (number := _whole(value)) and number <= 10**7:
            values[key] = number
        else:
            raise _bad_config("not_whole", name=key, value=value)
    if "n_kv_head" not in entries:
        values["n_kv_head"] = values["n_head"]
    if values["n_embd"] % values["n_head"] or values["n_head"] % values["n_kv_head"]:
        raise _bad_config("multiples")
    if (values["n_embd"] // values["n_head"]) % 2:
        raise _bad_config("odd_head")
    return ConfigSpec(GPTConfig(**values), member)


def _bad_config(why: str, **values) -> InputError:
    """ui.bad_config, with the reason `why` (ui.config_why.<why>, filled with `values`) in the user's language."""
    keys = ", ".join(["arch", *(f.name for f in dataclasses.fields(GPTConfig))])
    return InputError("ui.bad_config", why=("ui.config_why." + why, values), keys=keys)


# ---- work budgets ---------------------------------------------------------------------------------------------------
def recorded_bytes(config: GPTConfig, rows: int, T: int) -> int:
    """About what one recorded forward of rows x T tokens keeps (explain.trace_forward: every point of
    gpt.recorder.POINTS, float32): per token, the logits twice (before and after the softcap), 3 residual widths
    (embed, embed_norm, final_norm) and, in every block, 13 (input, q, k, v, y, out, resid_mid, output, mlp.out, and
    the 4-wide mlp.hidden)."""
    return rows * T * 4 * (2 * config.vocab_size + (13 * config.n_layer + 3) * config.n_embd)


def forward_fits(model: GPT, rows: int, T: int) -> bool:
    """Whether one recorded forward of rows x T tokens is within FORWARD_FLOPS, LOGIT_BYTES and RECORD_BYTES on this
    model (its own count of FLOPs: GPT.forward_flops)."""
    config = model.config
    return (rows * model.forward_flops(T) <= FORWARD_FLOPS
            and rows * T * config.vocab_size * 4 <= LOGIT_BYTES
            and recorded_bytes(config, rows, T) <= RECORD_BYTES)


def max_forward_tokens(model: GPT) -> int:
    """The longest one-row prompt within the forward budget (at most the context): shown in the UI."""
    lo, hi = 1, model.config.sequence_len
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if forward_fits(model, 1, mid) else (lo, mid - 1)
    return lo


def check_forward(model: GPT, rows: int, T: int) -> None:
    """InputError naming the limit when rows x T tokens are more than one request may cost on this model."""
    if not forward_fits(model, rows, T):
        raise InputError("ui.over_forward_budget", rows=rows, T=T, limit=max_forward_tokens(model))


def generate_cost(model: GPT, prompt_len: int, lengths: list[int], cached_too: bool) -> int:
    """Counted FLOPs of GPT.generate's naive loop for each of `lengths` new tokens after the prompt (and of its
    cached loop too, for the cost comparison, which times both)."""
    return sum(sum(generation_flops(model, prompt_len, n)[: 2 if cached_too else 1]) for n in lengths)


def check_generate(model: GPT, prompt_len: int, lengths: list[int], cached_too: bool = False) -> None:
    """InputError naming the limit when generating `lengths` tokens after this prompt costs more than
    GENERATE_FLOPS."""
    if generate_cost(model, prompt_len, lengths, cached_too) > GENERATE_FLOPS:
        most = max(lengths)
        while most > 1 and generate_cost(model, prompt_len, [n for n in lengths if n <= most], cached_too) \
                > GENERATE_FLOPS:
            most //= 2
        raise InputError("ui.over_generate_budget", n=max(lengths), P=prompt_len, limit=most)


def limits_md(model: GPT, lang: str) -> str:
    """The limits of one request on this model, for the UI."""
    return t("ui.limits", lang, tokens=max_forward_tokens(model), rows=MAX_ROWS, chars=MAX_PROMPT_CHARS)


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
    next_ids: list[int] | None = None  # the token after each row ("random BxT": drawn as nanochat's loader fetches
    # every row, T + 1 tokens), so that training has a target at the last position too
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _whole(text: str) -> int | None:
    """A short run of ASCII digits as an int, else None ('²' and '١' pass str.isdigit but are no ids; a 5000-digit
    number is no id either, and int() would refuse it)."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def parse_ids(text: str, vocab_size: int) -> Request:
    """'1, 2, 3 | 4; 5, 6, 7 | 8' (rows split by ';', a '|' ends the cached prefix) or 'random 2x128' (B rows of T
    ids drawn with seed 0, the tutorial's torch.randint; each row drawn as T + 1 ids, as nanochat's loader fetches
    it: the last is the row's next_ids, its training target) -> Request."""
    text = text.strip()
    if text.lower().startswith("random"):
        dims = [_whole(d) for d in text[6:].strip().lower().replace("×", "x").split("x")]
        if len(dims) != 2 or not all(dims):
            raise InputError("ui.bad_ids", v=vocab_size, bad=text)
        rows, T = dims
        if rows > MAX_ROWS or T > MAX_RANDOM_T:
            raise InputError("ui.too_big", rows=MAX_ROWS, T=MAX_RANDOM_T)
        gen = torch.Generator().manual_seed(0)
        drawn = torch.randint(0, vocab_size, (rows, T + 1), generator=gen)  # T + 1 a row, as nanochat's loader
        return Request(drawn[:, :T].tolist(), next_ids=drawn[:, T].tolist())
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


def forced_ids(text: str | None, tokenizer: Tokenizer, model: GPT) -> list[int]:
    """A branch of the Generate tab: the token ids fixed after the prompt, "12, 7, 301" ("" or None: none). Every id
    must be one the model may sample (InputError "ui.bad_branch_ids" naming the bad ones)."""
    vocab = min(model.config.vocab_size, tokenizer.vocab_size)
    pieces = (text or "").replace(",", " ").split()
    values = [_whole(piece) for piece in pieces]
    bad = [piece for piece, value in zip(pieces, values) if value is None or value >= vocab]
    if bad:
        raise InputError("ui.bad_branch_ids", v=vocab, bad=", ".join(bad[:8]))
    return values


def forward_request(tokenizer: Tokenizer, model: GPT, prompt: str, ids: str, lang: str) -> Request:
    """The Inside-forward input on `model`: token ids if any were typed, else the tokenized prompt; cut to
    the last sequence_len positions (with a warning); a note on batches; refused past the work budget."""
    config = model.config
    if (ids or "").strip():
        req = parse_ids(cut_text(ids), config.vocab_size)
    elif (prompt or "").strip() and (encoded := tokenizer.encode(cut_text(prompt))):
        req = Request([encoded])
    else:
        raise InputError("ui.empty_prompt")
    T, ctx = len(req.ids[0]), config.sequence_len
    if T > ctx:
        req.warnings.append(t("ui.prompt_too_long", lang, n=T, ctx=ctx))
        req.ids, req.prefix = [r[-ctx:] for r in req.ids], 0  # next_ids still follow each row
    check_forward(model, len(req.ids), len(req.ids[0]))
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


# ---- why did it say that? (attribution, patching, saliency) ---------------------------------------------------------
def parse_token(tokenizer: Tokenizer | None, text: str | None, vocab_size: int, what: str) -> int | None:
    """A target or contrast token as typed: "" -> None (the view's default); "#id" -> that id; any other text must be
    exactly one token of the vocabulary (" man", with its space). `what`: "target" or "contrast", for the message."""
    text = (text or "")[:200]
    said = ("ui.what_" + what, {})
    if not text.strip():
        return None
    if text.strip().startswith("#"):
        value = _whole(text.strip()[1:])
        if value is None or value >= vocab_size:
            raise InputError("ui.bad_token_id", what=said, v=vocab_size, text=text.strip())
        return value
    ids = tokenizer.encode(text) if tokenizer is not None else []
    if len(ids) != 1 or ids[0] >= vocab_size:
        raise InputError("ui.bad_token", what=said, text=text, n=len(ids), v=vocab_size)
    return ids[0]


def why_tokens(tokenizer: Tokenizer | None, model: GPT, target: str | None, contrast: str | None
               ) -> tuple[int | None, int | None]:
    """(target, contrast) ids as typed (None: the view's default); InputError for a token the model does not have,
    or a contrast that is the target."""
    V = model.config.vocab_size
    ids = parse_token(tokenizer, target, V, "target"), parse_token(tokenizer, contrast, V, "contrast")
    if ids[0] is not None and ids[0] == ids[1]:
        raise InputError("ui.contrast_is_target")
    return ids


def check_why(model: GPT, T: int, cost) -> None:
    """InputError naming the longest prompt that fits when a why-view of T tokens costs more than WHY_FLOPS; cost(T):
    its counted FLOPs (explain.patching.sweep_flops, explain.saliency.saliency_flops)."""
    if cost(T) <= WHY_FLOPS:
        return
    lo, hi = 0, T
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= WHY_FLOPS else (lo, mid - 1)
    raise InputError("ui.over_why_budget", T=T, limit=lo)


def corrupt_ids(tokenizer: Tokenizer | None, model: GPT, clean: list[int], corrupt: str | None, as_ids: bool
                ) -> list[int]:
    """The corrupt prompt of a patching pair, read as the clean one was (token ids when `as_ids`, else text), with
    as many tokens as the clean one (InputError otherwise, or when it is empty)."""
    text = cut_text(corrupt)
    if not text.strip():
        raise InputError("ui.empty_corrupt")
    ids = parse_ids(text, model.config.vocab_size).ids[0] if as_ids or tokenizer is None else tokenizer.encode(text)
    if len(ids) != len(clean):
        raise InputError("ui.unequal_lengths", a=len(clean), b=len(ids))
    return ids
