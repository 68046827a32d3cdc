"""gpt.anywhere.load(source): one call for every place a model is kept. Offline, on real code paths: folders written
the way nanochat and the Hub lay them out, and a Hugging Face cache laid out as huggingface_hub lays it out."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from conftest import make_tiny_model
from gpt import hub
from gpt.anywhere import load
from gpt.checkpoint import CheckpointError, save_model
from gpt.nanochat import TUTORIAL

SHA = "0123456789abcdef0123456789abcdef01234567"


def write_flat(folder, tokenizer, models: dict[int, torch.nn.Module]):
    """The Hub's flat nanochat layout (as karpathy/nanochat-d32): model_<step>.pt, meta_<step>.json, tokenizer.pkl."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "tokenizer.pkl", "wb") as f:
        pickle.dump(tokenizer.encoding, f)
    for step, model in models.items():
        torch.save({"_orig_mod." + k: v for k, v in model.state_dict().items()}, folder / f"model_{step:06d}.pt")
        config = {k: getattr(model.config, k) for k in ("sequence_len", "vocab_size", "n_layer", "n_head",
                                                          "n_kv_head", "n_embd")}
        (folder / f"meta_{step:06d}.json").write_text(json.dumps({"step": step, "model_config": config}))
    torch.save(torch.zeros(3), folder / "token_bytes.pt")  # nanochat ships it for its evaluation; not needed here
    return folder


def logits(model, ids):
    with torch.no_grad():
        return model(ids)


@pytest.fixture
def two_steps(tiny_tokenizer):
    V = tiny_tokenizer.vocab_size
    return {10: make_tiny_model(V, seed=1), 20: make_tiny_model(V, seed=2)}


def test_flat_folder_takes_the_largest_step_unless_told(tmp_path, tiny_tokenizer, two_steps):
    folder = write_flat(tmp_path / "flat", tiny_tokenizer, two_steps)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9]])
    loaded = load(folder, device="cpu", dtype="float32")
    assert loaded.meta["step"] == 20 and loaded.arch == TUTORIAL.name == "4a87a0d"  # the tutorial's nanochat
    torch.testing.assert_close(logits(loaded.model, ids), logits(two_steps[20], ids), rtol=0, atol=0)
    assert load(folder, device="cpu", dtype="float32", step=10).meta["step"] == 10


def hf_cache(root, repo: str, files_from) -> None:
    """A Hugging Face cache as huggingface_hub lays it out: models--owner--name/{refs/main, snapshots/<sha>/...}."""
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(SHA)
    snapshot = base / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    for f in files_from.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())


def test_a_hub_repo_id_loads_from_the_cache_offline(tmp_path, tiny_tokenizer, two_steps, monkeypatch):
    flat = write_flat(tmp_path / "flat", tiny_tokenizer, two_steps)
    ours = tmp_path / "ours"
    save_model(ours, two_steps[10], tiny_tokenizer, meta={"name": "ours"})
    cache = tmp_path / "hub"
    hf_cache(cache, "someone/nanochat-tiny", flat)
    hf_cache(cache, "someone/ours-tiny", ours)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ids = torch.tensor([[2, 7, 1, 8]])
    for source in ("someone/nanochat-tiny", f"someone/nanochat-tiny@{SHA}"):
        loaded = load(source, device="cpu", dtype="float32")
        torch.testing.assert_close(logits(loaded.model, ids), logits(two_steps[20], ids), rtol=0, atol=0)
        assert loaded.name.startswith("someone/nanochat-tiny")
    loaded = load("someone/ours-tiny", device="cpu", dtype="float32")
    torch.testing.assert_close(logits(loaded.model, ids), logits(two_steps[10], ids), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        load("someone/not-downloaded")


def test_hub_picks_only_the_files_a_model_needs():
    flat = ["README.md", "model_000650.pt", "meta_000650.json", "model_000100.pt", "meta_000100.json",
            "tokenizer.pkl", "token_bytes.pt", "optim_000650_rank0.pt"]
    assert hub.needed_files(flat) == ["model_000650.pt", "meta_000650.json", "tokenizer.pkl"]
    assert hub.needed_files(flat, step=100) == ["model_000100.pt", "meta_000100.json", "tokenizer.pkl"]
    assert hub.needed_files(["config.json", "model.safetensors", "tokenizer.json", "pytorch_model.bin",
                             "modeling_custom.py"]) == ["*.json", "*.safetensors", "tokenizer*"]  # no code, no pickle
    with pytest.raises(hub.HubError, match="no model in the repo"):
        hub.needed_files(["README.md"])
    assert hub.is_repo_id("karpathy/nanochat-d32") and hub.is_repo_id("a/b@v1.0")
    assert not hub.is_repo_id("/abs/path") and not hub.is_repo_id("a/b/c") and not hub.is_repo_id("nanochat")


def test_what_is_not_a_model_is_named(tmp_path, tiny_tokenizer, two_steps):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match=r"no model here.*notes\.txt"):
        load(empty)
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert'"):
        load(other)
    cut = write_flat(tmp_path / "cut", tiny_tokenizer, {10: two_steps[10]})
    data = (cut / "model_000010.pt").read_bytes()
    (cut / "model_000010.pt").write_bytes(data[: len(data) // 2])  # a half-downloaded file
    with pytest.raises(CheckpointError, match="model_000010.pt: not a plain state_dict"):
        load(cut)
    with pytest.raises(FileNotFoundError, match="not a Hugging Face repo id"):
        load(tmp_path / "nowhere" / "deeper")


def test_the_app_serves_any_source(tmp_path, tiny_tokenizer, two_steps, monkeypatch):
    """`python app.py --model SOURCE` as the app parses and loads it (without serving)."""
    import app
    from demo.models import load as load_models

    folder = write_flat(tmp_path / "flat", tiny_tokenizer, two_steps)
    args = app.parse_args(["--model", str(folder), "--device", "cpu"])
    models = load_models(model=args.model, device="cpu")
    assert models.notice == "" and models.main.meta["step"] == 20
    args = app.parse_args(["--checkpoint", str(folder)])  # the old flag still works
    assert (args.model or args.checkpoint) == str(folder)
    monkeypatch.setenv(app.MODEL_ENV, "owner/from-a-space-variable")  # a Space passes no arguments: a variable
    assert app.parse_args([]).model == "owner/from-a-space-variable"
    assert app.parse_args(["--model", str(folder)]).model == str(folder)  # the command line still wins
    monkeypatch.setenv(app.MODEL_ENV, "")
    assert app.parse_args([]).model is None


def test_a_transformers_folder_and_the_export_command(tmp_path, tiny_tokenizer, two_steps, monkeypatch, capsys):
    """`python -m gpt.export --model SOURCE --format transformers OUT` from a Hub-cache repo id, and load(OUT) reads
    the folder back (dispatched as transformers' NanoChat) with the same logits."""
    from gpt import export

    ours = tmp_path / "ours"
    save_model(ours, two_steps[20], tiny_tokenizer, meta={"name": "ours"})
    cache = tmp_path / "hub"
    hf_cache(cache, "someone/ours-tiny", ours)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "hf"
    assert export.main(["--model", "someone/ours-tiny", "--format", "transformers", str(out)]) == 0
    assert "NanoChatForCausalLM" in capsys.readouterr().out
    loaded = load(out, device="cpu", dtype="float32")
    assert loaded.meta["format"].startswith("transformers")
    ids = torch.tensor([[5, 3, 5, 8, 9, 7]])
    torch.testing.assert_close(logits(loaded.model, ids), logits(two_steps[20], ids), rtol=0, atol=0)
    assert export.main(["--model", str(tmp_path / "missing"), "--format", "transformers", str(out)]) == 1
