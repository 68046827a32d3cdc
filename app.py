"""Inside Forward: chat with a nanochat GPT and look inside its forward pass.

    python app.py                              # the shipped default model, http://127.0.0.1:7860
    python app.py --model karpathy/nanochat-d32   # a Hugging Face Hub repo (owner/name[@revision])
    python app.py --model DIR                  # a folder: nanochat's (base dir or flat), transformers' NanoChat, ours
    python app.py --nanochat --source sft      # a nanochat run from $NANOCHAT_BASE_DIR (or ~/.cache/nanochat)
    python app.py --random-config n_layer=4,n_head=4,n_embd=128   # random-init model for shape lessons
    python app.py --publish OUT_DIR            # no server: every lesson written as a static site (publish/)
    python app.py --chat-backend http://gpu-box:8000/v1   # the Chat tab decoded by vLLM (or another copy of the app)

Every copy also serves an OpenAI-compatible API on its own port under /v1 (api/), with --api-key to ask for a key.

Hugging Face Spaces runs this file as is (it reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT from the environment, and
INSIDE_FORWARD_MODEL as --model's default).
"""
from __future__ import annotations

import argparse
import os

# Before gradio is imported: no telemetry, no version check. (HF_HUB_OFFLINE: see main.)
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# The model to serve when --model is not given: how a Space (which runs `python app.py` with no arguments) serves a
# Hub model, set as a variable in its settings.
MODEL_ENV = "INSIDE_FORWARD_MODEL"
# Secrets from the environment rather than the command line (which other users of the machine can read): the key the
# /v1 API asks for, and the one the --chat-backend server asks for.
API_KEY_ENV = "INSIDE_FORWARD_API_KEY"
BACKEND_KEY_ENV = "INSIDE_FORWARD_CHAT_BACKEND_KEY"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="interface to listen on (0.0.0.0 to serve a classroom network)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--model", default=os.environ.get(MODEL_ENV) or None, metavar="SOURCE",
                   help=f"(default: ${MODEL_ENV}, e.g. a Space's variable) "
                        "a Hugging Face Hub repo id (owner/name[@revision]) or a folder: a nanochat base dir "
                        "(tokenizer/ + *_checkpoints/), a flat nanochat folder (model_<step>.pt, meta_<step>.json, "
                        "tokenizer.pkl), a transformers NanoChat folder, or this project's format")
    p.add_argument("--checkpoint", default=None, help="the same as --model (kept for old command lines)")
    p.add_argument("--nanochat", action="store_true",
                   help="load nanochat's own base dir, $NANOCHAT_BASE_DIR or ~/.cache/nanochat (or --model's)")
    p.add_argument("--source", default=None, choices=["base", "mid", "sft", "rl"],
                   help="nanochat checkpoint kind, in a nanochat base dir (default: sft, else the first of rl, mid, "
                        "base the run has)")
    p.add_argument("--model-tag", default=None, help="nanochat depth tag, e.g. d20 (default: the largest)")
    p.add_argument("--step", type=int, default=None, help="nanochat checkpoint step (default: the largest)")
    p.add_argument("--random-config", default=None, metavar="K=V,...",
                   help="serve a random-init model, e.g. n_layer=4,n_head=4,n_embd=128,vocab_size=50304 (add "
                        "arch=COMMIT for another nanochat version, e.g. arch=a825e63; window_pattern=SSSL alone means today's)")
    p.add_argument("--arch", default=None, metavar="COMMIT",
                   help="force the nanochat version of a checkpoint, by the commit that introduced its forward (e.g. "
                        "4a87a0d, the tutorial's; a825e63, today's; nanochat-2025-11 and nanochat-2026-07 name those "
                        "two; default: read off the checkpoint, and where several versions wrote identical files, the "
                        "first; forcing a later one patches missing entries as nanochat's own loader does)")
    p.add_argument("--compare", default=None, metavar="SOURCE",
                   help="a second model to put beside the served one in the Inside tab's compare view (anything "
                        "--model takes; it must share the served model's vocabulary)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto = bfloat16 on CUDA, float32 on a CPU (there a seeded reply does not change with who "
                        "else is chatting; bfloat16 is faster on CPUs with native bf16 but gives up that promise)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step (faster decoding; each new batch/length bucket waits for a "
                        "compile the first time: ~30 s on a GPU; on a CPU ~45 s on 2 cores, needs a C++ compiler, "
                        "and decodes the default model ~2.7x as fast: 240-270 tokens/s at batch 1 in float32)")
    p.add_argument("--fused", action="store_true",
                   help="GPU only: decode with the fused Triton kernels of gpt/fused_decode.py (5 per layer instead "
                        "of ~27; a d20 on an H200: 779 tokens/s at batch 1 instead of 643; first use compiles them, "
                        "~10 s)")
    p.add_argument("--share", action="store_true",
                   help="also open a temporary public *.gradio.live link (needs internet; off by default)")
    p.add_argument("--publish", default=None, metavar="OUT_DIR",
                   help="serve nothing: write every lesson, its views computed by the model, as a static site in "
                        "OUT_DIR (both languages, no Python or network needed to view it; README: 'A static site')")
    p.add_argument("--concurrency", type=int, default=2,
                   help="requests of one kind that run at the same time (chat replies: as many as decode together)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None, metavar="KEY",
                   help=f"(default: ${API_KEY_ENV}) the key the OpenAI-compatible API under /v1 asks for, as "
                        "'Authorization: Bearer KEY' (without one it asks for none)")
    p.add_argument("--chat-backend", default=None, metavar="URL",
                   help="send the Chat tab to an OpenAI-compatible server serving the same weights (vLLM with "
                        "vllm_nanochat, or another copy of this app), e.g. http://gpu-box:8000/v1; every other tab "
                        "runs on this process's copy of the model")
    p.add_argument("--chat-backend-key", default=os.environ.get(BACKEND_KEY_ENV) or None, metavar="KEY",
                   help=f"(default: ${BACKEND_KEY_ENV}) the API key the --chat-backend server asks for")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = args.model or args.checkpoint
    from demo.offline import stay_offline_unless_hub

    stay_offline_unless_hub(model)
    from api import OpenAIServer
    from demo.app import build_app, launch_kwargs
    from demo.models import ARCH_CHOICES, load

    if args.arch is not None and args.arch not in ARCH_CHOICES:
        raise SystemExit(f"--arch {args.arch}: not a nanochat version this app knows ({', '.join(ARCH_CHOICES)})")

    models = load(model=model, nanochat=args.nanochat, source=args.source, model_tag=args.model_tag,
                  step=args.step, random_config=args.random_config,
                  device=None if args.device == "auto" else args.device, dtype=args.dtype, compile=args.compile,
                  fused=args.fused, arch=args.arch, compare=args.compare)
    if models.notice:
        print(f"warning: {models.notice}")
    print(f"model: {models.main.name} (nanochat {models.main.arch}) on {models.main.device} ({models.main.dtype})")
    if models.main.same_files:
        print(f"note: nanochat {', '.join(models.main.same_files)} wrote files exactly like these but computes "
              f"differently; --arch picks one")
    if args.publish:
        from publish import publish

        report = publish(models, args.publish)
        print(f"published {len(report.pages)} pages ({report.figures} figures each) to {report.out_dir}: "
              f"{report.bytes / 1e6:.1f} MB in {report.seconds:.0f} s; open {report.pages[0]}")
        return
    if args.chat_backend:
        try:
            models.use_chat_backend(args.chat_backend, args.chat_backend_key)
        except ValueError as e:
            raise SystemExit(f"--chat-backend {args.chat_backend}: {e}") from None
        print(f"chat: decoded by {args.chat_backend}; the other tabs by this process")
    routes = []
    if models.zerogpu:  # each reply is a GPU call of a Gradio event there; the API has none to run in
        print("note: no /v1 API on ZeroGPU")
    else:
        routes.append(OpenAIServer(models.engine, models.main.name, models.chat_rows, args.api_key).mount())
    demo, payloads = build_app(models)
    if not models.zerogpu:  # the lessons' views, ready before the first visitor asks (on ZeroGPU's GPU: on first use)
        import threading

        threading.Thread(target=payloads.warm, name="lessons", daemon=True).start()
    demo.queue(default_concurrency_limit=args.concurrency)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs(routes))


if __name__ == "__main__":
    main()
