"""Loading and saving models: nanochat's checkpoint layout (unchanged) and our own safetensors format.

nanochat layout, under a base dir ($NANOCHAT_BASE_DIR or ~/.cache/nanochat):
    tokenizer/tokenizer.pkl                              a pickled tiktoken Encoding (read by a restricted unpickler)
    {base,mid,chatsft,chatrl}_checkpoints/d<N>/model_<step:06d>.pt   state_dict (torch.load, weights_only=True)
                                              /meta_<step:06d>.json  meta["model_config"] = the GPTConfig keys
Our format (the shipped model in gpt/default/, and what save_model writes):
    config.json                                 {"format", "model_config", "dtype", "shards", "split_tensors", "meta"}
    model.safetensors or model-0000i-of-0000n.safetensors   weights, each file at most max_shard_bytes
    tokenizer.tiktoken + tokenizer.json         see gpt/tokenizer.py
Loading is strict: a missing or unexpected key, a shape mismatch, an unknown config key or a tokenizer whose vocab
differs from the model's raises CheckpointError naming it. Device rule (default_dtype): CPU runs in float32, CUDA in
bfloat16 (weights cast; the rotary tables keep nanochat's bf16-rounded values). A loaded model is ready for
inference: q/k/v fused.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gpt import nanochat
from gpt.nanochat import GPT, GPTConfig
from gpt.tokenizer import Tokenizer

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
NANOCHAT_SOURCES = {"base": "base_checkpoints", "mid": "mid_checkpoints", "sft": "chatsft_checkpoints",
                    "rl": "chatrl_checkpoints"}
DEFAULT_SOURCE_ORDER = ("sft", "rl", "mid", "base")  # what a run without --source serves: the chat model first
FORMAT = "inside-forward-model/1"
COMPILE_PREFIX = "_orig_mod."  # torch.compile wraps the model; nanochat saves some state_dicts with this prefix
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: names the offending key, shape, config entry or vocab size."""


@dataclass
class LoadedModel:
    model: GPT
    tokenizer: Tokenizer
    name: str  # human-readable, e.g. "nanochat sft d20 step 000650" or "random-init d4 (seed 0)"
    source: str  # where it came from: a directory, or "random-init"
    device: torch.device
    dtype: torch.dtype
    meta: dict = field(default_factory=dict)  # whatever the checkpoint carried besides weights and config
    same_files: tuple[str, ...] = ()  # other family members whose files look exactly like these (--arch picks one)

    @property
    def arch(self) -> str:
        """Which member of the nanochat family the model is (gpt/nanochat/registry.py): its commit."""
        return self.model.member.name


# ---- device and dtype --------------------------------------------------------------------------------------------
def pick_device(name: str | torch.device | None = None) -> torch.device:
    """None or "auto": CUDA when available, else CPU. Otherwise the named device (it must exist)."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """The dtype a model is loaded and served in: nanochat's rule, bfloat16 on CUDA, float32 elsewhere.

    On a CPU, bfloat16 would decode faster where the CPU multiplies in it natively (~170 against ~130 tokens/s for
    the default model on the 2-core test VM), but its matrix products round differently with the number of rows,
    so a seeded reply would change with who else is chatting (measured: 4 of 16 replies); float32 replies do not
    (tests/test_engine.py). `app.py --dtype bfloat16` trades that for speed."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _as_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


# ---- building a model from a config and a state_dict ---------------------------------------------------------------
def config_from_dict(d: dict, where: str = "config") -> GPTConfig:
    """nanochat's config keys, exactly: an unknown key (a nanochat feature we would silently ignore) or a missing one
    is an error. window_pattern, which files before fbc1484 lack, is "L" (the whole context) when absent."""
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown, missing = sorted(set(d) - fields), sorted(fields - set(d) - {"window_pattern"})
    if unknown:
        raise CheckpointError(f"{where}: unknown model config key(s) {unknown}; this nanochat version is not "
                              f"supported (known keys: {sorted(fields)})")
    if missing:
        raise CheckpointError(f"{where}: model config is missing key(s) {missing}")
    bad = [k for k, v in d.items() if k != "window_pattern" and (type(v) is not int or v <= 0)]
    if bad:
        raise CheckpointError(f"{where}: model config value(s) must be positive integers: {bad}")
    pattern = d.get("window_pattern", "L")
    if not isinstance(pattern, str) or not pattern or set(pattern.upper()) - set("SL"):
        raise CheckpointError(f"{where}: window_pattern must be a string of S and L, got {pattern!r}")
    return GPTConfig(**d)


def _strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(COMPILE_PREFIX): v for k, v in state_dict.items()}


def _check_vocab(config: GPTConfig, tokenizer: Tokenizer, where: str) -> None:
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"{where}: tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                              f"{config.vocab_size}")


def build_model(config: GPTConfig, member: nanochat.Member, state_dict: dict[str, torch.Tensor], device: torch.device,
                dtype: torch.dtype, where: str = "checkpoint") -> GPT:
    """The GPT of `member` for `config` with exactly these weights, on `device` in `dtype`, ready for inference (q/k/v fused). Strict:
    CheckpointError on a missing/unexpected key or a shape mismatch. The model takes the tensors over (no copy where
    device and dtype already match), so a big checkpoint is held in memory once."""
    state_dict = _strip_prefix(state_dict)
    with torch.device("meta"):  # no memory and no random init for weights that are about to be overwritten
        model = nanochat.new_model(config, member)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing:
        raise CheckpointError(f"{where}: missing key(s) {missing} of nanochat {member.name}")
    if unexpected:
        raise CheckpointError(f"{where}: unexpected key(s) {unexpected} for nanochat {member.name}")
    for k, shape in expected.items():
        if tuple(state_dict[k].shape) != shape:
            raise CheckpointError(f"{where}: shape mismatch for {k}: checkpoint {tuple(state_dict[k].shape)}, "
                                  f"model {shape} (nanochat {member.name}, config {dataclasses.asdict(config)})")
    state_dict = {k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)  # the meta parameters become these tensors
    # The rotary buffers are not in checkpoints: compute them (the member's own values, stored in the model's dtype
    # so that no layer converts them).
    model.cos, model.sin = model.rotary_tables(dtype, device)
    model.fuse_qkv()
    return model.eval()


def moved(loaded: LoadedModel, device: torch.device | str, dtype: torch.dtype | str | None = None) -> LoadedModel:
    """`loaded` with its model on `device` in `dtype` (default: the device's, default_dtype), as build_model would
    have made it there: the weights converted, the rotary tables computed again in the new dtype."""
    device = torch.device(device)
    dtype = _as_dtype(dtype, device)
    model = loaded.model.to(device=device, dtype=dtype)
    model.cos, model.sin = model.rotary_tables(dtype, device)
    return dataclasses.replace(loaded, model=model, device=device, dtype=dtype)


# ---- nanochat layout ---------------------------------------------------------------------------------------------
def nanochat_base_dir(base_dir: str | Path | None = None) -> Path:
    if base_dir is not None:
        return Path(base_dir).expanduser()
    return Path(os.environ.get("NANOCHAT_BASE_DIR") or Path.home() / ".cache" / "nanochat")


def _largest_model_tag(checkpoints_dir: Path) -> str:
    tags = [p.name for p in checkpoints_dir.iterdir() if p.is_dir()]
    if not tags:
        raise FileNotFoundError(f"no model tags (d<N> folders) in {checkpoints_dir}")
    depth_tags = [t for t in tags if re.fullmatch(r"d\d+", t)]
    if depth_tags:
        return max(depth_tags, key=lambda t: int(t[1:]))
    return max(tags, key=lambda t: (checkpoints_dir / t).stat().st_mtime)  # nanochat's fallback: the newest


def _largest_step(model_dir: Path) -> int:
    steps = [int(m.group(1)) for p in model_dir.glob("model_*.pt") if (m := re.fullmatch(r"model_(\d+)\.pt", p.name))]
    if not steps:
        raise FileNotFoundError(f"no model_<step>.pt checkpoints in {model_dir}")
    return max(steps)


def load_nanochat(base_dir: str | Path | None = None, source: str | None = None, model_tag: str | None = None,
                  step: int | None = None, device: torch.device | str | None = None,
                  dtype: torch.dtype | str | None = None, arch: str | None = None) -> LoadedModel:
    """Load a checkpoint from nanochat's layout. source: "base" | "mid" | "sft" | "rl" (None: sft, else the first of
    rl, mid, base the run has: a base-only run loads without asking). model_tag (e.g. "d20") and
    step default to the largest depth and the largest step found. The family member is read off the checkpoint
    (gpt.nanochat.detect); `arch` (a member's commit) forces one (patched as nanochat's own loader patches)."""
    base = nanochat_base_dir(base_dir)
    if source is None:
        source = next((s for s in DEFAULT_SOURCE_ORDER if (base / NANOCHAT_SOURCES[s]).is_dir()), "sft")
    if source not in NANOCHAT_SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of {sorted(NANOCHAT_SOURCES)}")
    checkpoints_dir = base / NANOCHAT_SOURCES[source]
    if not checkpoints_dir.is_dir():
        raise FileNotFoundError(f"no {source} checkpoints: {checkpoints_dir} does not exist")
    model_tag = model_tag or _largest_model_tag(checkpoints_dir)
    model_dir = checkpoints_dir / model_tag
    if not model_dir.is_dir():
        raise FileNotFoundError(f"no model tag {model_tag!r} in {checkpoints_dir}")
    step = _largest_step(model_dir) if step is None else int(step)
    return _load_nanochat_files(model_dir, step, base / "tokenizer" / "tokenizer.pkl",
                                f"nanochat {source} {model_tag} step {step:06d}", device, dtype, arch)


def load_nanochat_flat(folder: str | Path, step: int | None = None, device: torch.device | str | None = None,
                       dtype: torch.dtype | str | None = None, arch: str | None = None,
                       name: str | None = None) -> LoadedModel:
    """nanochat files side by side in one folder, as on the Hugging Face Hub (e.g. karpathy/nanochat-d32):
    model_<step>.pt, meta_<step>.json, tokenizer.pkl (token_bytes.pt, for nanochat's evaluation, is not needed). The
    largest step unless `step` is given."""
    folder = Path(folder)
    step = _largest_step(folder) if step is None else int(step)
    return _load_nanochat_files(folder, step, folder / "tokenizer.pkl",
                                name or f"nanochat {folder.name} step {step:06d}", device, dtype, arch)


def _load_nanochat_files(model_dir: Path, step: int, tokenizer_path: Path, name: str,
                         device: torch.device | str | None, dtype: torch.dtype | str | None,
                         arch: str | None) -> LoadedModel:
    """model_<step>.pt + meta_<step>.json in model_dir and nanochat's tokenizer pickle: strict, safe (weights_only;
    the pickle through the restricted unpickler), the family member read off the files unless `arch` forces one."""
    model_path, meta_path = model_dir / f"model_{step:06d}.pt", model_dir / f"meta_{step:06d}.json"
    for p in (model_path, meta_path):
        if not p.is_file():
            raise FileNotFoundError(f"missing checkpoint file {p}")
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"missing tokenizer {tokenizer_path}")

    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model_config"), dict):
        raise CheckpointError(f"{meta_path}: no model_config in meta")
    try:
        state_dict = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers; a cut file fails too
        raise CheckpointError(f"{model_path}: not a plain state_dict ({e})") from e
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{model_path}: expected a state_dict, got {type(state_dict).__name__}")
    state_dict = _strip_prefix(state_dict)
    model_config = dict(meta["model_config"])
    try:
        if arch is None:
            shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
            found = nanochat.detect(model_config, shapes)
            member, same_files = found.member, found.same_files
        else:
            member, same_files = nanochat.member(arch), ()
            nanochat.patch_like_nanochat(member, model_config, state_dict)
    except nanochat.FamilyError as e:
        raise CheckpointError(f"{model_dir}: {e}") from None
    config = config_from_dict(model_config, str(meta_path))
    tokenizer = Tokenizer.from_nanochat_pickle(tokenizer_path)
    _check_vocab(config, tokenizer, str(model_dir))

    device = pick_device(device)
    dtype = _as_dtype(dtype, device)
    model = build_model(config, member, state_dict, device, dtype, str(model_path))
    return LoadedModel(model, tokenizer, name, str(model_dir), device, dtype, meta, same_files)


# ---- our format --------------------------------------------------------------------------------------------------
def _shard_name(i: int, n: int) -> str:
    return "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def save_model(directory: str | Path, model: GPT, tokenizer: Tokenizer, meta: dict | None = None,
               dtype: torch.dtype | str | None = None, max_shard_bytes: int | None = None) -> list[Path]:
    """Write our format. dtype: stored weight dtype (default: the model's). max_shard_bytes: cap per safetensors file
    (e.g. < 10 MB for a git repo without LFS); a tensor larger than the cap is split by rows across files.
    Returns the weight files written. meta must be JSON-serialisable (training notes, loss, step, ...)."""
    directory = Path(directory)
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model
    _check_vocab(model.config, tokenizer, str(directory))
    sd = model.state_dict()
    dtype = next(iter(sd.values())).dtype if dtype is None else _as_dtype(dtype, torch.device("cpu"))
    tensors: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        t = v.detach().to("cpu", dtype).contiguous()
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{k}: not finite after casting to {dtype} (overflow?)")
        tensors[k] = t

    split_tensors: dict[str, int] = {}
    if max_shard_bytes is not None:  # split oversized tensors into row blocks that each fit one file
        for k in list(tensors):
            t = tensors[k]
            row_bytes = t[0].numel() * t.element_size()
            if t.numel() * t.element_size() > max_shard_bytes:
                rows = max_shard_bytes // row_bytes
                if rows == 0:
                    raise ValueError(f"{k}: one row ({row_bytes} bytes) exceeds max_shard_bytes={max_shard_bytes}")
                parts = torch.split(tensors.pop(k), rows)
                split_tensors[k] = len(parts)
                tensors.update({f"{k}.part{j}": p.contiguous() for j, p in enumerate(parts)})
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, t in tensors.items():  # greedy packing in state_dict order
        nbytes = t.numel() * t.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nbytes

    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("model*.safetensors"):  # a previous save with other sharding would mix in
        stale.unlink()
    names = [_shard_name(i, len(shards)) for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_file(shard, directory / name, metadata={"format": "pt"})
    config = {"format": FORMAT, "arch": model.member.name, "model_config": dataclasses.asdict(model.config),
              "dtype": str(dtype).split(".")[-1],
              "shards": names, "split_tensors": split_tensors, "meta": meta or {}}
    (directory / "config.json").write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tokenizer.save(directory)
    return [directory / n for n in names]


def load_model(directory: str | Path, device: torch.device | str | None = None,
               dtype: torch.dtype | str | None = None) -> LoadedModel:
    """Read our format (every *.safetensors file in the directory)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no model in {directory} (config.json missing)")
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    if saved.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: unknown format {saved.get('format')!r}")
    try:  # files written before the family existed have no "arch": they are the tutorial's
        member = nanochat.member(saved.get("arch", nanochat.TUTORIAL.name))
    except nanochat.FamilyError as e:
        raise CheckpointError(f"{config_path}: {e}") from None
    config = config_from_dict(saved["model_config"], str(config_path))
    tokenizer = Tokenizer.load(directory)
    _check_vocab(config, tokenizer, str(directory))

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {directory}")
    state_dict: dict[str, torch.Tensor] = {}
    for f in files:
        shard = load_file(f)
        duplicated = sorted(set(shard) & set(state_dict))
        if duplicated:
            raise CheckpointError(f"{f}: key(s) {duplicated} also appear in another weight file")
        state_dict.update(shard)
    for k, n in saved.get("split_tensors", {}).items():
        parts = [f"{k}.part{j}" for j in range(n)]
        missing = [p for p in parts if p not in state_dict]
        if missing:
            raise CheckpointError(f"{directory}: missing key(s) {missing}")
        state_dict[k] = torch.cat([state_dict.pop(p) for p in parts])

    device = pick_device(device)
    dtype = _as_dtype(dtype, device)
    model = build_model(config, member, state_dict, device, dtype, str(directory))
    meta = saved.get("meta", {})
    return LoadedModel(model, tokenizer, meta.get("name") or directory.name, str(directory), device, dtype, meta)


def load_default(device: torch.device | str | None = None, dtype: torch.dtype | str | None = None) -> LoadedModel:
    """The shipped model in gpt/default/ (our format)."""
    if not (DEFAULT_DIR / "config.json").is_file():
        raise FileNotFoundError(f"no shipped model in {DEFAULT_DIR} yet; use random_model(...) or load_nanochat(...)")
    return load_model(DEFAULT_DIR, device, dtype)


def random_model(config: GPTConfig, tokenizer: Tokenizer, seed: int = 0, device: torch.device | str | None = None,
                 member: nanochat.Member = nanochat.TUTORIAL, everywhere: bool = False) -> LoadedModel:
    """An untrained model with nanochat's init (lm_head is zero, so every next token is equally likely), or, with
    `everywhere`, nanochat's init and then what it leaves at zero drawn too (GPT.draw_zeros). The vocab may be larger
    than the tokenizer's (the tutorial's 50304 is such a padded vocab; ids past the tokenizer have no text)."""
    if config.vocab_size < tokenizer.vocab_size:
        raise CheckpointError(f"random_model: vocab_size {config.vocab_size} is smaller than the tokenizer's "
                              f"{tokenizer.vocab_size}")
    device = pick_device(device)
    dtype = default_dtype(device)
    torch.manual_seed(seed)
    model = nanochat.new_model(config, member)
    model.init_weights()  # on CPU in fp32, so a seed gives the same weights on every device
    if everywhere:
        model.draw_zeros(seed)
    model = build_model(config, member, model.state_dict(), device, dtype, "random_model")
    return LoadedModel(model, tokenizer, f"random-init d{config.n_layer} (seed {seed})", "random-init", device, dtype,
                       {"seed": seed})


__all__ = ["CheckpointError", "LoadedModel", "pick_device", "default_dtype", "config_from_dict",
           "build_model", "load_nanochat", "load_nanochat_flat", "save_model", "load_model", "load_default",
           "random_model", "DEFAULT_DIR",
           "NANOCHAT_SOURCES"]
