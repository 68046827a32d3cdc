#!/usr/bin/env python3
"""Offline checks that this repository deploys to a Hugging Face Space (Gradio SDK) the way the README says.

    python3 scripts/check_deploy.py [--root DIR]     # one line per check, OK or FAIL and why; exit code 0 or 1
    python3 scripts/check_deploy.py --zerogpu        # the same, as a ZeroGPU Space (this repository is one; another
                                                     # is switched as docs/zerogpu.md says, in memory: nothing edited)
    python3 scripts/check_deploy.py --cpu            # the same, as the README's paid alternative, a CPU Space

1. The README's front matter agrees with requirements.txt: sdk gradio, sdk_version = the gradio pin, a python_version
   Spaces accepts, an app_file that is tracked.
2. Every tracked binary file is matched by a Xet/LFS rule in .gitattributes (the Hub refuses binaries pushed as plain
   git blobs).
3. No tracked file is over the Hub's per-file limits (10 MB as a plain git blob, 500 GB in Xet/LFS).
4. A CPU Space gets PyTorch's CPU build: pre-requirements.txt pins torch==X+cpu from PyTorch's CPU index, and X+cpu
   satisfies requirements.txt's torch specifier (so installing requirements.txt afterwards keeps it).
5. With PNG export on (kaleido in requirements.txt), packages.txt installs chromium and a CJK font.
6. A ZeroGPU Space (suggested_hardware: zero-a10g) gets what ZeroGPU runs and this app can: python_version 3.12, no
   pre-requirements.txt pinning torch's CPU build, requirements.txt pinning a torch ZeroGPU lists (PyPI's CUDA
   build; the list is hub-docs', cited at ZEROGPU_TORCH_LISTED), and `spaces` in requirements.txt.

The deploy profile comes from the front matter's suggested_hardware: zero-a10g is ZeroGPU, cpu-* is CPU (also when it
is absent: cpu-basic is Spaces' default), anything else a GPU. Checks 4 and 6 hold each profile to its own rules.

Each check is a function of a repository root and `changes`, {path: text, or None for a deleted file}, read in place of
the files on disk (tests run them on small repositories made in a temporary folder; --zerogpu passes the switch's
changes, `zerogpu_variant(root)`).
Needs git and `packaging`, nothing else: it reads files and asks git, it never reaches the network.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

# Sources (github.com/huggingface/hub-docs at 242f4a1, the pages of huggingface.co/docs/hub/):
#   docs/hub/spaces-config-reference.md: sdk is gradio, docker or static; python_version is "any valid Python 3.x or
#     3.x.x version", default 3.10; sdk_version "all versions of Gradio are supported".
#   docs/hub/spaces-dependencies.md: requirements.txt; pre-requirements.txt "installed before your main
#     dependencies"; packages.txt, one Debian package a line, "installed by apt-get install".
#   docs/hub/repositories-getting-started.md and spaces-github-actions.md: files over 10MB must go through Xet/LFS.
#   docs/hub/storage-limits.md: "500GB is the hard limit for a single file size" (50GB before November 2025).
#   The Hub's refusal of small binaries too: "Your push was rejected because it contains binary files. Please use
#     https://huggingface.co/docs/hub/xet to store binary files." (quoted in qdonnars/ohmywind#289, a 1.67 MB mp4).
SPACES_PYTHON = re.compile(r"^3\.\d+(\.\d+)?$")  # the documented rule: 3.x or 3.x.x
MIN_PYTHON = (3, 11)  # this code reads its texts with tomllib (3.11+); gradio 6 and torch 2.13 ask for 3.10
GIT_FILE_LIMIT = 10_000_000  # bytes: "10MB" read as 10^7, the stricter of MB and MiB
LFS_FILE_LIMIT = 500_000_000_000  # bytes: 500 GB
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Binary by name even when the first 8 KB happen to hold no NUL byte (git's own test looks for one in the first 8000).
BINARY_EXTENSIONS = frozenset({
    ".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".npy", ".npz", ".onnx", ".gguf", ".h5",
    ".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico", ".pdf", ".zip", ".gz", ".tgz", ".xz",
    ".bz2", ".zst", ".7z", ".tar", ".whl", ".so", ".dll", ".dylib", ".exe", ".woff", ".woff2", ".ttf", ".otf",
    ".mp3", ".mp4", ".wav", ".ogg", ".webm",
})
BINARY_SNIFF_BYTES = 8192
# Debian's package of the browser rules/png.py looks for first (/usr/bin/chromium); Ubuntu's chromium-browser is a
# snap stub that does not run in a Space's container, so it does not count.
BROWSER_PACKAGES = frozenset({"chromium"})
CJK_FONT_PACKAGES = frozenset({"fonts-wqy-microhei", "fonts-wqy-zenhei", "fonts-noto-cjk", "fonts-noto-cjk-extra",
                               "fonts-arphic-ukai", "fonts-arphic-uming"})

# ZeroGPU. Its hardware flavor is "zero-a10g": huggingface_hub's SpaceHardware.ZERO_A10G
# (src/huggingface_hub/_space_api.py, github.com/huggingface/huggingface_hub; the name outlived the A10Gs, ZeroGPU
# lends H200 slices now). Spaces' CPU flavors all start with "cpu-" (cpu-basic, cpu-upgrade, cpu-xl, ...).
ZEROGPU_HARDWARE = "zero-a10g"
# hub-docs docs/hub/spaces-zerogpu.md, "Supported Versions" (github.com/huggingface/hub-docs at 242f4a1, 2026-08-22;
# https://huggingface.co/docs/hub/spaces-zerogpu): Python "3.12.12" and "3.10.13"; PyTorch "almost all versions
# from 2.8.0 to latest", its full list 2.8.0, 2.9.1, 2.10.0, 2.11.0, to which hub-docs PR #2763 "[ZeroGPU] Update
# PyTorch versions" (merged 2026-09-04) adds 2.12.1 and 2.13.0. The list is the rule checked: a torch it does not name
# (2.12.0, say) fails, naming the list. Add a version here when hub-docs lists it.
ZEROGPU_PYTHON = {"3.10": "3.10.13", "3.12": "3.12.12"}  # major.minor -> the one patch release ZeroGPU runs
ZEROGPU_TORCH_LISTED = frozenset(Version(v) for v in ("2.8.0", "2.9.1", "2.10.0", "2.11.0", "2.12.1", "2.13.0"))
# What the switch of docs/zerogpu.md ("Switching a Space to ZeroGPU") writes; zerogpu_variant() applies it.
ZEROGPU_SWITCH_PYTHON = "3.12"
SPACES_REQUIREMENT = "spaces==0.51.3"  # the version demo/gpu.py's mode was written against and tested with

Changes = Mapping[str, "str | None"]  # repository-relative path -> its text in place of the file's, None: deleted


@dataclass
class Result:
    """One check's outcome: its name, whether it passed, and why (what it found, or what is wrong)."""
    name: str
    ok: bool
    reason: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.reason}"


@dataclass
class FrontMatter:
    """The YAML block at the top of README.md, read as flat keys: a scalar (quotes removed) or a list of scalars.
    `unquoted` names the scalar keys written without quotes (YAML reads an unquoted 3.10 as the number 3.1)."""
    values: dict[str, str | list[str]] = field(default_factory=dict)
    unquoted: set[str] = field(default_factory=set)


def _strip_comment(line: str) -> str:
    """The line without a YAML/requirements comment: a # at the start or after a space, outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'" and (i == 0 or line[:i].rstrip()[-1:] in ("", ":", "-", "[", ",")):
            quote = ch  # a quote only opens where a scalar starts (in "Karpathy's" it is a letter)
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _scalar(text: str) -> tuple[str, bool]:
    """A YAML scalar's text and whether it was quoted."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1], True
    return text, False


def _front_matter_end(lines: list[str], name: str) -> int:
    """The index of the line closing the front matter block; ValueError when there is no such block."""
    if not lines or lines[0].strip() != "---":
        raise ValueError(f"{name} does not start with a '---' front matter block")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        raise ValueError(f"{name}'s front matter block is not closed with '---'")
    return end


def read_front_matter(readme: Path) -> FrontMatter:
    """parse_front_matter of a README file."""
    return parse_front_matter(readme.read_text(encoding="utf-8"), readme.name)


def parse_front_matter(text: str, name: str = "README.md") -> FrontMatter:
    """Parse the front matter Spaces reads (only the subset it uses here: `key: value`, and lists as `- item` lines or
    `[a, b]`). Raises ValueError when the text does not open with a --- block."""
    lines = text.splitlines()
    end = _front_matter_end(lines, name)
    fm, key = FrontMatter(), None
    for raw in lines[1:end]:
        line = _strip_comment(raw)
        if not line.strip():
            continue
        item = re.match(r"^\s*-\s+(.*)$", line)
        if item and key is not None and isinstance(fm.values.get(key), list):
            fm.values[key].append(_scalar(item.group(1))[0])  # type: ignore[union-attr]
            continue
        pair = re.match(r"^([A-Za-z_][\w-]*)\s*:\s*(.*)$", line)
        if not pair:
            continue  # nested maps and the like: nothing checked here needs them
        key, value = pair.group(1), pair.group(2).strip()
        if not value:
            fm.values[key] = []  # a block list (or map) follows
        elif value.startswith("[") and value.endswith("]"):
            fm.values[key] = [_scalar(v)[0] for v in value[1:-1].split(",") if v.strip()]
        else:
            fm.values[key], quoted = _scalar(value)
            if not quoted:
                fm.unquoted.add(key)
    return fm


def parse_requirements(text: str, name: str = "requirements.txt") -> tuple[list[Requirement], list[str]]:
    """A pip requirements file's requirements and its option lines (e.g. '--extra-index-url URL'). Continuation
    lines are joined, comments dropped; a line packaging cannot read raises ValueError naming it."""
    reqs: list[Requirement] = []
    options: list[str] = []
    text = re.sub(r"\\\n", "", text)
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        try:
            reqs.append(Requirement(line))
        except InvalidRequirement as e:
            raise ValueError(f"{name} line {number}: {e}") from None
    return reqs, options


def _canonical(name: str) -> str:
    """A project name as PEP 503 compares them (Gradio, gradio and GRADIO are one project)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _named(reqs: list[Requirement], name: str) -> Requirement | None:
    return next((r for r in reqs if _canonical(r.name) == _canonical(name)), None)


def _pinned_version(req: Requirement) -> str | None:
    """The version of a requirement pinned with == (or ===) and nothing else, else None."""
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return specs[0].version
    return None


def _local_label(req: Requirement) -> str | None:
    """The local label of the version a requirement pins with == ('cpu' for torch==2.13.0+cpu), else None."""
    pinned = _pinned_version(req)
    try:
        return Version(pinned).local if pinned else None
    except InvalidVersion:
        return None


def _git(root: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout


def tracked_files(root: Path) -> list[str]:
    """The files git tracks under `root` (what a deploy sends), as repository-relative POSIX paths."""
    return [p for p in _git(root, "ls-files", "-z").split("\0") if p]


def lfs_tracked(root: Path, paths: list[str]) -> set[str]:
    """Those of `paths` that .gitattributes gives filter=lfs (git-xet uses the same filter), as git itself decides
    (`git check-attr`: the same pattern rules, nesting and precedence git applies when a file is added)."""
    if not paths:
        return set()
    out = _git(root, "check-attr", "-z", "--stdin", "filter", stdin="\0".join(paths) + "\0").split("\0")
    # -z output: path NUL attribute NUL value NUL, for each path
    return {out[i] for i in range(0, len(out) - 2, 3) if out[i + 2] == "lfs"}


def is_binary(path: Path) -> bool:
    """Binary by extension, or by content: a NUL byte in the first 8 KB (text files have none)."""
    if path.suffix.lower() in BINARY_EXTENSIONS:
        return True
    with path.open("rb") as f:
        return b"\0" in f.read(BINARY_SNIFF_BYTES)


def _existing(root: Path, files: list[str], changes: Changes | None = None) -> list[str]:
    """Tracked files present as regular files in the working tree (a tracked symlink or a deleted file is skipped,
    and so is a file `changes` deletes: the deploy would not send it)."""
    gone = {path for path, text in (changes or {}).items() if text is None}
    return [f for f in files if f not in gone and (root / f).is_file() and not (root / f).is_symlink()]


def read_text(root: Path, rel: str, changes: Changes | None = None) -> str | None:
    """The text of the repository file `rel` as the deploy would send it: `changes`' when it names rel (None there:
    deleted), else the file's; None when absent."""
    if changes is not None and rel in changes:
        return changes[rel]
    path = root / rel
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _front_matter(root: Path, changes: Changes | None) -> FrontMatter:
    text = read_text(root, "README.md", changes)
    if text is None:
        raise ValueError("README.md is missing (its front matter configures the Space)")
    return parse_front_matter(text)


def _requirements(root: Path, rel: str, changes: Changes | None) -> tuple[list[Requirement], list[str]] | None:
    """parse_requirements of `rel`, None when it is absent."""
    text = read_text(root, rel, changes)
    return None if text is None else parse_requirements(text, rel)


def _needed_requirements(root: Path, changes: Changes | None) -> tuple[list[Requirement], list[str]]:
    found = _requirements(root, "requirements.txt", changes)
    if found is None:
        raise ValueError("requirements.txt is missing")
    return found


def deploy_profile(hardware: str | None) -> str:
    """'zerogpu', 'cpu' or 'gpu': what a front matter's suggested_hardware asks for (absent: cpu-basic, the default)."""
    hardware = str(hardware or "cpu-basic")
    if hardware == ZEROGPU_HARDWARE:
        return "zerogpu"
    return "cpu" if hardware.startswith("cpu") else "gpu"


def check_front_matter(root: Path, changes: Changes | None = None) -> Result:
    """(1) README.md's front matter against requirements.txt and the Spaces configuration reference."""
    name = "front matter"
    try:
        fm = _front_matter(root, changes)
        reqs, _ = _needed_requirements(root, changes)
    except (OSError, ValueError) as e:
        return Result(name, False, str(e))
    v = fm.values
    problems = []
    if v.get("sdk") != "gradio":
        problems.append(f"sdk is {v.get('sdk')!r}, not 'gradio' (app.py is a Gradio app)")
    gradio = _named(reqs, "gradio")
    pin = _pinned_version(gradio) if gradio else None
    if pin is None:
        problems.append("requirements.txt does not pin gradio with == (the Space and a local install would differ)")
    elif v.get("sdk_version") != pin:
        problems.append(f"sdk_version is {v.get('sdk_version')!r} but requirements.txt pins gradio=={pin} (the "
                        "Space would run another gradio than the tests)")
    py = v.get("python_version")
    if not isinstance(py, str) or not SPACES_PYTHON.match(py):
        problems.append(f"python_version is {py!r}: Spaces takes a Python '3.x' or '3.x.x'")
    elif "python_version" in fm.unquoted:
        problems.append(f"python_version {py} is not quoted: YAML reads it as a number (3.10 becomes 3.1)")
    elif _too_old(py):
        problems.append(f"python_version {py} is older than {'.'.join(map(str, MIN_PYTHON))}, which this app needs "
                        "(tomllib)")
    app = v.get("app_file")
    if not isinstance(app, str) or not app:
        problems.append("app_file is missing")
    else:
        try:
            if app not in tracked_files(root):
                problems.append(f"app_file {app} is not a tracked file (a deploy sends tracked files only)")
        except RuntimeError as e:
            problems.append(str(e))
    if problems:
        return Result(name, False, "; ".join(problems))
    return Result(name, True, f"sdk gradio {pin} = requirements.txt's pin, python_version \"{py}\", app_file {app}")


def check_binaries_under_lfs(root: Path, changes: Changes | None = None) -> Result:
    """(2) Every tracked binary file is matched by an LFS/Xet rule of .gitattributes. (`changes` only edit text files:
    a file they delete is not sent, the rest is read from disk.)"""
    name = "binaries under Xet/LFS"
    try:
        files = _existing(root, tracked_files(root), changes)
        binaries = [f for f in files if is_binary(root / f)]
        covered = lfs_tracked(root, binaries)
    except (OSError, RuntimeError) as e:
        return Result(name, False, str(e))
    missing = [f for f in binaries if f not in covered]
    if missing:
        return Result(name, False, f"{len(missing)} binary file(s) no .gitattributes rule gives filter=lfs (the Hub "
                                   f"refuses them as plain git blobs): {', '.join(missing)}")
    return Result(name, True, f"{len(binaries)} binary file(s), each matched by a filter=lfs rule")


def _size(n: int) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e9 else f"{n / 1e6:.3g} MB" if n >= 1e6 else f"{n} bytes"


def check_file_sizes(root: Path, changes: Changes | None = None, git_limit: int = GIT_FILE_LIMIT,
                     lfs_limit: int = LFS_FILE_LIMIT) -> Result:
    """(3) No tracked file over the Hub's limits: `git_limit` bytes for a plain git blob (a file no filter=lfs rule
    matches), `lfs_limit` bytes for a file in Xet/LFS. (A file `changes` deletes is not sent; their edits are a few
    bytes of text files, so the sizes on disk stand for them.)"""
    name = "file sizes"
    try:
        files = _existing(root, tracked_files(root), changes)
        sizes = {f: (root / f).stat().st_size for f in files}
        in_lfs = lfs_tracked(root, files)
    except (OSError, RuntimeError) as e:
        return Result(name, False, str(e))
    too_big = [f"{f} ({_size(s)}, over {_size(lfs_limit)} even in Xet/LFS)" for f, s in sizes.items()
               if s > lfs_limit]
    too_big += [f"{f} ({_size(s)}, over {_size(git_limit)} and no filter=lfs rule matches it)"
                for f, s in sizes.items() if git_limit < s <= lfs_limit and f not in in_lfs]
    if too_big:
        return Result(name, False, "the Hub would refuse " + "; ".join(too_big))
    largest = max(sizes.items(), key=lambda kv: kv[1], default=("none", 0))
    return Result(name, True, f"{len(sizes)} files, the largest {largest[0]} ({_size(largest[1])}); limits "
                              f"{_size(git_limit)} as plain git, {_size(lfs_limit)} in Xet/LFS")


def _index_urls(options: list[str]) -> list[str]:
    """The index URLs named by pip options (-i, --index-url, --extra-index-url; with '=' or a space)."""
    urls = []
    for opt in options:
        m = re.match(r"^(?:-i|--index-url|--extra-index-url)(?:\s*=\s*|\s+)(\S+)$", opt)
        if m:
            urls.append(m.group(1).rstrip("/"))
    return urls


def check_cpu_torch(root: Path, changes: Changes | None = None) -> Result:
    """(4) On CPU hardware the Space installs PyTorch's CPU build: pre-requirements.txt (installed first) pins
    torch==X+cpu from PyTorch's CPU index, and X+cpu satisfies requirements.txt's torch specifier, so pip keeps it
    when it installs requirements.txt. On GPU hardware it must not pin the CPU build."""
    name = "CPU torch"
    try:
        hardware = _front_matter(root, changes).values.get("suggested_hardware") or "cpu-basic"
        reqs, _ = _needed_requirements(root, changes)
        pre_file = _requirements(root, "pre-requirements.txt", changes)
    except (OSError, ValueError) as e:
        return Result(name, False, str(e))
    torch = _named(reqs, "torch")
    if torch is None:
        return Result(name, False, "requirements.txt does not name torch")
    gpu = deploy_profile(hardware) != "cpu"  # ZeroGPU included: a GPU in every call, and the CUDA build's torch
    if pre_file is None:
        if gpu:
            return Result(name, True, f"{hardware}: torch from requirements.txt ({torch.specifier}), the CUDA build")
        return Result(name, False, f"no pre-requirements.txt: the {hardware} Space would install torch"
                                   f"{torch.specifier} from PyPI, the CUDA build (GBs of NVIDIA wheels it cannot use)")
    pre, options = pre_file
    pre_torch = _named(pre, "torch")
    pinned = _pinned_version(pre_torch) if pre_torch else None
    try:
        version = Version(pinned) if pinned else None
    except InvalidVersion:
        version = None
    if gpu:
        if version is not None and version.local == "cpu":
            return Result(name, False, f"suggested_hardware {hardware} is a GPU but pre-requirements.txt pins {version}")
        return Result(name, True, f"{hardware}: no CPU-only torch pinned")
    if version is None or version.local != "cpu":
        return Result(name, False, f"pre-requirements.txt must pin torch==X+cpu (PyTorch's CPU build), found "
                                   f"{str(pre_torch) if pre_torch else 'no torch'}")
    if PYTORCH_CPU_INDEX not in _index_urls(options):
        return Result(name, False, f"pre-requirements.txt pins {version} but does not add PyTorch's CPU index "
                                   f"({PYTORCH_CPU_INDEX}), the only index that has +cpu builds")
    if not torch.specifier.contains(version, prereleases=True):
        return Result(name, False, f"requirements.txt's torch{torch.specifier} does not accept {version}: pip would "
                                   "replace the CPU build with PyPI's CUDA one")
    return Result(name, True, f"pre-requirements.txt installs torch {version} from {PYTORCH_CPU_INDEX}; "
                              f"requirements.txt's torch{torch.specifier} accepts it")


def check_apt_packages(root: Path, changes: Changes | None = None) -> Result:
    """(5) With PNG export on (kaleido in requirements.txt), packages.txt lists chromium and a CJK font."""
    name = "packages.txt"
    try:
        reqs, _ = _needed_requirements(root, changes)
        packages_text = read_text(root, "packages.txt", changes)
    except (OSError, ValueError) as e:
        return Result(name, False, str(e))
    if _named(reqs, "kaleido") is None:
        return Result(name, True, "PNG export is off (no kaleido in requirements.txt): no browser needed")
    if packages_text is None:
        return Result(name, False, "missing: kaleido draws PNGs in a Chromium it does not ship, and Chinese labels "
                                   f"need a CJK font (e.g. {' '.join(sorted(BROWSER_PACKAGES))} fonts-wqy-microhei)")
    packages = {p for line in packages_text.splitlines() for p in _strip_comment(line).split()}
    problems = []
    if not packages & BROWSER_PACKAGES:
        problems.append("no chromium (kaleido needs a browser for the PNG export)")
    if not packages & CJK_FONT_PACKAGES:
        problems.append(f"no CJK font (one of {', '.join(sorted(CJK_FONT_PACKAGES))}) for Chinese labels")
    if problems:
        return Result(name, False, "; ".join(problems))
    return Result(name, True, f"apt installs {', '.join(sorted(packages))}")


def _too_old(py: str) -> bool:
    """Whether a python_version ('3.x' or '3.x.x') is older than MIN_PYTHON."""
    return tuple(int(p) for p in py.split(".")[:2]) < MIN_PYTHON


def _zerogpu_python(py: object) -> str | None:
    """What is wrong with a python_version for ZeroGPU, or None: it must name 3.12 (ZeroGPU's other, 3.10, has no
    tomllib), and with a patch number the one release ZeroGPU runs of it."""
    if not isinstance(py, str) or not SPACES_PYTHON.match(py):
        return f"python_version is {py!r}"
    minor = ".".join(py.split(".")[:2])
    if _too_old(py):
        return (f"python_version {py}: this app needs Python {'.'.join(map(str, MIN_PYTHON))} or newer (tomllib), "
                f"and ZeroGPU runs {ZEROGPU_PYTHON[minor] if minor in ZEROGPU_PYTHON else 'other versions'} "
                f"(use \"{ZEROGPU_SWITCH_PYTHON}\")")
    if minor not in ZEROGPU_PYTHON or (py.count(".") == 2 and py != ZEROGPU_PYTHON[minor]):
        return (f"python_version {py}: ZeroGPU runs Python {' or '.join(sorted(ZEROGPU_PYTHON.values()))} only "
                f"(use \"{ZEROGPU_SWITCH_PYTHON}\")")
    return None


def check_zerogpu(root: Path, changes: Changes | None = None) -> Result:
    """(6) On ZeroGPU hardware (suggested_hardware zero-a10g) the Space is what ZeroGPU can run: python_version 3.12
    (ZeroGPU's 3.10 has no tomllib); no pre-requirements.txt installing torch's CPU build; requirements.txt pinning torch==X, X a version
    ZeroGPU supports, without a local label (PyPI's CUDA build); `spaces` in requirements.txt (demo/gpu.py: the app
    stops at start on ZeroGPU without it). Other hardware passes: nothing here applies to it."""
    name = "ZeroGPU"
    try:
        fm = _front_matter(root, changes)
        reqs, _ = _needed_requirements(root, changes)
        pre_file = _requirements(root, "pre-requirements.txt", changes)
    except (OSError, ValueError) as e:
        return Result(name, False, str(e))
    hardware = fm.values.get("suggested_hardware") or "cpu-basic"
    if deploy_profile(hardware) != "zerogpu":
        return Result(name, True, f"suggested_hardware {hardware}: not ZeroGPU ({ZEROGPU_HARDWARE}); --zerogpu checks "
                                  "the switch docs/zerogpu.md describes")
    problems = []
    py = fm.values.get("python_version")
    if (wrong := _zerogpu_python(py)) is not None:
        problems.append(wrong)
    if pre_file is not None:
        pre, options = pre_file
        pre_torch = _named(pre, "torch")
        # Either is the CPU build: a +cpu pin, or any torch taken from PyTorch's CPU index
        if pre_torch is not None and (_local_label(pre_torch) == "cpu" or PYTORCH_CPU_INDEX in _index_urls(options)):
            problems.append(f"pre-requirements.txt installs torch's CPU build ({pre_torch}): ZeroGPU needs PyPI's CUDA "
                            "build (delete pre-requirements.txt)")
    torch = _named(reqs, "torch")
    pinned = _pinned_version(torch) if torch else None
    listed = ", ".join(map(str, sorted(ZEROGPU_TORCH_LISTED)))
    try:
        version = Version(pinned) if pinned else None
    except InvalidVersion:
        version = None
    if version is None:
        problems.append(f"requirements.txt must pin torch==X, a version ZeroGPU lists ({listed}); found "
                        f"{torch or 'no torch'}")
    elif version.local is not None:
        problems.append(f"requirements.txt pins torch {version}: ZeroGPU installs PyPI's CUDA build, which has no "
                        "local label")
    elif version not in ZEROGPU_TORCH_LISTED:
        problems.append(f"requirements.txt pins torch {version}, which ZeroGPU does not list (hub-docs "
                        f"spaces-zerogpu.md: {listed})")
    spaces = _named(reqs, "spaces")
    if spaces is None:
        problems.append("requirements.txt does not list spaces: on ZeroGPU the app stops at start without it "
                        "(demo/gpu.py)")
    if problems:
        return Result(name, False, "; ".join(problems))
    return Result(name, True, f"{hardware}: python_version \"{py}\", torch {version} from PyPI (on ZeroGPU's list), "
                              f"{spaces}")


CHECKS = (check_front_matter, check_binaries_under_lfs, check_file_sizes, check_cpu_torch, check_apt_packages,
          check_zerogpu)


def run_checks(root: Path, changes: Changes | None = None) -> list[Result]:
    """Every check, in order, on the repository at `root` with `changes` in place of its files."""
    return [check(root, changes) for check in CHECKS]


def _set_front_matter_key(text: str, key: str, value: str) -> str:
    """The README text with `key: value` in its front matter, in place of the key's line or added at its end (a line
    that already says so, its comment included, stays as it is)."""
    lines = text.splitlines(keepends=True)
    end = _front_matter_end([line.rstrip("\r\n") for line in lines], "README.md")
    line = f"{key}: {value}\n"
    for i in range(1, end):
        if re.match(rf"^{re.escape(key)}\s*:", lines[i]):
            said = _scalar(_strip_comment(lines[i]).split(":", 1)[1])[0]
            if said != _scalar(value)[0]:
                lines[i] = line
            break
    else:
        lines.insert(end, line)
    return "".join(lines)


def zerogpu_variant(root: Path) -> dict[str, str | None]:
    """The files the switch to ZeroGPU changes, {path: new text, or None: deleted}: the steps of docs/zerogpu.md,
    "Switching a Space to ZeroGPU", which names this function. Those steps:

    - README.md's front matter: suggested_hardware zero-a10g, python_version "3.12";
    - pre-requirements.txt deleted (it installs torch's CPU build; requirements.txt's torch==2.13.0 then comes from
      PyPI, the CUDA build);
    - requirements.txt gets spaces==0.51.3.

    Only files that would change are named, so a repository already switched gives {}. Nothing is written: pass the
    result to run_checks (or any check) as `changes`. Raises ValueError when README.md has no front matter."""
    changes: dict[str, str | None] = {}
    readme = read_text(root, "README.md")
    if readme is None:
        raise ValueError("README.md is missing (its front matter configures the Space)")
    switched = _set_front_matter_key(readme, "suggested_hardware", ZEROGPU_HARDWARE)
    switched = _set_front_matter_key(switched, "python_version", f'"{ZEROGPU_SWITCH_PYTHON}"')
    if switched != readme:
        changes["README.md"] = switched
    if read_text(root, "pre-requirements.txt") is not None:
        changes["pre-requirements.txt"] = None
    requirements = read_text(root, "requirements.txt")
    if requirements is not None and _named(parse_requirements(requirements)[0], "spaces") is None:
        sep = "" if not requirements or requirements.endswith("\n") else "\n"
        changes["requirements.txt"] = f"{requirements}{sep}{SPACES_REQUIREMENT}  # ZeroGPU (docs/zerogpu.md)\n"
    return changes


def cpu_pre_requirements(torch_version: str) -> str:
    """The pre-requirements.txt of a CPU Space: PyTorch's CPU build of `torch_version`, from PyTorch's CPU index."""
    return ("# A CPU Space: PyTorch's CPU build, installed before requirements.txt (PyPI's torch is the CUDA build, GBs\n"
            "# of NVIDIA wheels a CPU cannot use); requirements.txt's torch pin accepts it (PEP 440 ignores +cpu).\n"
            f"--extra-index-url {PYTORCH_CPU_INDEX}\ntorch=={torch_version}+cpu\n")


def cpu_variant(root: Path) -> dict[str, str | None]:
    """The files the paid alternative, CPU hardware (README: "CPU hardware instead"), changes, {path: new text}:
    README.md's suggested_hardware cpu-basic, and a pre-requirements.txt installing PyTorch's CPU build of
    requirements.txt's torch pin (cpu_pre_requirements). Only files that would change; nothing is written. Raises
    ValueError when README.md has no front matter or requirements.txt pins no torch."""
    changes: dict[str, str | None] = {}
    readme = read_text(root, "README.md")
    if readme is None:
        raise ValueError("README.md is missing (its front matter configures the Space)")
    switched = _set_front_matter_key(readme, "suggested_hardware", "cpu-basic")
    if switched != readme:
        changes["README.md"] = switched
    torch = _named(parse_requirements(read_text(root, "requirements.txt") or "")[0], "torch")
    pinned = _pinned_version(torch) if torch else None
    if pinned is None:
        raise ValueError("requirements.txt pins no torch==X for the CPU build to match")
    pre = cpu_pre_requirements(pinned)
    if read_text(root, "pre-requirements.txt") != pre:
        changes["pre-requirements.txt"] = pre
    return changes


def _describe(changes: Changes, existing: set[str]) -> str:
    return ", ".join(f"{path} deleted" if text is None else f"{path} edited" if path in existing else f"{path} written"
                     for path, text in changes.items())


def main(argv: list[str] | None = None) -> int:
    """Print each check's line; 0 when all pass, 1 otherwise. With --zerogpu, first a line saying what the switch
    changes, then the checks on the repository as switched."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="the repository root")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--zerogpu", action="store_true",
                       help="check the repository as a ZeroGPU Space (docs/zerogpu.md's switch, where it is not one "
                            "already; no file is edited)")
    which.add_argument("--cpu", action="store_true",
                       help="check the repository as the README's paid alternative, a CPU Space, leaves it (no file "
                            "is edited)")
    args = p.parse_args(argv)
    changes: dict[str, str | None] | None = None
    if args.zerogpu or args.cpu:
        what, variant = ("ZeroGPU", zerogpu_variant) if args.zerogpu else ("CPU hardware", cpu_variant)
        try:
            changes = variant(args.root)
        except (OSError, ValueError) as e:
            print(f"FAIL {what} switch: {e}")
            return 1
        print(f"as switched to {what} (README, docs/zerogpu.md): {_describe(changes, set(tracked_files(args.root))) or 'nothing to change'}")
    results = run_checks(args.root, changes)
    for r in results:
        print(r.line())
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
