"""StreamDecoder: streamed text equals the full decode, and no step ever shows a broken character."""
from __future__ import annotations

import pytest

from gpt.detok import StreamDecoder

CJK_EMOJI = "模型读到龙 🐉 和 龘靐齉 𠀀，然后说：你好世界！👨‍👩‍👧 🇨🇳 ❤️ done."


def _longest_valid_prefix(data: bytes) -> str:
    """Reference: the longest prefix of `data` that is complete UTF-8 (at most 3 trailing bytes can be pending)."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    raise AssertionError("not valid UTF-8 apart from a short tail")


def test_streaming_cjk_and_emoji(tiny_tokenizer):
    ids = tiny_tokenizer.encode(CJK_EMOJI)
    pieces = [tiny_tokenizer.token_bytes(i) for i in ids]
    assert any(_longest_valid_prefix(p).encode() != p for p in pieces)  # some characters really are split
    decoder = StreamDecoder(tiny_tokenizer)
    shown, held_back_steps = "", 0
    for n, i in enumerate(ids, 1):
        delta = decoder.push(i)
        assert "\ufffd" not in delta
        held_back_steps += delta == ""
        shown += delta
        assert shown == _longest_valid_prefix(b"".join(pieces[:n]))
    shown += decoder.flush()
    assert shown == tiny_tokenizer.decode(ids) == CJK_EMOJI
    assert held_back_steps > 0


def test_invalid_bytes_match_full_decode(tiny_tokenizer):
    """Ids that do not form valid UTF-8 (a model can sample anything): same U+FFFD as a full decode."""
    cont, lead = 0x80, 0xE4  # byte tokens: a stray continuation byte, and a 3-byte lead byte
    assert tiny_tokenizer.token_bytes(cont) == b"\x80" and tiny_tokenizer.token_bytes(lead) == b"\xe4"
    ids = [cont] + tiny_tokenizer.encode("ab") + [lead] + tiny_tokenizer.encode("c") + [lead, cont]
    decoder = StreamDecoder(tiny_tokenizer)
    streamed = "".join(decoder.push(i) for i in ids) + decoder.flush()
    assert streamed == tiny_tokenizer.decode(ids) == "\ufffdab\ufffdc\ufffd"


def test_specials_stream_as_their_text(tiny_tokenizer):
    ids = [tiny_tokenizer.bos_token_id] + tiny_tokenizer.encode("你好") + [tiny_tokenizer.special_id("<|user_end|>")]
    decoder = StreamDecoder(tiny_tokenizer)
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == tiny_tokenizer.decode(ids)


def test_pending_and_flush(tiny_tokenizer):
    decoder = StreamDecoder(tiny_tokenizer)
    assert decoder.push(0xE4) == "" and decoder.pending == b"\xe4"
    assert decoder.flush() == "\ufffd"  # an unfinished character at the end of a stream
    assert decoder.pending == b"" and decoder.push(tiny_tokenizer.encode("a")[0]) == "a"


def test_unknown_id_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="not in the tokenizer"):
        StreamDecoder(tiny_tokenizer).push(tiny_tokenizer.vocab_size)
