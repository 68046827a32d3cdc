"""Which model the app serves, the random-init tutorial model, the one-line description the header shows, and the
one decorator every UI handler that does model work goes through (`Models.handler`)."""
from __future__ import annotations

import dataclasses
import functools
import html
import inspect
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

import gradio as gr
import torch

from demo.gpu import gpu, on_zerogpu, refusal_message, serves_on_cpu, start as zerogpu_start
from rules.inputs import InputError, check_numbers, parse_config
from explain.family import feature_card_md
from explain.shapes import TUTORIAL_CONFIG
from text import LANGS, t
from gpt import fused_decode
from gpt import nanochat as family
from gpt.checkpoint import (LoadedModel, default_dtype, load_default, load_nanochat, moved, pick_device,
                            random_model)
from gpt.anywhere import load as load_any
from gpt.engine import Engine
from gpt.fast import cpu_compiler
from gpt.remote import RemoteEngine, RemoteError
from gpt.stream import SamplingParams, StreamEvent
from gpt.nanochat import GPT, GPTConfig
from gpt.tokenizer import Tokenizer
from gpt.torch_thread import TorchThread

F = TypeVar("F", bound=Callable)
# Used only when no trained model exists: small enough to build in a second anywhere.
ARCH_CHOICES = tuple(m.name for m in family.MEMBERS) + tuple(family.ALIASES)  # what --arch accepts
FALLBACK_CONFIG = GPTConfig(sequence_len=256, vocab_size=1024, n_layer=2, n_head=2, n_kv_head=2, n_embd=64)


@dataclass
class Models:
    """The served model (+ its engine) and the lazily built random-init model of the tutorial's config.

    `worker` runs the model work: on a CPU one thread for all of it (gpt/torch_thread.py says why). Every queued UI
    event is a `handler` (a test holds the demo to it), so a new one cannot forget the rule."""

    main: LoadedModel
    notice: str = ""  # why the requested model is not the one served ("" when it is)
    worker: TorchThread | None = None  # default: model_thread(main.device)
    compile: bool = False  # torch.compile the decode step (gpt/fast.py)
    fused: bool = False  # the GPU decode step in fused Triton kernels (gpt/fused_decode.py)
    zerogpu: bool = False  # on ZeroGPU hardware: each model handler is one GPU call, in a fork (demo/gpu.py)
    second: LoadedModel | None = None  # --compare: a second model to put beside the served one (compare view)
    chat_backend: RemoteEngine | None = None  # --chat-backend: the server that decodes the Chat tab's replies
    _tutorial: dict[str, LoadedModel] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.worker is None:  # in a GPU call's fork no thread of this process exists: model work runs inline
            self.worker = TorchThread(enabled=False) if self.zerogpu else model_thread(self.main.device)
        self.chat_rows = chat_rows(self.main.model, self.main.device)  # chats that decode together
        if self.zerogpu:  # each reply decodes eagerly in its own GPU call: no batched server here (demo/gpu.py)
            self.engine = Engine(self.main.model, self.main.tokenizer, batched=False)
            return
        self.engine = Engine(self.main.model, self.main.tokenizer, batched=True, max_batch=self.chat_rows,
                             compile=self.compile, run=self.worker.urgent, fused=self.fused)

    def tutorial(self, member: family.Member = family.TUTORIAL) -> LoadedModel:
        """nanochat's init of the tutorial config as nanochat `member` has it (window_pattern SSSL where it has
        windows), with the served model's tokenizer, on the same device."""
        with self._lock:
            if member.name not in self._tutorial:
                self._tutorial[member.name] = untrained(tutorial_config(member), self.main.tokenizer,
                                                        self.main.device, member=member)
            return self._tutorial[member.name]

    def counterpart(self, which: str, other: family.Member | None = None) -> LoadedModel:
        """A model of another nanochat version to put beside `pick(which)` (then and now): the other tutorial model,
        or, beside the served model, an untrained one of the tutorial's size with its vocab, context and tokenizer,
        of today's nanochat (of the tutorial's, beside a model with any later feature). `other` asks for a version:
        an untrained model of it, the tutorial's size (with the served model's vocab and context beside that)."""
        if other is None and which in ("tutorial", "tutorial_2026"):
            return self.pick("tutorial_2026" if which == "tutorial" else "tutorial")
        if other is None:
            other = family.TUTORIAL if self.main.model.features.changed() else family.TODAY
        if which != "loaded":
            return self.tutorial(other)
        key = f"beside-main-{other.name}"
        with self._lock:
            if key not in self._tutorial:
                c = self.main.model.config
                config = dataclasses.replace(tutorial_config(other), vocab_size=c.vocab_size,
                                             sequence_len=c.sequence_len)
                self._tutorial[key] = untrained(config, self.main.tokenizer, self.main.device, member=other)
            return self._tutorial[key]

    def beside(self, which: str) -> LoadedModel:
        """The model the compare view puts beside `pick(which)`: the second model (--compare) beside the served one,
        else the other version's untrained model (counterpart)."""
        return self.second if which == "loaded" and self.second is not None else self.counterpart(which)

    def pick(self, which: str) -> LoadedModel:
        """"loaded" (the served model), "tutorial" (the tutorial's random-init model, 2025) or "tutorial_2026"."""
        return {"tutorial": lambda: self.tutorial(family.TUTORIAL),
                "tutorial_2026": lambda: self.tutorial(family.TODAY)}.get(which, lambda: self.main)()

    def handler(self, fn: F | None = None, *, on_thread: bool = True, checks: bool = False, needs_gpu: bool = True,
                duration: Callable[[dict], float] | None = None) -> F:
        """A UI event handler that does model work: on ZeroGPU inside spaces.GPU; on a CPU on the torch thread (a
        generator's items are produced there); every failure becomes a message in the language of the handler's
        `lang` argument (`in_users_language`). on_thread=False for a handler that must not hold the thread while it
        waits: a chat reply (the batched decode loop runs its steps there itself) or a paced loop that hands each step
        to `self.run`. checks=True for a quick step that only checks what the user asked for before model work starts
        (the chat's message, say): no GPU, no torch thread. It is queued all the same, because Gradio 6 shows a
        queue=False event's error as a bare "Error" on its outputs, with no message.

        On ZeroGPU (self.zerogpu) every other handler is one GPU call, run in a fork of this process (demo/gpu.py),
        whose time budget is duration(its arguments by name) seconds (default: what the work budgets allow);
        needs_gpu=False for one that does no model work (a browser drawing a PNG): it runs here, with no GPU call."""
        if fn is None:
            return functools.partial(self.handler, on_thread=on_thread, checks=checks,  # type: ignore[return-value]
                                     needs_gpu=needs_gpu, duration=duration)
        if checks or (self.zerogpu and not needs_gpu):
            wrapped = in_users_language(fn)
        elif self.zerogpu:  # not on the torch thread: a thread of this process does not exist in the fork
            # in_users_language twice: in the fork for fn's own errors, here for a GPU call ZeroGPU refused
            wrapped = in_users_language(gpu(in_users_language(fn), duration))
        else:
            wrapped = self.worker.wrap(in_users_language(fn)) if on_thread else in_users_language(fn)
        wrapped.model_handler = True
        return wrapped

    @property
    def chat_streams(self) -> int:
        """How many chat replies stream at once (Gradio's queue shows the others their place): as many as the engine
        decodes together, or with a chat backend BACKEND_CHAT_STREAMS (the server batches them)."""
        return self.chat_rows if self.chat_backend is None else BACKEND_CHAT_STREAMS

    def use_chat_backend(self, url: str, api_key: str | None = None) -> None:
        """The Chat tab's replies from now on: decoded by the OpenAI-compatible server at `url`, which serves the
        same weights (ValueError for a URL that is not http(s))."""
        self.chat_backend = RemoteEngine(url, self.main.tokenizer, self.main.model.config.sequence_len, api_key)

    def chat_stream(self, prompt: list[int], params: SamplingParams, should_stop: Callable[[], bool]
                    ) -> Iterator[StreamEvent]:
        """A chat reply's events (Engine.stream's): from this process's engine, or from the chat backend, whose
        failure is a message naming it (InputError: no traceback, the server is not this app's bug)."""
        if self.chat_backend is None:
            yield from self.engine.stream(prompt, params, should_stop=should_stop)
            return
        try:
            yield from self.chat_backend.stream(prompt, params, should_stop=should_stop)
        except RemoteError as e:
            raise InputError("ui.chat_backend_failed", why=str(e)) from None

    def run(self, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs) where model work runs (on a CPU: the torch thread), from an on_thread=False handler."""
        return self.worker.run(fn, *args, **kwargs)


def in_users_language(fn: F) -> F:
    """fn (a UI event handler, plain or a generator), with every failure a gr.Error whose message says what went
    wrong, in the language of fn's `lang` argument ("en" without one): the one error path. The toast shows that
    message and the API returns it; nothing fails with a bare "Error".

    - A number that is not finite (NaN, ±inf) among the arguments is refused before fn runs (rules.inputs).
    - InputError (the user's mistake): its message, and no traceback in the log (it is no bug).
    - gr.Error: as raised, except a GPU call ZeroGPU refused (`spaces` raises those in English): a message saying so,
      and what still works (demo.gpu.refusal_message).
    - Anything else (a bug): "something went wrong" naming the exception; its traceback goes to the log.
    Messages are HTML-escaped: they may quote what the user typed, and Gradio's toasts render HTML."""
    signature = inspect.signature(fn)

    def language(args, kwargs) -> str:
        try:
            return signature.bind_partial(*args, **kwargs).arguments.get("lang") or "en"
        except TypeError:
            return "en"

    def error(e: Exception, args, kwargs) -> gr.Error:
        lang = language(args, kwargs)
        lang = lang if lang in LANGS else "en"
        if isinstance(e, InputError):
            text, log = e.message(lang), False
        else:
            text, log = t("ui.internal_error", lang, what=f"{type(e).__name__}: {e}"[:300]), True
        return gr.Error(html.escape(text, quote=False), print_exception=log)  # (its heading: demo/app.py)

    def refused(e: gr.Error, args, kwargs) -> gr.Error | None:
        lang = language(args, kwargs)
        text = refusal_message(e, lang if lang in LANGS else "en")
        return None if text is None else gr.Error(html.escape(text, quote=False), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                check_numbers([*args, *kwargs.values()])
                yield from fn(*args, **kwargs)
            except gr.Error as e:
                raise refused(e, args, kwargs) or e
            except Exception as e:  # noqa: BLE001 - every failure becomes a message (see above)
                raise error(e, args, kwargs) from (None if isinstance(e, InputError) else e)
        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            check_numbers([*args, *kwargs.values()])
            return fn(*args, **kwargs)
        except gr.Error as e:
            raise refused(e, args, kwargs) or e
        except Exception as e:  # noqa: BLE001 - every failure becomes a message (see above)
            raise error(e, args, kwargs) from (None if isinstance(e, InputError) else e)
    return call  # type: ignore[return-value]


def tutorial_config(member: family.Member) -> GPTConfig:
    """The tutorial's config (4 layers, 4 heads, 128 wide, vocab 50304), with window_pattern SSSL for a member with
    sliding windows."""
    return dataclasses.replace(TUTORIAL_CONFIG, window_pattern="SSSL" if member.features.windows else "L")


def model_thread(device: torch.device) -> TorchThread:
    """Where the model work of a model on `device` runs: one TorchThread on a CPU; the caller's thread elsewhere
    (gpt/torch_thread.py says why, and why not on a GPU)."""
    return TorchThread(enabled=device.type == "cpu")


CPU_CHAT_ROWS = 8  # more only share the same few cores
# Replies streaming at once from a --chat-backend server: each holds one of Gradio's 40 worker threads while it waits
# for its next chunk, so some stay for every other event.
BACKEND_CHAT_STREAMS = 32
CPU_KV_BYTES = 512 * 2**20  # the chat rows' KV cache on a CPU (RAM is shared with everything else)


def chat_rows(model: GPT, device: torch.device) -> int:
    """How many chats decode together. A GPU: 32. A CPU: 8 (measured on 2 cores, bench/README.md: one chat decodes
    as fast through the batched loop as alone, and 8 at once each get ~4x what taking turns gives), fewer when their
    KV cache would pass CPU_KV_BYTES (a nanochat d20 in bf16 needs 210 MB a row: 2 rows)."""
    if device.type != "cpu":
        return 32
    per_row = model.kv_bytes_per_token() * model.config.sequence_len  # the cache is kept in the weights' dtype
    return max(1, min(CPU_CHAT_ROWS, CPU_KV_BYTES // per_row))


def untrained(config: GPTConfig, tokenizer: Tokenizer, device: torch.device, seed: int = 0,
              member: family.Member = family.TUTORIAL) -> LoadedModel:
    """An untrained model of `config` (the tutorial's random-init model, --random-config, the fallback): random
    everywhere (gpt.checkpoint.random_model), so that what a view shows depends on the input (with nanochat's zero
    lm_head every logit is 0, and a KV-cache check would pass for that reason alone)."""
    return random_model(config, tokenizer, seed=seed, device=device, member=member, everywhere=True)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(loaded: LoadedModel, lang: str = "en") -> str:
    """'name · nanochat 4a87a0d (2025-11-17) · 20.1M params · 4 layers × 256 · context 512 · cpu · float32' (labels
    in `lang`; the name, which may be a path anyone chose, shows as written)."""
    from text import literal, t

    c, member = loaded.model.config, loaded.model.member
    dtype = str(loaded.dtype).replace("torch.", "")
    return (f"**{literal(loaded.name)}** · nanochat `{member.name}` ({member.date}) · "
            f"{n_params(loaded.model) / 1e6:.1f}M {t('ui.params', lang)} · {c.n_layer} {t('ui.layers', lang)} × "
            f"{c.n_embd} · {t('ui.context', lang)} {c.sequence_len} · `{loaded.device}` · `{dtype}`")


def model_card(loaded: LoadedModel, lang: str = "en") -> str:
    """The model card panel: which nanochat version the model is and each feature it adds to the tutorial's, with the
    commit that introduced it (and which other versions write identical files)."""
    return feature_card_md(loaded.model.config, loaded.model.member, lang, loaded.same_files)


def fallback_tokenizer() -> Tokenizer:
    """A tiny BPE trained on the app's own labels (the ui.* texts, in every language): lets a random-init model run
    with no files at all."""
    from text import LANGS, keys, t

    texts = [t(key, lang) for key in keys("ui.") for lang in LANGS] * 4
    return Tokenizer.train(texts, 512)


def load(model: str | None = None, nanochat: bool = False, source: str | None = None, model_tag: str | None = None,
         step: int | None = None, random_config: str | None = None, device: str | None = None,
         dtype: str | None = None, compile: bool = False, arch: str | None = None,
         compare: str | None = None, fused: bool = False) -> Models:
    """Load what the command line asks for; on failure fall back (default model, else random-init) with a notice.
    Loading runs on the thread that will run the model (on a CPU, the TorchThread: see gpt/torch_thread.py)."""
    device_notice = ""
    zerogpu = on_zerogpu()
    if zerogpu:  # models load onto the CPU; one too large to serve there goes onto "cuda" (demo/gpu.py)
        if compile:
            print("warning: ZeroGPU has no torch.compile: --compile is ignored")
        if fused:
            print("warning: on ZeroGPU each reply decodes eagerly in its own GPU call: --fused is ignored")
            fused = False
        if device not in (None, "auto", "cuda"):
            print(f"warning: on ZeroGPU a model runs on the Space's CPU or its GPU: --device {device} is ignored")
        gpu_dev, compile = zerogpu_start(), False
        dev = torch.device("cpu")
    else:
        try:
            dev = pick_device(device)
        except (ValueError, RuntimeError) as e:  # e.g. --device cuda on a machine without a GPU: serve on the CPU
            dev, device_notice = torch.device("cpu"), f"{e}; serving on the CPU"
    if fused and not fused_decode.available(dev):
        print(f"warning: --fused needs a CUDA GPU and Triton (this is {dev}): decoding through the model's forward")
        fused = False
    if fused and compile:
        print("warning: --fused already fuses the decode step: --compile is ignored")
        compile = False
    if compile and dev.type == "cpu" and cpu_compiler() is None:
        print("warning: --compile on a CPU needs a C++ compiler (g++, or $CXX) and none was found: decoding eagerly")
        compile = False
    worker = model_thread(dev)
    serve = functools.partial(Models, worker=worker, compile=compile, fused=fused)
    if zerogpu:
        serve = functools.partial(_serve_on_zerogpu, serve, gpu_dev, dtype)
    models = worker.run(_load, model, nanochat, source, model_tag, step, random_config, dev, dtype, serve, arch)
    if compare:  # a second model for the compare view: any source --model takes; on failure, a notice
        try:
            second = worker.run(load_any, compare, dev, _torch_dtype(dtype, dev))
            models.second = moved(second, models.main.device, models.main.dtype) if models.zerogpu else second
        except Exception as e:  # noqa: BLE001 - reported in the header, the app serves on
            device_notice = "; ".join(filter(None, [device_notice, f"--compare {compare}: {type(e).__name__}: {e}"]))
    if device_notice:
        models.notice = "; ".join(filter(None, [device_notice, models.notice]))
    return models


def _load(model: str | None, nanochat: bool, source: str | None, model_tag: str | None, step: int | None,
          random_config: str | None, dev: torch.device, dtype: str | None, serve: Callable[..., Models],
          arch: str | None = None) -> Models:
    torch_dtype = _torch_dtype(dtype, dev)
    notice = ""
    try:
        if random_config is not None:
            spec = parse_config(random_config)
            return serve(untrained(spec.config, _default_tokenizer(), dev, member=spec.member))
        if model:
            return serve(load_any(model, dev, torch_dtype, arch=arch, step=step, nanochat_source=source,
                                  model_tag=model_tag))
        if nanochat:  # nanochat's own base dir: $NANOCHAT_BASE_DIR or ~/.cache/nanochat
            return serve(load_nanochat(None, source=source, model_tag=model_tag, step=step, device=dev,
                                       dtype=torch_dtype, arch=arch))
    except Exception as e:  # noqa: BLE001 - any failure is reported in the UI, and we keep serving something
        notice = f"{type(e).__name__}: {e}"
    try:
        return serve(load_default(device=dev, dtype=torch_dtype), notice=notice)
    except FileNotFoundError as e:
        notice = notice or f"no trained model yet ({e})"
    return serve(untrained(FALLBACK_CONFIG, fallback_tokenizer(), dev), notice=notice)


def _serve_on_zerogpu(serve: Callable[..., Models], gpu_dev: torch.device, dtype: str | None, loaded: LoadedModel,
                      notice: str = "") -> Models:
    """On ZeroGPU, what serves `loaded` (loaded onto the CPU): a model small enough for the Space's CPU stays there and
    is served as on any CPU (no GPU call: it spends no visitor's quota); a larger one goes onto `gpu_dev` (spaces'
    emulated cuda until a GPU call) in its dtype there, and every model handler is one GPU call (demo/gpu.py)."""
    if serves_on_cpu(loaded.model):
        return serve(loaded, notice=notice)
    return Models(moved(loaded, gpu_dev, _torch_dtype(dtype, gpu_dev)), notice=notice, zerogpu=True)


def _torch_dtype(dtype: str | None, dev: torch.device) -> torch.dtype:
    """--dtype's name, or "auto"/None: the device's default (gpt.checkpoint.default_dtype)."""
    return getattr(torch, dtype) if dtype and dtype != "auto" else default_dtype(dev)


def _default_tokenizer() -> Tokenizer:
    try:
        return load_default(device="cpu").tokenizer
    except FileNotFoundError:
        return fallback_tokenizer()
