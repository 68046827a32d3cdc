"""Pretrain, then chat-fine-tune (SFT), the default model: `python -m gpt.training.train --out out/run`.

As nanochat, in two phases over one model (the tutorial's GPT, or another nanochat version's with --set arch=COMMIT;
its forward computes the loss):
1. pretrain: random windows of the token streams of every source (documents and rendered chats); every token is a
   target.
2. sft: whole user/assistant exchanges, one per row, padded; targets are -1 (ignored) except where the assistant
   speaks, so only the replies are learned (nanochat's chat_sft).
Optimizers as nanochat: Muon for the transformer's matrices, AdamW for the embedding and lm_head, lr scaled by
(n_embd/768)^-0.5 for the AdamW ones; constant lr, then a linear warmdown to zero over the last 20% of each phase.
`--optimizer adamw` uses AdamW everywhere instead.

The schedule follows progress = max(step / steps, elapsed / time budget), so a run fits its time budget on any device
and still ends with the warmdown. bf16 autocast on CUDA, float32 on CPU. A checkpoint (weights, optimizer, data
sampler and schedule state) is written at the end of each phase and every --save-every seconds; --resume continues
from it. The finished model is saved in the project's format (gpt/checkpoint.py) together with a JSON-lines log.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gpt import nanochat
from gpt.checkpoint import save_model
from gpt.nanochat import GPT, GPTConfig
from gpt.tokenizer import Tokenizer
from gpt.training import evaluate
from gpt.training import shards as shard_io
from gpt.training.muon import Muon


@dataclass
class TrainConfig:
    # model: a member of the nanochat family (gpt/nanochat/registry.py: a commit, or nanochat-2025-11 / -2026-07)
    arch: str = "nanochat-2025-11"
    window_pattern: str = "SSSL"  # members with sliding windows only
    sequence_len: int = 512
    vocab_size: int = 8192
    n_layer: int = 8
    n_head: int = 5
    n_kv_head: int = 5
    n_embd: int = 320
    # optimisation
    optimizer: str = "muon"  # "muon" (matrices) + AdamW (embeddings), or "adamw" for everything
    matrix_lr: float = 0.02
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.004
    adamw_matrix_lr: float = 0.003  # only with optimizer="adamw"
    scalar_lr: float = 0.5  # the per-layer lambdas (members that have them)
    warmdown_frac: float = 0.2
    sft_lr_frac: float = 0.1  # SFT starts at this fraction of the pretraining lrs
    batch_size: int = 128
    # Chosen on the validation curves: ~27M training tokens are over-fitted (chitchat first) well before 3000 steps.
    pretrain_steps: int = 1500
    sft_steps: int = 300
    pretrain_seconds: float = math.inf  # time budgets (the schedule ends when steps or time run out)
    sft_seconds: float = math.inf
    pretrain_weights: dict[str, float] = field(default_factory=lambda: {
        "poetry": 0.45, "shakespeare": 0.07, "fortunes_zh": 0.05, "chitchat": 0.33, "chatterbot": 0.01,
        "synthetic": 0.09})
    sft_weights: dict[str, float] = field(default_factory=lambda: {"chitchat": 0.5, "chatterbot": 0.15,
                                                                   "synthetic": 0.35})
    snapshot_frac: float = 0.1  # also keep the weights at this fraction of pretraining (a baseline for the card)
    eval_every: int = 100
    eval_windows: int = 16  # validation windows per source for the curves
    seed: int = 0
    compile: bool = False

    def model_config(self) -> GPTConfig:
        pattern = self.window_pattern if nanochat.member(self.arch).features.windows else "L"
        return GPTConfig(sequence_len=self.sequence_len, vocab_size=self.vocab_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_kv_head=self.n_kv_head, n_embd=self.n_embd, window_pattern=pattern)

    def new_model(self) -> GPT:
        return nanochat.new_model(self.model_config(), nanochat.member(self.arch))


def build_optimizers(model: GPT, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """nanochat's split: embeddings and lm_head by AdamW, the blocks' matrices by Muon (or AdamW). Later members add,
    as nanochat 92d63d4: value embeddings at half the embedding lr, the per-layer lambdas and the smear/backout
    scalars by AdamW with lrs of their own (each where the member has it)."""
    scale = (cfg.n_embd / 768) ** -0.5  # nanochat: AdamW lrs were tuned at width 768
    adam_groups = [{"params": [model.transformer.wte.weight], "lr": cfg.embedding_lr * scale},
                   {"params": [model.lm_head.weight], "lr": cfg.unembedding_lr * scale}]
    f = model.features
    if f.value_embeds:
        adam_groups.append({"params": list(model.value_embeds.parameters()), "lr": cfg.embedding_lr * scale * 0.5})
    if f.lambdas:
        adam_groups += [{"params": [model.resid_lambdas], "lr": cfg.scalar_lr * 0.01},
                        {"params": [model.x0_lambdas], "lr": cfg.scalar_lr, "betas": (0.96, 0.95)}]
    scalars = ([model.smear_gate.weight, model.smear_lambda] if f.smear else []) + (
        [model.backout_lambda] if f.backout else [])
    if scalars:
        adam_groups.append({"params": scalars, "lr": 0.2})
    matrices = [p for p in model.transformer.h.parameters()]
    fused = model.get_device().type == "cuda"
    if cfg.optimizer == "muon":
        opts = [torch.optim.AdamW(adam_groups, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0, fused=fused),
                Muon(matrices, lr=cfg.matrix_lr, momentum=0.95)]
    elif cfg.optimizer == "adamw":
        adam_groups.append({"params": matrices, "lr": cfg.adamw_matrix_lr})
        opts = [torch.optim.AdamW(adam_groups, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0, fused=fused)]
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    for opt in opts:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return opts


def lr_multiplier(progress: float, warmdown_frac: float) -> float:
    """1 until the warmdown starts, then linearly down to 0 at progress 1."""
    if progress < 1 - warmdown_frac:
        return 1.0
    return max(0.0, (1 - progress) / warmdown_frac)


def set_lr(opts: list[torch.optim.Optimizer], mult: float, muon_momentum: float | None = None) -> None:
    for opt in opts:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * mult
            if muon_momentum is not None and isinstance(opt, Muon):
                group["momentum"] = muon_momentum


class Trainer:
    """One model, its optimizers, and the two phases. State needed to resume lives in `self.state`."""

    def __init__(self, cfg: TrainConfig, device: torch.device, out_dir: Path | None = None,
                 samplers: tuple = ()):
        """samplers: the batch sources whose random state a checkpoint keeps (anything with a numpy `.rng`)."""
        self.cfg, self.device, self.out_dir, self.samplers = cfg, device, out_dir, samplers
        torch.manual_seed(cfg.seed)
        with torch.device(device):
            self.model = cfg.new_model()
        self.model.init_weights()
        self.opts = build_optimizers(self.model, cfg)
        self.forward = torch.compile(self.model, dynamic=False) if cfg.compile else self.model
        self.state = {"phase": "pretrain", "step": 0, "elapsed": 0.0, "tokens": 0}
        self.log: list[dict] = []
        self.snapshot: dict[str, torch.Tensor] | None = None  # weights at snapshot_frac of pretraining

    # -- one optimisation step on (x, y) --------------------------------------------------------------------------
    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with self._autocast():
            try:
                loss = self.forward(x, y)
            except Exception as e:  # torch.compile can fail on an unusual setup: train uncompiled instead
                if self.forward is self.model:
                    raise
                print(f"torch.compile failed ({type(e).__name__}: {e}); continuing without it", flush=True)
                self.forward = self.model
                loss = self.forward(x, y)
        loss.backward()
        for opt in self.opts:
            opt.step()
        self.model.zero_grad(set_to_none=True)
        return loss.detach()

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    # -- a phase: pretrain or sft ---------------------------------------------------------------------------------
    def run_phase(self, phase: str, batches, steps: int, seconds: float, lr_frac: float,
                  evaluate=None, save_every: float = math.inf) -> None:
        """Train until `steps` or `seconds` (whichever ends first); the lr schedule follows the larger progress."""
        if self.state["phase"] != phase:
            return  # already done (resumed past it)
        st = self.state
        last_save = time.time()
        t_phase = time.time() - st["elapsed"]
        while True:
            progress = max(st["step"] / steps, st["elapsed"] / seconds)
            if progress >= 1:
                break
            momentum = None
            if self.cfg.optimizer == "muon":  # nanochat: Muon momentum warms up from 0.85 to 0.95 over 300 steps
                f = min(st["step"] / 300, 1.0) if phase == "pretrain" else 1.0
                momentum = (1 - f) * 0.85 + f * 0.95
            set_lr(self.opts, lr_frac * lr_multiplier(progress, self.cfg.warmdown_frac), momentum)
            x, y = batches.batch(self.cfg.batch_size)
            loss = self.step(x, y)
            st["step"] += 1
            st["tokens"] += int((y >= 0).sum())
            if self.device.type == "cuda" and st["step"] % 10 == 0:
                torch.cuda.synchronize()
            st["elapsed"] = time.time() - t_phase
            if phase == "pretrain" and self.snapshot is None and progress >= self.cfg.snapshot_frac:
                self.snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.state["snapshot_step"] = st["step"]
            if st["step"] % self.cfg.eval_every == 0 or st["step"] == 1:
                entry = {"phase": phase, "step": st["step"], "elapsed": round(st["elapsed"], 2),
                         "tokens": st["tokens"], "train_loss": round(float(loss), 4),
                         "lr_mult": round(lr_frac * lr_multiplier(progress, self.cfg.warmdown_frac), 4)}
                if evaluate is not None:
                    entry["val"] = evaluate(self.model)
                self.log.append(entry)
                print(json.dumps(entry), flush=True)
            if self.out_dir is not None and time.time() - last_save > save_every:
                self.save_checkpoint()
                last_save = time.time()
        self.log.append({"phase": phase, "done": True, "step": st["step"], "elapsed": round(st["elapsed"], 2),
                         "tokens": st["tokens"]})
        st.update(phase="sft" if phase == "pretrain" else "done", step=0, elapsed=0.0,
                  **{f"{phase}_tokens": st["tokens"], f"{phase}_steps": st["step"]})
        st["tokens"] = 0
        if self.out_dir is not None:
            self.save_checkpoint()

    # -- resumable checkpoints ------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ckpt = {"model": self.model.state_dict(), "opts": [o.state_dict() for o in self.opts],
                "state": dict(self.state), "log": json.dumps(self.log), "cfg": json.dumps(dataclasses.asdict(self.cfg)),
                "snapshot": self.snapshot, "rng": json.dumps([s.rng.bit_generator.state for s in self.samplers])}
        tmp = self.out_dir / "ckpt.pt.tmp"
        torch.save(ckpt, tmp)
        tmp.replace(self.out_dir / "ckpt.pt")

    def load_checkpoint(self, path: Path) -> None:
        ckpt = torch.load(path, map_location=self.device, weights_only=True)  # our own file: tensors + plain data
        self.model.load_state_dict(ckpt["model"])
        for opt, sd in zip(self.opts, ckpt["opts"]):
            opt.load_state_dict(sd)
        self.state = dict(ckpt["state"])
        self.log = json.loads(ckpt["log"])
        self.snapshot = ckpt["snapshot"]
        for sampler, st in zip(self.samplers, json.loads(ckpt["rng"])):
            sampler.rng.bit_generator.state = st


def load_data(shards_dir: Path, cfg: TrainConfig, tok: Tokenizer):
    """Pretraining stream, SFT windows and validation shards from the token shards written by data.py."""
    train = {n: shard_io.load(shards_dir / f"{n}.train.npz.xz") for n in cfg.pretrain_weights}
    val = {n: shard_io.load(shards_dir / f"{n}.val.npz.xz") for n in cfg.pretrain_weights}
    stream = shard_io.PretrainStream({n: s["ids"] for n, s in train.items()}, cfg.pretrain_weights,
                                     cfg.sequence_len, cfg.seed)
    sft = shard_io.SFTBatches({n: train[n] for n in cfg.sft_weights}, cfg.sft_weights, tok.bos_token_id,
                              tok.special_id("<|user_start|>"), cfg.sequence_len, cfg.seed + 1)
    return stream, sft, val


def make_curve_eval(val: dict[str, dict[str, np.ndarray]], cfg: TrainConfig, device: torch.device):
    """A quick validation loss per source (first eval_windows windows of each) for the training curves."""
    windows = {}
    for name, shard in val.items():
        ids = torch.from_numpy(shard["ids"].astype(np.int64))
        n = min(cfg.eval_windows, (ids.numel() - 1) // cfg.sequence_len)
        x = torch.stack([ids[i * cfg.sequence_len:(i + 1) * cfg.sequence_len] for i in range(n)])
        y = torch.stack([ids[i * cfg.sequence_len + 1:(i + 1) * cfg.sequence_len + 1] for i in range(n)])
        windows[name] = (x.to(device), y.to(device))

    @torch.no_grad()
    def evaluate(model: GPT) -> dict[str, float]:
        model.eval()
        out = {}
        for name, (x, y) in windows.items():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out[name] = round(float(model(x, y)), 4)
        model.train()
        return out

    return evaluate


def parse_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """KEY=VALUE strings -> a new TrainConfig; VALUE is JSON (numbers, true/false, dicts, "inf" allowed), or else a
    plain string (arch=nanochat-2026-07)."""
    changes = {}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in items:
        key, value = item.split("=", 1)
        if key not in names:
            raise SystemExit(f"unknown TrainConfig field {key!r}; known: {sorted(names)}")
        try:
            changes[key] = math.inf if value == "inf" else json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    return dataclasses.replace(cfg, **changes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, default=Path(".carry/shards"))
    ap.add_argument("--tokenizer", type=Path, default=Path(".carry/tokenizer"))
    ap.add_argument("--out", type=Path, required=True, help="checkpoint, log, evaluation and the finished model")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt if it exists")
    ap.add_argument("--save-every", type=float, default=math.inf, help="seconds between resumable checkpoints")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override TrainConfig fields, e.g. pretrain_seconds=300 batch_size=128 compile=true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-eval", action="store_true", help="skip the final evaluation (slow on CPU)")
    args = ap.parse_args()

    cfg = parse_overrides(TrainConfig(), args.set)
    device = torch.device(args.device)
    tok = Tokenizer.load(args.tokenizer)
    if tok.vocab_size != cfg.vocab_size:
        raise SystemExit(f"tokenizer has {tok.vocab_size} tokens, config says vocab_size={cfg.vocab_size}")
    stream, sft, val = load_data(args.shards, cfg, tok)
    trainer = Trainer(cfg, device, args.out, samplers=(stream, sft))
    if args.resume and (args.out / "ckpt.pt").exists():
        trainer.load_checkpoint(args.out / "ckpt.pt")
        print(f"resumed: {trainer.state}")
    curve_eval = make_curve_eval(val, cfg, device)
    t0 = time.time()
    trainer.run_phase("pretrain", stream, cfg.pretrain_steps, cfg.pretrain_seconds, 1.0, curve_eval, args.save_every)
    trainer.run_phase("sft", sft, cfg.sft_steps, cfg.sft_seconds, cfg.sft_lr_frac, curve_eval, args.save_every)
    print(f"trained in {time.time() - t0:.0f}s: {trainer.state}", flush=True)

    meta = {"name": f"Inside Forward default (d{cfg.n_layer}, {cfg.n_embd} wide)",
            "train_config": dataclasses.asdict(cfg), "train_state": trainer.state}
    # shards under 10 MB: Hugging Face Spaces takes larger files only through Git LFS
    save_model(args.out / "model", trainer.model, tok, meta, dtype="float16", max_shard_bytes=9_000_000)
    (args.out / "train_log.json").write_text(json.dumps(trainer.log))
    if args.no_eval:
        return

    # Evidence for the model card: the final model, the early snapshot and a unigram model, evaluated alike.
    models = {"final": trainer.model.eval()}
    if trainer.snapshot is not None:
        early = cfg.new_model().to(device)
        early.load_state_dict(trainer.snapshot)
        models[f"early (step {trainer.state.get('snapshot_step')})"] = early.eval()
    train_ids = [shard_io.load(args.shards / f"{n}.train.npz.xz")["ids"] for n in cfg.pretrain_weights]
    unigram = evaluate.unigram_logprobs(train_ids, cfg.vocab_size)
    results = evaluate.evaluate_sources(val, cfg.sequence_len, evaluate.token_byte_lengths(tok), models, unigram)
    (args.out / "eval.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
