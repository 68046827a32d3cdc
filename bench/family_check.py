"""Every nanochat version through the chat server's decoder on this device: `python3 bench/family_check.py`.

For each tree of tests/fixtures/nanochat (written by nanochat's own code at the commit where the forward changed,
with nanochat's own float32 logits and greedy tokens), on the device (a GPU: CUDA graphs, as the app serves):
- float32: the full forward's logits against nanochat's (max relative error), and the server's decoder
  (gpt/fast.py's StaticDecoder, two rows at different positions, greedy) against nanochat's greedy tokens;
- bfloat16 (how the app serves on a GPU): the logits' relative error, and how many greedy tokens agree.
Prints a table and writes bench/results/family_<device>.json. Correctness, not speed: the trees are tiny.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, machine_info, table, write_json  # noqa: E402
from gpt.anywhere import load  # noqa: E402
from gpt.fast import StaticDecoder  # noqa: E402
from gpt.nanochat import FamilyError, member  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "nanochat"


@torch.inference_mode()
def check(commit: str, device: torch.device, dtype: torch.dtype) -> dict:
    loaded = load(FIXTURES / commit, device=device, dtype=dtype, arch=commit)
    ref = load_file(FIXTURES / commit / "reference.safetensors")
    logits = loaded.model(ref["ids"].to(device))[0, ref["positions"].to(device)].float().cpu()
    rel = float((logits - ref["logits"]).abs().max() / ref["logits"].abs().max())
    decoder = StaticDecoder(loaded.model, 2)  # CUDA graphs on a GPU, as the app's server
    prompts = [ref["ids"][0, :40].tolist(), ref["ids"][0, 5:40].tolist()]
    first = [int(decoder.prefill(row, p, None)) for row, p in enumerate(prompts)]
    steps = [decoder.decode(2, 128, None).tolist() for _ in range(len(ref["greedy"]) - 1)]
    row0 = [first[0]] + [s[0] for s in steps]
    row1 = [first[1]] + [s[1] for s in steps]
    eager1 = list(loaded.model.generate(prompts[1], len(row1), temperature=0))
    want = ref["greedy"].tolist()
    agree = next((i for i, (a, b) in enumerate(zip(row0, want)) if a != b), len(want))
    return dict(commit=commit, dtype=str(dtype).removeprefix("torch."), graphs="yes" if decoder.use_graphs else "no", rel_err=rel,
                greedy_same=row0 == want, greedy_agree=agree, of=len(want), row1_same_as_eager=row1 == eager1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    commits = []  # every tree of a version nanochat released (the one-day experiments' trees fit none: left out)
    for tree in sorted(p.parent for p in FIXTURES.glob("*/reference.json")):
        try:
            member(tree.name)
        except FamilyError:
            continue
        commits.append(tree.name)
    rows = [check(c, device, dt) for dt in (torch.float32, torch.bfloat16) for c in commits]
    print(table(rows, [("commit", "commit"), ("dtype", "dtype"), ("graphs", "CUDA graphs"),
                       ("rel_err", "logits rel. err"), ("greedy_agree", "greedy agree"), ("of", "of"),
                       ("greedy_same", "= nanochat"), ("row1_same_as_eager", "row 1 = eager")]))
    path = write_json(RESULTS / f"family_{device.type}.json", dict(machine=machine_info(device), rows=rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
