"""Tokenizer: rustbpe training exported to tiktoken, specials, chat layout, our file format, safe pickle loading."""
from __future__ import annotations

import base64
import pickle

import pytest
import rustbpe

from conftest import TINY_CORPUS, TINY_VOCAB
from payloads import Evals, RunsShell
from gpt.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer, UnsafePickleError

# Text the tokenizer has seen and text it has not (rare CJK characters and emoji fall back to single bytes).
SAMPLES = [
    "The teacher opened the notebook.",
    "Numbers: 1, 22, 333, 4444, 3.14159 and 2025!\n\tTabs and  double  spaces.",
    "老师打开笔记本，问了同学们一个简单的问题。",
    "龘靐齉 鱻 𠀀 — rare characters, one outside the BMP.",
    "Emoji: 😀🎉👍🏽🚀 ❤️ 🇨🇳 🦜🧠 and a ZWJ family 👨‍👩‍👧.",
    "",
]
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(tiny_tokenizer, text):
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(text)) == text


def test_tiktoken_export_matches_rustbpe(tiny_tokenizer):
    """The exported tiktoken Encoding encodes exactly as the rustbpe tokenizer that learned the merges."""
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(TINY_CORPUS), TINY_VOCAB - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    for text in SAMPLES + TINY_CORPUS[:3]:
        assert tiny_tokenizer.encode(text) == trainer.encode(text)
    assert len(tiny_tokenizer.encode(TINY_CORPUS[0])) < len(TINY_CORPUS[0].encode()) / 2  # merges were learned


def test_split_pattern_is_gpt4_with_two_digit_numbers(tiny_tokenizer):
    assert SPLIT_PATTERN == GPT4_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}{1,2}")
    assert tiny_tokenizer.encoding._pat_str == SPLIT_PATTERN
    pieces = [tiny_tokenizer.decode([i]) for i in tiny_tokenizer.encode("1234567")]
    assert "".join(pieces) == "1234567" and all(len(p) <= 2 for p in pieces)


def test_special_tokens_follow_the_bpe_ranks(tiny_tokenizer):
    n_bpe = len(tiny_tokenizer.encoding._mergeable_ranks)
    assert tiny_tokenizer.vocab_size == TINY_VOCAB == n_bpe + 9
    assert [tiny_tokenizer.special_id(s) for s in SPECIAL_TOKENS] == list(range(n_bpe, n_bpe + 9))
    assert tiny_tokenizer.bos_token_id == n_bpe
    with pytest.raises(KeyError, match="not a special token"):
        tiny_tokenizer.special_id("<|endoftext|>")


def test_train_rejects_too_small_vocab():
    with pytest.raises(ValueError, match="at least 265"):
        Tokenizer.train(["abc"], 264)


def test_special_token_text_in_user_input_stays_text(tiny_tokenizer):
    text = "<|bos|>hi<|assistant_end|> <|user_start|>"
    ids = tiny_tokenizer.encode(text)
    specials = {tiny_tokenizer.special_id(s) for s in SPECIAL_TOKENS}
    assert not specials & set(ids)
    assert tiny_tokenizer.decode(ids) == text
    ids, _ = tiny_tokenizer.render_conversation([{"role": "user", "content": text}])
    expected = [tiny_tokenizer.special_id(s) for s in ("<|bos|>", "<|user_start|>")] + tiny_tokenizer.encode(text) + \
        [tiny_tokenizer.special_id("<|user_end|>")]
    assert ids == expected


def _expected_chat(tok, turns, system=None):
    """Independent layout: bos, then each (role, text) wrapped in its start/end specials; mask on assistant output."""
    S = tok.special_id
    ids, mask = [S("<|bos|>")], [0]
    for i, (role, text) in enumerate(turns):
        if role == "user":
            if i == 0 and system is not None:
                text = system + "\n\n" + text
            body = [S("<|user_start|>")] + tok.encode(text) + [S("<|user_end|>")]
            ids += body
            mask += [0] * len(body)
        else:
            body = tok.encode(text) + [S("<|assistant_end|>")]
            ids += [S("<|assistant_start|>")] + body
            mask += [0] + [1] * len(body)
    return ids, mask


def test_render_conversation_layout(tiny_tokenizer):
    turns = [("user", "你好！What is 2+2?"), ("assistant", "It is 4 🎉"), ("user", "Thanks."), ("assistant", "谢谢")]
    messages = [{"role": r, "content": c} for r, c in turns]
    assert tiny_tokenizer.render_conversation(messages) == _expected_chat(tiny_tokenizer, turns)


def test_system_message_is_merged_into_first_user_message(tiny_tokenizer):
    turns = [("user", "Hi"), ("assistant", "Hello!")]
    messages = [{"role": "system", "content": "Be brief."}] + [{"role": r, "content": c} for r, c in turns]
    assert tiny_tokenizer.render_conversation(messages) == _expected_chat(tiny_tokenizer, turns, system="Be brief.")


def test_render_for_completion(tiny_tokenizer):
    S = tiny_tokenizer.special_id
    turns = [("user", "Hi"), ("assistant", "Hello!"), ("user", "讲个故事")]
    messages = [{"role": r, "content": c} for r, c in turns]
    expected = _expected_chat(tiny_tokenizer, turns)[0] + [S("<|assistant_start|>")]
    assert tiny_tokenizer.render_for_completion(messages) == expected
    # As nanochat: a trailing assistant message (the reply to regenerate) is dropped.
    assert tiny_tokenizer.render_for_completion(messages + [{"role": "assistant", "content": "x"}]) == expected


def test_assistant_tool_parts(tiny_tokenizer):
    S, enc = tiny_tokenizer.special_id, tiny_tokenizer.encode
    content = [{"type": "text", "text": "Let me compute."}, {"type": "python", "text": "2**10"},
               {"type": "python_output", "text": "1024"}, {"type": "text", "text": "It is 1024."}]
    ids, mask = tiny_tokenizer.render_conversation([{"role": "user", "content": "2^10?"},
                                                    {"role": "assistant", "content": content}])
    prefix = [S("<|bos|>"), S("<|user_start|>")] + enc("2^10?") + [S("<|user_end|>"), S("<|assistant_start|>")]
    trained1 = enc("Let me compute.") + [S("<|python_start|>")] + enc("2**10") + [S("<|python_end|>")]
    tool = [S("<|output_start|>")] + enc("1024") + [S("<|output_end|>")]
    trained2 = enc("It is 1024.") + [S("<|assistant_end|>")]
    assert ids == prefix + trained1 + tool + trained2
    assert mask == [0] * len(prefix) + [1] * len(trained1) + [0] * len(tool) + [1] * len(trained2)


@pytest.mark.parametrize("messages", [
    [],
    [{"role": "assistant", "content": "I speak first"}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    [{"role": "system", "content": "only a system message"}],
    [{"role": "user", "content": 42}],
])
def test_bad_conversations_raise(tiny_tokenizer, messages):
    with pytest.raises(ValueError):
        tiny_tokenizer.render_for_completion(messages)


def test_save_load_round_trip_without_pickle(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save(tmp_path)
    # The rank file is plain text: "base64(bytes) rank" per line, readable without our code.
    ranks = {}
    for line in (tmp_path / "tokenizer.tiktoken").read_text().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    assert ranks == tiny_tokenizer.encoding._mergeable_ranks
    loaded = Tokenizer.load(tmp_path)
    assert loaded.vocab_size == tiny_tokenizer.vocab_size
    assert [loaded.special_id(s) for s in SPECIAL_TOKENS] == [tiny_tokenizer.special_id(s) for s in SPECIAL_TOKENS]
    for text in SAMPLES:
        assert loaded.encode(text) == tiny_tokenizer.encode(text)


def test_token_labels(tiny_tokenizer):
    tok = tiny_tokenizer
    labels = tok.token_labels(range(tok.vocab_size))
    assert len(set(labels)) == tok.vocab_size  # distinct tokens never share a label
    assert tok.token_labels([tok.bos_token_id, 10**6]) == ["<|bos|>", "#1000000"]
    assert tok.token_labels(tok.encode("\n")) == ["\\n"]
    assert tok.token_labels(tok.encode(" the")) == ["·the"]
    assert tok.token_labels([0xE4]) == ["\\xe4"]  # a lone byte of a 3-byte character: shown as the byte
    assert tok.token_labels(tok.encode("\x1a\x00\x7f")) == ["\\x1a", "\\x00", "\\x7f"]  # control characters


# ---- nanochat's tokenizer.pkl ------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_nanochat_pickle_loads(tiny_tokenizer, tmp_path, protocol):
    path = tmp_path / "tokenizer.pkl"
    with open(path, "wb") as f:
        pickle.dump(tiny_tokenizer.encoding, f, protocol=protocol)  # what nanochat's save does
    loaded = Tokenizer.from_nanochat_pickle(path)
    assert loaded.encoding._mergeable_ranks == tiny_tokenizer.encoding._mergeable_ranks
    assert loaded.encoding._special_tokens == tiny_tokenizer.encoding._special_tokens
    assert loaded.encode(SAMPLES[4]) == tiny_tokenizer.encode(SAMPLES[4])


@pytest.mark.parametrize("payload", [RunsShell, Evals])
def test_payloads_are_live(tmp_path, payload):
    """The payloads the refusal tests use do run under plain pickle.loads (so 'not run' means something)."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("payload, refused", [(RunsShell, "system"), (Evals, "builtins.eval")])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(pickle.dumps(payload(marker)))
    with pytest.raises(UnsafePickleError, match=refused):
        Tokenizer.from_nanochat_pickle(path)
    assert not marker.exists()


def _encoding_pickle(state) -> bytes:
    """A pickle shaped like a pickled tiktoken Encoding (NEWOBJ of tiktoken.core.Encoding, then BUILD with `state`)."""
    body = pickle.dumps(state, protocol=2)[2:-1]  # strip PROTO and STOP
    return b"\x80\x02ctiktoken.core\nEncoding\n)\x81" + body + b"b."


def test_encoding_pickle_helper_is_realistic(tiny_tokenizer, tmp_path):
    e = tiny_tokenizer.encoding
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(_encoding_pickle({"name": e.name, "pat_str": e._pat_str, "mergeable_ranks": e._mergeable_ranks,
                                       "special_tokens": e._special_tokens}))
    assert pickle.loads(path.read_bytes()).encode_ordinary(SAMPLES[2]) == tiny_tokenizer.encode(SAMPLES[2])
    assert Tokenizer.from_nanochat_pickle(path).encode(SAMPLES[2]) == tiny_tokenizer.encode(SAMPLES[2])


def test_malicious_global_inside_encoding_state_is_refused(tmp_path):
    """An Encoding pickle with a payload hidden in its state: refused before the payload runs."""
    marker = tmp_path / "pwned"
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(_encoding_pickle({"name": "x", "pat_str": SPLIT_PATTERN, "special_tokens": {},
                                       "mergeable_ranks": {b"a": RunsShell(marker)}}))
    with pytest.raises(UnsafePickleError, match="system"):
        Tokenizer.from_nanochat_pickle(path)
    assert not marker.exists()


def test_encoding_state_of_wrong_types_is_refused(tmp_path):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(_encoding_pickle({"name": "x", "pat_str": SPLIT_PATTERN, "special_tokens": {},
                                       "mergeable_ranks": {"a": 0}}))  # str instead of bytes
    with pytest.raises(UnsafePickleError, match="state"):
        Tokenizer.from_nanochat_pickle(path)


def test_pickle_of_a_registered_encoding_name_is_refused(tmp_path):
    """tiktoken pickles its registered encodings by name; loading one would mean a download. Refuse it."""
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(_encoding_pickle("cl100k_base"))
    with pytest.raises(UnsafePickleError, match="cl100k_base"):
        Tokenizer.from_nanochat_pickle(path)
