"""nanochat's tokenizer: byte-level BPE in a tiktoken Encoding, 9 special tokens, chat rendering.

- Split pattern: GPT-4's, except numbers are split into runs of at most 2 digits (`\\p{N}{1,2}`), as nanochat does
  (a small vocabulary should not spend tokens on 3-digit numbers).
- Training: rustbpe learns the merges; tiktoken does the encoding and decoding.
- Special tokens come right after the BPE ranks, in nanochat's order, so a nanochat model's ids mean the same here.
- User text is always encoded with `encode_ordinary`: typing "<|bos|>" into the chat gives the text, never the token.
- On disk (our format): `tokenizer.tiktoken` (tiktoken's rank file: `base64(token bytes) rank` per line) and
  `tokenizer.json` (name, split pattern, special tokens). No pickle. nanochat's own `tokenizer.pkl` is read through a
  restricted unpickler (see `from_nanochat_pickle`).
"""
from __future__ import annotations

import base64
import json
import pickle
import re
from pathlib import Path
from typing import Iterable

import tiktoken

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = [
    "<|bos|>",  # starts every document; the model predicts it after one ends
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>",  # the assistant calls the python tool
    "<|output_start|>", "<|output_end|>",  # the tool's output, inserted into the assistant turn
]
RANKS_FILE = "tokenizer.tiktoken"
CONFIG_FILE = "tokenizer.json"
FORMAT = "inside-forward-tokenizer/1"
_CONTROL = re.compile("[\x00-\x1f\x7f]")  # what a token label shows as \xNN (after \n, \r and \t)

Message = dict  # {"role": "user" | "assistant" | "system", "content": str (or, for assistant, a list of parts)}


class Tokenizer:
    """A tiktoken Encoding plus nanochat's special tokens and chat format."""

    def __init__(self, encoding: tiktoken.Encoding):
        missing = [s for s in SPECIAL_TOKENS if s not in encoding._special_tokens]
        if missing:
            raise ValueError(f"tokenizer lacks nanochat special tokens: {missing}")
        self.encoding = encoding
        self._labels: dict[int, str] = {}  # token_labels' label of each id asked for (a view asks for thousands)

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_ranks(cls, mergeable_ranks: dict[bytes, int], pattern: str = SPLIT_PATTERN,
                   name: str = "rustbpe") -> "Tokenizer":
        """Specials are appended after the BPE ranks, in nanochat's order."""
        offset = len(mergeable_ranks)
        if sorted(mergeable_ranks.values()) != list(range(offset)):
            raise ValueError("BPE ranks must be exactly 0..n-1")
        specials = {s: offset + i for i, s in enumerate(SPECIAL_TOKENS)}
        return cls(tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=mergeable_ranks,
                                     special_tokens=specials))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "Tokenizer":
        """Learn BPE merges with rustbpe. `vocab_size` includes the 9 special tokens (as nanochat). On a text too small
        to supply that many merges the vocabulary comes out smaller: read `.vocab_size` for the model config."""
        import rustbpe  # training-only dependency

        n_bpe = vocab_size - len(SPECIAL_TOKENS)
        if n_bpe < 256:
            raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (256 bytes + specials)")
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(iter(texts), n_bpe, pattern=SPLIT_PATTERN)
        ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
        return cls.from_ranks(ranks, trainer.get_pattern())

    def save(self, directory: str | Path) -> None:
        """Write our non-pickle format: the tiktoken rank file plus a JSON of name, pattern and specials."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ranks = sorted(self.encoding._mergeable_ranks.items(), key=lambda kv: kv[1])
        lines = [f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in ranks]
        (directory / RANKS_FILE).write_text("".join(lines), encoding="ascii")
        config = {"format": FORMAT, "name": self.encoding.name, "pattern": self.encoding._pat_str,
                  "special_tokens": self.encoding._special_tokens}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> "Tokenizer":
        """Read the format written by `save`."""
        directory = Path(directory)
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise ValueError(f"{directory / CONFIG_FILE}: unknown tokenizer format {config.get('format')!r}")
        ranks = {}
        for lineno, line in enumerate((directory / RANKS_FILE).read_text(encoding="ascii").splitlines(), 1):
            if not line:
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as e:
                raise ValueError(f"{directory / RANKS_FILE}:{lineno}: bad line {line!r}") from e
        specials = {str(k): int(v) for k, v in config["special_tokens"].items()}
        return cls(tiktoken.Encoding(name=config["name"], pat_str=config["pattern"], mergeable_ranks=ranks,
                                     special_tokens=specials))

    @classmethod
    def from_nanochat_pickle(cls, path: str | Path) -> "Tokenizer":
        """Load nanochat's `tokenizer.pkl` (a pickled tiktoken Encoding) without running arbitrary code.

        The pickle may only name `tiktoken.core.Encoding` (mapped to an inert stand-in that just receives the state)
        and the helpers the standard pickle protocols use to rebuild bytes and plain objects. Anything else is
        refused with `UnsafePickleError` before it is called. The Encoding is then built by us from the checked state.
        """
        with open(path, "rb") as f:
            try:
                obj = _RestrictedUnpickler(f).load()
            except UnsafePickleError as e:
                raise UnsafePickleError(f"{path}: {e}") from None
        if not isinstance(obj, _EncodingState):
            raise UnsafePickleError(f"{path}: expected a pickled tiktoken Encoding, got {type(obj).__name__}")
        return cls(obj.to_encoding(path))

    # ---- basic API ----------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of token ids, specials included."""
        return self.encoding.n_vocab

    @property
    def bos_token_id(self) -> int:
        return self.special_id("<|bos|>")

    def special_id(self, name: str) -> int:
        """Id of a special token, e.g. special_id("<|assistant_end|>")."""
        try:
            return self.encoding._special_tokens[name]
        except KeyError:
            raise KeyError(f"not a special token: {name!r}") from None

    def is_special(self, token_id: int) -> bool:
        return token_id in self.encoding._special_token_values

    def encode(self, text: str) -> list[int]:
        """Ordinary text -> ids. Never yields a special token, whatever the text contains."""
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids))

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (a special token gives its text, e.g. b"<|bos|>"). KeyError if unknown."""
        if not 0 <= token_id < self.vocab_size:
            raise KeyError(f"token id {token_id} outside the vocabulary (0..{self.vocab_size - 1})")
        return self.encoding.decode_single_token_bytes(token_id)

    def token_labels(self, ids: Iterable[int]) -> list[str]:
        """Readable labels for plot axes: "·the" (· = space), "\\n", "<|bos|>", "\\xe4\\xbd" for bytes that are only
        part of a character, "\\x1a" for other control characters (invisible, and an SVG holding one is not valid XML:
        Plotly's PNG export fails on it), "#51234" for ids the tokenizer does not have (the model's vocab may be
        padded)."""
        labels = self._labels
        return [labels[i] if i in labels else labels.setdefault(i, self._label(i)) for i in map(int, ids)]

    def _label(self, token_id: int) -> str:
        try:
            raw = self.token_bytes(token_id)
        except KeyError:  # beyond the tokenizer (a padded model vocab) or a hole in the id space
            return f"#{token_id}"
        if self.is_special(token_id):
            return raw.decode("utf-8")
        text = raw.decode("utf-8", errors="backslashreplace")
        text = text.replace(" ", "·").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)

    # ---- chat format (as nanochat) ------------------------------------------------------------------------------
    def render_conversation(self, messages: list[Message]) -> tuple[list[int], list[int]]:
        """Conversation -> (ids, mask). mask is 1 on the tokens the assistant is trained to produce.

        Layout: <|bos|>, then alternating user/assistant turns, user text in <|user_start|>..<|user_end|>,
        assistant text in <|assistant_start|>..<|assistant_end|>. A leading system message is merged into the first
        user message (nanochat has no system role). Assistant content may be a string or a list of parts
        {"type": "text"|"python"|"python_output", "text": str}; tool output is not trained on (mask 0).
        """
        messages = _merge_system(messages)
        ids, mask = [self.bos_token_id], [0]

        def add(tokens: list[int], m: int) -> None:
            ids.extend(tokens)
            mask.extend([m] * len(tokens))

        for i, message in enumerate(messages):
            expected = "user" if i % 2 == 0 else "assistant"
            if message.get("role") != expected:
                raise ValueError(f"message {i} must be from {expected}, got role {message.get('role')!r}")
            content = message.get("content")
            if expected == "user":
                if not isinstance(content, str):
                    raise ValueError(f"message {i}: user content must be a string")
                add([self.special_id("<|user_start|>")], 0)
                add(self.encode(content), 0)
                add([self.special_id("<|user_end|>")], 0)
            else:
                add([self.special_id("<|assistant_start|>")], 0)
                for kind, text in _assistant_parts(content, i):
                    if kind == "text":
                        add(self.encode(text), 1)
                    elif kind == "python":
                        add([self.special_id("<|python_start|>")], 1)
                        add(self.encode(text), 1)
                        add([self.special_id("<|python_end|>")], 1)
                    else:  # python_output: comes from the tool at inference time, so it is not a training target
                        add([self.special_id("<|output_start|>")], 0)
                        add(self.encode(text), 0)
                        add([self.special_id("<|output_end|>")], 0)
                add([self.special_id("<|assistant_end|>")], 1)
        return ids, mask

    def render_for_completion(self, messages: list[Message]) -> list[int]:
        """Prompt for the assistant's next reply: the conversation, then <|assistant_start|>.

        As nanochat, a trailing assistant message (the reply to be regenerated) is dropped first.
        """
        if messages and messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        if not _merge_system(messages):
            raise ValueError("need at least one user message")
        ids, _ = self.render_conversation(messages)
        return ids + [self.special_id("<|assistant_start|>")]


def _merge_system(messages: list[Message]) -> list[Message]:
    if messages and messages[0].get("role") == "system":
        if len(messages) < 2 or messages[1].get("role") != "user":
            raise ValueError("a system message must be followed by a user message")
        first = {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
        return [first] + list(messages[2:])
    return list(messages)


def _assistant_parts(content, index: int) -> list[tuple[str, str]]:
    if isinstance(content, str):
        return [("text", content)]
    if isinstance(content, list):
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("text", "python", "python_output") or not isinstance(part.get("text"), str):
                raise ValueError(f"message {index}: bad assistant part {part!r}")
            parts.append((kind, part["text"]))
        return parts
    raise ValueError(f"message {index}: assistant content must be a string or a list of parts")


# ---- restricted unpickling of nanochat's tokenizer.pkl ---------------------------------------------------------
class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something a pickled tiktoken Encoding never needs."""


class _EncodingState:
    """Inert stand-in for tiktoken.core.Encoding while unpickling: it only stores the state it is given."""

    state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def to_encoding(self, path) -> tiktoken.Encoding:
        s = self.state
        if isinstance(s, str):  # tiktoken pickles its registered encodings by name; that would mean a download
            raise UnsafePickleError(f"{path}: pickle refers to the registered encoding {s!r}, not a nanochat one")
        ok = (isinstance(s, dict) and set(s) == {"name", "pat_str", "mergeable_ranks", "special_tokens"}
              and isinstance(s["name"], str) and isinstance(s["pat_str"], str)
              and isinstance(s["mergeable_ranks"], dict) and isinstance(s["special_tokens"], dict)
              and all(type(k) is bytes and type(v) is int for k, v in s["mergeable_ranks"].items())
              and all(type(k) is str and type(v) is int for k, v in s["special_tokens"].items()))
        if not ok:
            raise UnsafePickleError(f"{path}: pickled Encoding state is not name/pat_str/mergeable_ranks/special_tokens")
        return tiktoken.Encoding(name=s["name"], pat_str=s["pat_str"], mergeable_ranks=s["mergeable_ranks"],
                                 special_tokens=s["special_tokens"])


def _reconstruct_plain(cls, base, state):
    """Protocols 0/1 rebuild objects with copyreg._reconstructor(cls, object, None); only our stand-in may be cls."""
    if cls is not _EncodingState or base is not object or state is not None:
        raise UnsafePickleError("copyreg._reconstructor used for something other than a tiktoken Encoding")
    return _EncodingState()


def _latin1_bytes(text, encoding):
    """Protocols 0-2 store bytes as _codecs.encode(str, 'latin1'); allow exactly that."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError("_codecs.encode used for something other than latin1 bytes")
    return text.encode("latin1")


# What a pickled tiktoken Encoding references, by protocol: 0/1 copyreg._reconstructor + object (spelled with their
# Python 2 names copy_reg/__builtin__ in those protocols); 0-2 _codecs.encode (bytes); all tiktoken.core.Encoding.
# Everything else (os.system, builtins.eval, ...) is refused.
_ALLOWED_GLOBALS = {
    ("tiktoken.core", "Encoding"): _EncodingState,
    ("copy_reg", "_reconstructor"): _reconstruct_plain,
    ("__builtin__", "object"): object,
    ("_codecs", "encode"): _latin1_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(f"refused to load global {module}.{name} from a tokenizer pickle "
                                    "(only what a tiktoken Encoding needs is allowed)")
        return allowed


__all__ = ["Tokenizer", "UnsafePickleError", "SPECIAL_TOKENS", "SPLIT_PATTERN"]
