"""transformers' NanoChat format (gpt/hf_format.py, gpt/export.py), both ways, held against transformers itself.

Tolerances, float32 on CPU. transformers computes the rotary cos/sin in float32; nanochat rounds them to bfloat16
values, and nothing in a config or the weights can express that rounding. So transformers' stock logits differ from
ours by a few 1e-3 on the tiny model (2.8e-2 on the shipped d8; the argmax agrees); with its tables rounded the same
way (`rounded_rotary`) the two forwards agree to float rounding (bitwise, here). A save_pretrained folder also carries
transformers' rms_norm_eps 1e-6 (ours: float32's eps), about 1e-4 on these logits.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_CORPUS, make_tiny_model
from gpt.checkpoint import CheckpointError, build_model, load_model, save_model
from gpt.export import main as export_main
from gpt.hf_format import NORM_EPS, from_transformers, to_transformers, tokenizer_from_json, tokenizer_json
from gpt.nanochat import TODAY, TUTORIAL, GPTConfig, member, new_model
from gpt.tokenizer import Tokenizer

MIXED = "Hello 世界 🚀, the model reads 3.14159 and 42! 老师打开笔记本 👍🏽 🇨🇳 mixed 中文 and English.\n  tabs\tend"
WITH_SPECIALS = "<|bos|><|user_start|>你好 🎉<|user_end|><|assistant_start|>Hi!<|assistant_end|>"
STOCK_ATOL = 1e-2  # the rotary tables' bf16 rounding (see the module doc)
EXACT_ATOL = 1e-5  # float rounding


@pytest.fixture(scope="module")
def source(tiny_tokenizer):
    """The tiny perturbed model and the transformers folder it was exported to."""
    return make_tiny_model(tiny_tokenizer.vocab_size, seed=3)


@pytest.fixture(scope="module")
def exported(source, tiny_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    to_transformers(source, tiny_tokenizer, out)
    return out


@pytest.fixture(scope="module")
def ids(tiny_tokenizer):
    return torch.tensor([tiny_tokenizer.encode(MIXED * 2)[:60], tiny_tokenizer.encode("The teacher 问了 🚀" * 9)[:60]])


@pytest.fixture
def rounded_rotary(monkeypatch):
    """transformers' rotary tables rounded to bf16 values, as nanochat's: the one difference left in its forward."""
    mn = pytest.importorskip("transformers.models.nanochat.modeling_nanochat")
    stock = mn.NanoChatRotaryEmbedding.forward

    def forward(self, x, position_ids):
        cos, sin = stock(self, x, position_ids)
        return cos.bfloat16().to(cos.dtype), sin.bfloat16().to(sin.dtype)

    monkeypatch.setattr(mn.NanoChatRotaryEmbedding, "forward", forward)


def hf_model(folder):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def copy_folder(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


# ---- export -------------------------------------------------------------------------------------------------------
def test_export_writes_transformers_names_and_config(exported, source):
    from safetensors.torch import load_file

    files = sorted(p.name for p in exported.iterdir())
    assert files == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json"]
    hf = json.loads((exported / "config.json").read_text())
    c = source.config
    assert (hf["model_type"], hf["architectures"], hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"],
            hf["num_attention_heads"], hf["num_key_value_heads"], hf["max_position_embeddings"], hf["vocab_size"]) == (
        "nanochat", ["NanoChatForCausalLM"], c.n_embd, 4 * c.n_embd, c.n_layer, c.n_head, c.n_kv_head,
        c.sequence_len, c.vocab_size)
    assert hf["rms_norm_eps"] == torch.finfo(torch.float32).eps and hf["final_logit_softcapping"] == 15.0
    assert hf["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0} and hf["hidden_act"] == "relu2"
    weights = load_file(exported / "model.safetensors")
    assert torch.equal(weights["model.layers.1.self_attn.k_proj.weight"], source.transformer.h[1].attn.c_k.weight)
    assert torch.equal(weights["model.layers.0.mlp.fc2.weight"], source.transformer.h[0].mlp.c_proj.weight)
    assert len(weights) == len(source.state_dict())


def test_transformers_computes_our_logits(exported, source, ids):
    model = hf_model(exported)
    assert type(model).__name__ == "NanoChatForCausalLM"
    with torch.no_grad():
        ours, theirs = source(ids), model(ids).logits
    assert theirs.shape == ours.shape
    assert (ours - theirs).abs().max() < STOCK_ATOL
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_transformers_with_nanochats_rotary_rounding_agrees_to_float_rounding(exported, source, ids, rounded_rotary):
    model = hf_model(exported)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source(ids), atol=EXACT_ATOL, rtol=0)
        # the cache path too: a prefix, then one token at a time
        out = model(ids[:, :40], use_cache=True)
        step = model(ids[:, 40:41], cache=out.cache).logits
    torch.testing.assert_close(step[:, -1], source(ids[:, :41])[:, -1], atol=EXACT_ATOL, rtol=0)


def test_round_trip_gives_our_logits_exactly(exported, source, ids, tiny_tokenizer):
    loaded = from_transformers(exported, "cpu", torch.float32)
    assert loaded.arch == source.member.name == TUTORIAL.name
    assert loaded.meta["notes"] == [] and loaded.dtype == torch.float32
    reference = build_model(source.config, source.member, {k: v.clone() for k, v in source.state_dict().items()},
                            torch.device("cpu"), torch.float32)  # fused, as every loaded model
    with torch.no_grad():
        assert torch.equal(loaded.model(ids), reference(ids))
        torch.testing.assert_close(loaded.model(ids), source(ids), atol=EXACT_ATOL, rtol=0)
    assert loaded.tokenizer.encoding._mergeable_ranks == tiny_tokenizer.encoding._mergeable_ranks
    assert loaded.tokenizer.encoding._special_tokens == tiny_tokenizer.encoding._special_tokens


def test_sharded_bf16_export_round_trips(source, tiny_tokenizer, tmp_path, ids):
    written = to_transformers(source, tiny_tokenizer, tmp_path, dtype=torch.bfloat16, max_shard_bytes=40_000)
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json") in written
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = from_transformers(tmp_path, "cpu", "float32")
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v.bfloat16().float()), k
    to_transformers(source, tiny_tokenizer, tmp_path)  # an export over it leaves no stale shards behind
    assert sorted(p.name for p in tmp_path.glob("model*.safetensors*")) == ["model.safetensors"]


# ---- a folder written by transformers itself ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_by_transformers(tiny_tokenizer, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    torch.manual_seed(0)
    config = transformers.NanoChatConfig(vocab_size=tiny_tokenizer.vocab_size, hidden_size=32, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64)
    model = transformers.NanoChatForCausalLM(config).eval()
    with torch.no_grad():  # weights of a trained scale, not the 0.02 init (which makes every logit ~0)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) / math.sqrt(p.shape[-1]))
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    backend = tokenizers.Tokenizer.from_str(json.dumps(tokenizer_json(tiny_tokenizer)))
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|bos|>").save_pretrained(folder)
    return folder, model


def test_save_pretrained_folder_loads_with_transformers_logits(saved_by_transformers, ids, tiny_tokenizer,
                                                               rounded_rotary):
    folder, model = saved_by_transformers
    loaded = from_transformers(folder, "cpu", torch.float32)
    assert loaded.meta["transformers_version"] and "rms_norm_eps is 1e-06" in loaded.meta["notes"][0]
    assert loaded.tokenizer.encode(MIXED) == tiny_tokenizer.encode(MIXED)
    with torch.no_grad():
        ours = loaded.model(ids)
        rounded = model(ids).logits  # rotary as nanochat's; the eps still transformers' 1e-6
        assert (ours - rounded).abs().max() < 1e-3
        for m in model.modules():
            if type(m).__name__ == "NanoChatRMSNorm":
                m.eps = NORM_EPS
        try:
            torch.testing.assert_close(model(ids).logits, ours, atol=EXACT_ATOL, rtol=0)
        finally:
            for m in model.modules():
                if type(m).__name__ == "NanoChatRMSNorm":
                    m.eps = 1e-6


def test_save_pretrained_folder_stock_logits_within_tolerance(saved_by_transformers, ids):
    folder, model = saved_by_transformers
    with torch.no_grad():
        ours, theirs = from_transformers(folder, "cpu", torch.float32).model(ids), model(ids).logits
    assert (ours - theirs).abs().max() < STOCK_ATOL


def test_folder_without_tokenizer_takes_one_given(saved_by_transformers, tiny_tokenizer, tmp_path):
    folder = copy_folder(saved_by_transformers[0], tmp_path / "f")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        from_transformers(folder, "cpu")
    assert from_transformers(folder, "cpu", tokenizer=tiny_tokenizer).tokenizer is tiny_tokenizer


# ---- tokenizer ----------------------------------------------------------------------------------------------------
def test_tokenizer_json_round_trips_to_the_same_ids(exported, tiny_tokenizer):
    back = tokenizer_from_json(exported / "tokenizer.json")
    assert back.encoding._mergeable_ranks == tiny_tokenizer.encoding._mergeable_ranks
    assert back.encoding._special_tokens == tiny_tokenizer.encoding._special_tokens
    assert back.encoding._pat_str == tiny_tokenizer.encoding._pat_str
    assert back.encode(MIXED) == tiny_tokenizer.encode(MIXED)
    assert (back.encoding.encode(WITH_SPECIALS, allowed_special="all")
            == tiny_tokenizer.encoding.encode(WITH_SPECIALS, allowed_special="all"))


def test_auto_tokenizer_encodes_like_ours(exported, tiny_tokenizer):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    ours = tiny_tokenizer.encode(MIXED)
    assert len(ours) > 20 and tok.encode(MIXED, add_special_tokens=False) == ours
    assert tok(MIXED)["input_ids"] == [tiny_tokenizer.bos_token_id] + ours  # a document starts with <|bos|>
    assert (tok.encode(WITH_SPECIALS, add_special_tokens=False)
            == tiny_tokenizer.encoding.encode(WITH_SPECIALS, allowed_special="all"))
    assert tok.decode(ours) == MIXED
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好 🚀"},
                {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "Again?"}]
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    rendered = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
    assert rendered == tiny_tokenizer.render_for_completion(messages)


def test_tokenizers_library_matches_tiktoken_on_odd_text(exported, tiny_tokenizer):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(exported / "tokenizer.json"))
    g = torch.Generator().manual_seed(0)
    alphabet = "ab 12 3\n\r\t  老师文🚀😀👍🏽é'sve'LL.,!?" + "".join(map(chr, range(0x20, 0x7F)))
    for _ in range(50):
        text = "".join(alphabet[i] for i in torch.randint(len(alphabet), (80,), generator=g))
        assert tok.encode(text, add_special_tokens=False).ids == tiny_tokenizer.encode(text), repr(text)


def test_tokenizer_without_nanochat_specials_is_refused(exported, tmp_path):
    data = json.loads((exported / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in ("<|python_start|>", "<|bos|>")]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"special token\(s\) \['<\|bos\|>', '<\|python_start\|>'\]"):
        tokenizer_from_json(tmp_path / "tokenizer.json")


# ---- corrupt and unsupported folders ------------------------------------------------------------------------------
def _edit_config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        for k, v in changes.items():
            if v is _DROP:
                config.pop(k)
            else:
                config[k] = v
        (folder / "config.json").write_text(json.dumps(config))
    return edit


_DROP = object()


def _truncate(name, keep=0.5):
    def edit(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])
    return edit


def _drop_tensor(folder):
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    del weights["model.layers.1.mlp.fc1.weight"]
    save_file(weights, folder / "model.safetensors")


def _pickles_only(folder):
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")


@pytest.mark.parametrize("edit, message", [
    (lambda f: (f / "config.json").unlink(), r"config.json is missing"),
    (_truncate("config.json"), r"config.json: not JSON .*truncated"),
    (_edit_config(hidden_size=_DROP, num_hidden_layers=_DROP), r"missing key\(s\) \['hidden_size', 'num_hidden_layers'\]"),
    (_edit_config(model_type="llama"), r"model_type 'llama', not 'nanochat'"),
    (_edit_config(rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), r"rope_theta 500000.0"),
    (_edit_config(rope_parameters={"rope_type": "yarn", "factor": 4.0}), r"rope type 'yarn'"),
    (_edit_config(hidden_act="gelu", final_logit_softcapping=None),
     r"hidden_act 'gelu' .*final_logit_softcapping None"),
    (_edit_config(intermediate_size=100), r"intermediate_size 100 \(ours is 4 x hidden_size = 128\)"),
    (_edit_config(rms_norm_eps=1e-3), r"rms_norm_eps 0.001"),
    (_edit_config(num_key_value_heads=3), r"not a multiple of num_key_value_heads 3"),
    (_edit_config(vocab_size=999), r"tokenizer has \d+ tokens but the model's vocab_size is 999"),
    (_truncate("model.safetensors", 0.7), r"model.safetensors: not a readable safetensors file .*truncated"),
    (_truncate("model.safetensors", 0.0), r"model.safetensors: not a readable safetensors file"),
    (_drop_tensor, r"missing tensor\(s\) \['model.layers.1.mlp.fc1.weight'\]"),
    (_pickles_only, r"weights only as pickles \['pytorch_model.bin'\]"),
    (_truncate("tokenizer.json"), r"tokenizer.json: not JSON"),
])
def test_corrupt_or_unsupported_folder_names_the_problem(exported, tmp_path, edit, message):
    folder = copy_folder(exported, tmp_path / "f")
    edit(folder)
    with pytest.raises(CheckpointError, match=message):
        from_transformers(folder, "cpu")


def test_missing_shard_is_named(source, tiny_tokenizer, tmp_path):
    to_transformers(source, tiny_tokenizer, tmp_path, max_shard_bytes=40_000)
    second = sorted(tmp_path.glob("model-*.safetensors"))[1]
    second.unlink()
    with pytest.raises(CheckpointError, match=rf"missing weight shard\(s\) \['{second.name}'\] listed in"):
        from_transformers(tmp_path, "cpu")


def test_tied_embeddings_read_as_transformers_ties_them(exported, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = copy_folder(exported, tmp_path / "f")
    _edit_config(tie_word_embeddings=True)(folder)
    weights = load_file(folder / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, folder / "model.safetensors")
    loaded = from_transformers(folder, "cpu")
    assert torch.equal(loaded.model.lm_head.weight, weights["model.embed_tokens.weight"])
    assert any("tie_word_embeddings" in n for n in loaded.meta["notes"])


def test_our_own_format_gets_a_hint(source, tiny_tokenizer, tmp_path):
    save_model(tmp_path, source, tiny_tokenizer)
    with pytest.raises(CheckpointError, match="Inside Forward's own format"):
        from_transformers(tmp_path, "cpu")


def test_todays_forward_is_refused_naming_what_transformers_lacks(tiny_tokenizer, tmp_path):
    config = GPTConfig(sequence_len=64, vocab_size=tiny_tokenizer.vocab_size, n_layer=2, n_head=4, n_kv_head=2,
                       n_embd=32, window_pattern="SL")
    model = new_model(config, TODAY)
    with pytest.raises(CheckpointError, match=r"nanochat a825e63 does not convert") as e:
        to_transformers(model, tiny_tokenizer, tmp_path)
    # what a825e63 adds that transformers' NanoChat has no place for: value embeddings (e85db6b), smear and backout
    # (a825e63), resid/x0 lambdas (aa530cd), the q/k scale (1.2), sliding windows (fbc1484), rotary base 100000
    for feature in ("value embeddings", "smear", "resid_lambdas", "backout", "scale on q and k", "sliding-window",
                    "rotary base"):
        assert feature in str(e.value)
    assert "padded" not in str(e.value)  # a padded vocab converts (its extra rows are cropped)
    assert not any(tmp_path.iterdir())


def test_padded_vocab_member_converts_cropped(tmp_path, rounded_rotary):
    """f1bf69d (vocab padded to a multiple of 64, softcap in float32) is the tutorial's forward on V of its rows:
    the export crops wte and lm_head to V, and transformers and the round trip compute its logits."""
    from safetensors.torch import load_file

    tokenizer = Tokenizer.train(TINY_CORPUS, 300)
    V = tokenizer.vocab_size
    assert V % 64 != 0  # so the padding is exercised
    padded = make_tiny_model(V, seed=4, member=member("f1bf69d"))
    assert padded.transformer.wte.weight.shape[0] == padded.lm_head.weight.shape[0] == -(-V // 64) * 64
    to_transformers(padded, tokenizer, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert torch.equal(weights["model.embed_tokens.weight"], padded.transformer.wte.weight[:V])
    assert torch.equal(weights["lm_head.weight"], padded.lm_head.weight[:V])
    assert json.loads((tmp_path / "config.json").read_text())["vocab_size"] == V
    ids = torch.tensor([tokenizer.encode(MIXED * 2)[:50]])
    with torch.no_grad():
        ours = padded(ids)
        assert ours.shape == (1, 50, V)
        torch.testing.assert_close(hf_model(tmp_path)(ids).logits, ours, atol=EXACT_ATOL, rtol=0)
        loaded = from_transformers(tmp_path, "cpu", torch.float32)
        assert loaded.arch == TUTORIAL.name  # read back as the tutorial's forward: the same function on V rows
        torch.testing.assert_close(loaded.model(ids), ours, atol=EXACT_ATOL, rtol=0)


# ---- the command line ---------------------------------------------------------------------------------------------
def test_export_command_line(source, tiny_tokenizer, tmp_path, capsys, ids):
    save_model(tmp_path / "ours", source, tiny_tokenizer, meta={"name": "tiny"})
    out = tmp_path / "hf"
    assert export_main(["--model", str(tmp_path / "ours"), "--format", "transformers", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny" in printed and "model.safetensors" in printed and "tokenizer.json" in printed
    with torch.no_grad():
        assert torch.equal(from_transformers(out, "cpu").model(ids), load_model(tmp_path / "ours", "cpu").model(ids))
    assert export_main(["--model", str(tmp_path / "nowhere"), "--format", "transformers", str(out)]) == 1
    assert "error:" in capsys.readouterr().err
