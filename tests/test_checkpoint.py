"""Checkpoints: nanochat's layout written the way nanochat writes it, our safetensors format, strict errors."""
from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch

from conftest import make_tiny_model
from payloads import RunsShell
from gpt import checkpoint
from gpt.checkpoint import (CheckpointError, build_model, load_default, load_model, load_nanochat, pick_device,
                            random_model, save_model)
from gpt.nanochat import GPT, TUTORIAL, new_model
from gpt.tokenizer import UnsafePickleError


def write_nanochat(base, tokenizer, model, source_dir="chatsft_checkpoints", tag="d2", step=10, edit_sd=None,
                   edit_config=None):
    """Mimic nanochat: pickle.dump(tiktoken Encoding), torch.save(state_dict with torch.compile's prefix), meta json."""
    (base / "tokenizer").mkdir(parents=True, exist_ok=True)
    with open(base / "tokenizer" / "tokenizer.pkl", "wb") as f:
        pickle.dump(tokenizer.encoding, f)
    model_dir = base / source_dir / tag
    model_dir.mkdir(parents=True, exist_ok=True)
    sd = {"_orig_mod." + k: v.clone() for k, v in model.state_dict().items()}
    sd["_orig_mod.transformer.wte.weight"] = sd["_orig_mod.transformer.wte.weight"].bfloat16()  # as nanochat's runs
    if edit_sd:
        edit_sd(sd)
    torch.save(sd, model_dir / f"model_{step:06d}.pt")
    config = dataclasses.asdict(model.config)
    if not model.features.windows:  # nanochat wrote window_pattern from fbc1484 on; the tutorial's config lacks it
        del config["window_pattern"]
    if edit_config:
        edit_config(config)
    meta = {"step": step, "val_bpb": 1.23, "model_config": config, "user_config": {}}
    (model_dir / f"meta_{step:06d}.json").write_text(json.dumps(meta))
    return model_dir


def reference_logits(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    """The writer's logits, with wte rounded to bf16 exactly as it was stored."""
    ref = make_tiny_model(model.config.vocab_size)
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        ref.transformer.wte.weight.copy_(ref.transformer.wte.weight.bfloat16().float())
        return ref(ids)


@pytest.fixture
def ids(tiny_tokenizer):
    return torch.tensor([tiny_tokenizer.encode("Hello 世界 🚀, the model!")])


def test_nanochat_checkpoint_reproduces_logits(tiny_tokenizer, tiny_model, tmp_path, ids):
    write_nanochat(tmp_path, tiny_tokenizer, tiny_model)
    loaded = load_nanochat(tmp_path, source="sft", device="cpu")
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    assert "sft" in loaded.name and "d2" in loaded.name and loaded.meta["val_bpb"] == 1.23
    assert loaded.tokenizer.encode("你好 🚀") == tiny_tokenizer.encode("你好 🚀")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), reference_logits(tiny_model, ids), rtol=0, atol=0)
    # the loaded model is fused for inference and keeps nanochat's bf16 rotary values, stored in its own dtype
    assert all(block.attn.is_fused() for block in loaded.model.transformer.h)
    assert tiny_model.cos.dtype == torch.bfloat16 and loaded.model.cos.dtype == torch.float32
    assert torch.equal(loaded.model.cos, tiny_model.cos.float())
    assert torch.equal(loaded.model.sin, tiny_model.sin.float())


def test_default_picks_largest_depth_and_step(tiny_tokenizer, tmp_path, ids):
    models = {}
    for seed, (tag, step) in enumerate([("d2", 500), ("d10", 5), ("d10", 20), ("d9", 900)]):
        models[tag, step] = make_tiny_model(tiny_tokenizer.vocab_size, seed=seed)
        write_nanochat(tmp_path, tiny_tokenizer, models[tag, step], tag=tag, step=step)

    def logits(**kw):
        with torch.no_grad():
            return load_nanochat(tmp_path, device="cpu", **kw).model(ids)

    torch.testing.assert_close(logits(), reference_logits(models["d10", 20], ids))  # d10 > d9 > d2 numerically
    torch.testing.assert_close(logits(model_tag="d2"), reference_logits(models["d2", 500], ids))
    torch.testing.assert_close(logits(model_tag="d10", step=5), reference_logits(models["d10", 5], ids))
    with pytest.raises(FileNotFoundError, match="model_000007.pt"):
        load_nanochat(tmp_path, model_tag="d10", step=7)


@pytest.mark.parametrize("source, folder", [("base", "base_checkpoints"), ("mid", "mid_checkpoints"),
                                            ("sft", "chatsft_checkpoints"), ("rl", "chatrl_checkpoints")])
def test_source_names_map_to_nanochat_folders(tiny_tokenizer, tmp_path, ids, source, folder):
    written = {}
    for seed, other in enumerate(["base_checkpoints", "mid_checkpoints", "chatsft_checkpoints", "chatrl_checkpoints"]):
        written[other] = make_tiny_model(tiny_tokenizer.vocab_size, seed=seed)
        write_nanochat(tmp_path, tiny_tokenizer, written[other], source_dir=other)
    with torch.no_grad():
        torch.testing.assert_close(load_nanochat(tmp_path, source=source).model(ids),
                                   reference_logits(written[folder], ids))


def test_base_dir_from_environment(tiny_tokenizer, tiny_model, tmp_path, monkeypatch):
    write_nanochat(tmp_path, tiny_tokenizer, tiny_model, source_dir="base_checkpoints")
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    assert load_nanochat(source="base").source == str(tmp_path / "base_checkpoints" / "d2")
    with pytest.raises(ValueError, match="unknown source"):
        load_nanochat(source="chat")
    with pytest.raises(FileNotFoundError, match="mid_checkpoints"):
        load_nanochat(source="mid")


@pytest.mark.parametrize("edit_sd, message, strict", [
    (lambda sd: sd.pop("_orig_mod.lm_head.weight"), r"closest is 4a87a0d .* no lm_head\.weight",
     r"missing key.*lm_head\.weight"),
    (lambda sd: sd.update({"_orig_mod.transformer.h.0.attn.gate.weight": torch.zeros(4, 4)}),
     r"closest is 4a87a0d .* unexpected transformer\.h\.0\.attn\.gate\.weight",
     r"unexpected key.*transformer\.h\.0\.attn\.gate\.weight"),
    (lambda sd: sd.update({"_orig_mod.transformer.h.1.mlp.c_fc.weight": torch.zeros(64, 32)}),
     r"closest is 4a87a0d .* transformer\.h\.1\.mlp\.c_fc\.weight is \[64, 32\], not \[128, 32\]",
     r"shape mismatch for transformer\.h\.1\.mlp\.c_fc\.weight.*\(64, 32\).*\(128, 32\)"),
])
def test_strict_state_dict_errors_name_the_key(tiny_tokenizer, tiny_model, tmp_path, edit_sd, message, strict):
    """Files that fit no member are refused by the detection, naming the key; build_model itself (what every loader
    ends in, the member given) is strict the same way."""
    write_nanochat(tmp_path, tiny_tokenizer, tiny_model, edit_sd=edit_sd)
    with pytest.raises(CheckpointError, match=message):
        load_nanochat(tmp_path)
    sd = {"_orig_mod." + k: v.clone() for k, v in tiny_model.state_dict().items()}
    edit_sd(sd)
    with pytest.raises(CheckpointError, match=strict):
        build_model(tiny_model.config, TUTORIAL, sd, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("edit_config, message", [
    # a config key of later members (fbc1484 on) on the tutorial's weights: no member, the closest named with what
    # does not fit it
    (lambda c: c.update(window_pattern="SSSL"), r"fits no forward .*closest is 4a87a0d .*config key 'window_pattern'"),
    (lambda c: c.update(rope_theta=10000), r"fits no forward .*config key 'rope_theta'"),
    (lambda c: c.pop("n_kv_head"), r"fits no forward .*no config key 'n_kv_head'"),
    # the config's vocab_size disagrees with the weights' rows: named by the detection
    (lambda c: c.update(vocab_size=c["vocab_size"] + 64),
     r"closest is 4a87a0d .*transformer\.wte\.weight is \[512, 32\], not \[576, 32\]"),
])
def test_config_and_vocab_errors(tiny_tokenizer, tiny_model, tmp_path, edit_config, message):
    write_nanochat(tmp_path, tiny_tokenizer, tiny_model, edit_config=edit_config)
    with pytest.raises(CheckpointError, match=message):
        load_nanochat(tmp_path)


def test_config_and_weights_larger_than_the_tokenizer(tiny_tokenizer, tiny_model, tmp_path):
    """Weights and config agree (576 rows) but the tokenizer has 512 tokens: refused, naming both."""
    def grow(sd):
        for k in ("_orig_mod.transformer.wte.weight", "_orig_mod.lm_head.weight"):
            sd[k] = torch.cat([sd[k], torch.zeros(64, sd[k].size(1), dtype=sd[k].dtype)])

    write_nanochat(tmp_path, tiny_tokenizer, tiny_model, edit_sd=grow,
                   edit_config=lambda c: c.update(vocab_size=c["vocab_size"] + 64))
    with pytest.raises(CheckpointError, match=r"tokenizer has 512 tokens.*vocab_size is 576"):
        load_nanochat(tmp_path)


def test_malicious_tokenizer_pickle_is_refused(tiny_tokenizer, tiny_model, tmp_path):
    write_nanochat(tmp_path, tiny_tokenizer, tiny_model)
    marker = tmp_path / "pwned"
    (tmp_path / "tokenizer" / "tokenizer.pkl").write_bytes(pickle.dumps(RunsShell(marker)))
    with pytest.raises(UnsafePickleError, match="system"):
        load_nanochat(tmp_path)
    assert not marker.exists()


def test_malicious_model_file_is_refused(tiny_tokenizer, tiny_model, tmp_path):
    marker = tmp_path / "pwned"
    write_nanochat(tmp_path, tiny_tokenizer, tiny_model, edit_sd=lambda sd: sd.update(evil=RunsShell(marker)))
    with pytest.raises(CheckpointError, match="not a plain state_dict"):
        load_nanochat(tmp_path)
    assert not marker.exists()


# ---- our format --------------------------------------------------------------------------------------------------
def test_our_format_round_trip_fp32_is_exact(tiny_tokenizer, tiny_model, tmp_path, ids):
    save_model(tmp_path, tiny_model, tiny_tokenizer, {"name": "tiny test model", "step": 3})
    loaded = load_model(tmp_path, device="cpu")
    assert loaded.name == "tiny test model" and loaded.meta["step"] == 3 and loaded.source == str(tmp_path)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), tiny_model(ids), rtol=0, atol=0)
    assert loaded.tokenizer.encode("你好 🚀") == tiny_tokenizer.encode("你好 🚀")


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_half_precision_storage_sharded(tiny_tokenizer, tiny_model, tmp_path, ids, dtype, atol):
    cap = 20_000
    files = save_model(tmp_path, tiny_model, tiny_tokenizer, {}, dtype=dtype, max_shard_bytes=cap)
    assert len(files) > 2 and all(f.stat().st_size <= cap + 2_000 for f in files)  # + safetensors header
    loaded = load_model(tmp_path)
    assert loaded.dtype == torch.float32  # CPU runs in fp32 whatever the storage
    for k, v in tiny_model.state_dict().items():  # exactly the rounded weights, reassembled from the pieces
        assert torch.equal(loaded.model.state_dict()[k], v.to(dtype).float()), k
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), tiny_model(ids), rtol=0, atol=atol)


def test_resave_replaces_old_shards(tiny_tokenizer, tiny_model, tmp_path, ids):
    save_model(tmp_path, make_tiny_model(tiny_tokenizer.vocab_size, seed=5), tiny_tokenizer, {}, max_shard_bytes=20_000)
    save_model(tmp_path, tiny_model, tiny_tokenizer, {})
    assert [p.name for p in tmp_path.glob("*.safetensors")] == ["model.safetensors"]
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path).model(ids), tiny_model(ids), rtol=0, atol=0)


def test_our_format_errors(tiny_tokenizer, tiny_model, tmp_path):
    save_model(tmp_path, tiny_model, tiny_tokenizer, {})
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_config"]["n_layer"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing key.*transformer\.h\.2\."):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "nowhere")
    other = make_tiny_model(tiny_tokenizer.vocab_size + 1)
    with pytest.raises(CheckpointError, match="vocab_size"):
        save_model(tmp_path, other, tiny_tokenizer, {})


def test_load_default(tiny_tokenizer, tiny_model, tmp_path, monkeypatch, ids):
    monkeypatch.setattr(checkpoint, "DEFAULT_DIR", tmp_path / "default")
    with pytest.raises(FileNotFoundError, match="no shipped model"):
        load_default()
    save_model(tmp_path / "default", tiny_model, tiny_tokenizer, {"name": "shipped"}, dtype="bf16")
    loaded = load_default(device="cpu", dtype=torch.bfloat16)
    assert loaded.name == "shipped" and loaded.model.lm_head.weight.dtype == torch.bfloat16
    assert loaded.model.cos.dtype == torch.bfloat16


def test_random_model_is_nanochat_init(tiny_tokenizer, tiny_model, ids):
    loaded = random_model(tiny_model.config, tiny_tokenizer, seed=3, device="cpu")
    torch.manual_seed(3)
    expected = new_model(tiny_model.config)  # the tutorial's forward, as random_model's default member
    expected.init_weights()
    for k, v in expected.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    assert "random-init" in loaded.name and loaded.dtype == torch.float32
    with torch.no_grad():
        assert torch.count_nonzero(loaded.model(ids)) == 0  # zero lm_head: uniform next-token distribution


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


def test_shipped_model_in_bfloat16_stays_close_to_float32():
    """The app serves in bfloat16 on a GPU (and on a CPU with --dtype bfloat16): its next-token predictions must be
    the float32 model's, up to bf16 rounding."""
    if not (checkpoint.DEFAULT_DIR / "config.json").is_file():
        pytest.skip("no shipped model")
    full, half = load_default(device="cpu", dtype=torch.float32), load_default(device="cpu", dtype=torch.bfloat16)
    ids = full.tokenizer.render_for_completion([{"role": "user", "content": "Hello! What is a token? 你好"}])
    with torch.inference_mode():
        a, b = full.model(torch.tensor([ids]))[0], half.model(torch.tensor([ids]))[0].float()
    rel_rms = float((a - b).pow(2).mean().sqrt() / a.pow(2).mean().sqrt())
    assert rel_rms < 2 ** -5  # bf16 keeps 8 significant bits; a few roundings per layer accumulate
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9
