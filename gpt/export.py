"""Write a model in another library's format.

    python -m gpt.export --model SOURCE --format transformers|vllm OUT_DIR [--arch COMMIT] [--dtype bfloat16]
                         [--max-shard-mb 5120]

SOURCE is anything gpt.anywhere.load reads (a Hub repo id, a nanochat folder, this project's, transformers'). `transformers` writes a
folder that `AutoModelForCausalLM.from_pretrained(OUT_DIR)` and `AutoTokenizer.from_pretrained(OUT_DIR)` load
(gpt/hf_format.py: what converts, and how closely the logits agree). Later nanochat versions (windows, value embeddings, ...) do not convert.
`vllm` writes a folder that vLLM serves with the plugin in vllm_nanochat/ (gpt/vllm_format.py), every version.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("transformers", "vllm")
DTYPES = ("float32", "bfloat16", "float16")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the model to export (what gpt.anywhere.load reads)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="the format to write")
    parser.add_argument("--arch", default=None, metavar="COMMIT",
                        help="the nanochat version that wrote SOURCE, where its files cannot tell (as app.py's --arch)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="stored weight dtype (default: float32, the precision the model is read in)")
    parser.add_argument("--max-shard-mb", type=int, default=None,
                        help="largest weight file in MiB before the weights are split into shards (default 5120)")
    parser.add_argument("out_dir", help="folder to write (created; earlier weight files in it are replaced)")
    args = parser.parse_args(argv)

    import torch

    from gpt.anywhere import load
    from gpt.checkpoint import CheckpointError
    from gpt.hf_format import DEFAULT_SHARD_BYTES, to_transformers
    from gpt.vllm_format import to_vllm

    try:
        loaded = load(args.model, device="cpu", dtype="float32", arch=args.arch)  # the stored precision is --dtype's
        dtype = getattr(torch, args.dtype) if args.dtype else None
        shard = DEFAULT_SHARD_BYTES if args.max_shard_mb is None else args.max_shard_mb * 2**20
        write = to_vllm if args.format == "vllm" else to_transformers
        written = write(loaded.model, loaded.tokenizer, args.out_dir, dtype=dtype, max_shard_bytes=shard)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out, target = str(args.out_dir), ("vLLM NanoChatFamilyForCausalLM" if args.format == "vllm"
                                       else "transformers NanoChatForCausalLM")
    print(f"{loaded.name} ({loaded.arch}) -> {target} in {Path(out)}")
    for path in written:
        print(f"  {path.name:<40} {path.stat().st_size:>14,} bytes")
    if args.format == "vllm":
        print(f"serve it with vLLM and the plugin (pip install ./vllm_nanochat): "
              f"python -m vllm.entrypoints.openai.api_server --model {out}")
    else:
        print(f"load it with transformers.AutoModelForCausalLM.from_pretrained({out!r}) "
              f"and AutoTokenizer.from_pretrained({out!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
