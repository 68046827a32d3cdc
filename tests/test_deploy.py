"""Issue 15, "host it anywhere": scripts/check_deploy.py passes on this repository (so CI holds the Spaces deploy to
the README's steps), and each of its checks fails, for the right reason, on a small repository that breaks it."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_deploy", ROOT / "scripts" / "check_deploy.py")
cd = importlib.util.module_from_spec(_spec)
sys.modules["check_deploy"] = cd  # dataclasses look their module up there
_spec.loader.exec_module(cd)

FRONT_MATTER = """---
title: Tiny
sdk: gradio
sdk_version: 6.31.0  # the gradio pin
app_file: app.py
python_version: "3.11"
suggested_hardware: cpu-basic
tags:
  - nanochat
models: [karpathy/nanochat-d32]
---

# Tiny
"""
FILES = {
    "README.md": FRONT_MATTER,
    "app.py": "print('hello')\n",
    "requirements.txt": "torch==2.13.0  # CPU wheel where there is one\ngradio==6.31.0\nkaleido==1.5.0\n",
    "pre-requirements.txt": "--extra-index-url https://download.pytorch.org/whl/cpu\ntorch==2.13.0+cpu\n",
    "packages.txt": "chromium\nfonts-wqy-microhei\n",
    ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "notes.txt": "plain text, no NUL byte\n" * 10,
}
WEIGHTS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}" + bytes(range(256)) * 4  # a NUL in its first bytes, as safetensors


def make_repo(root: Path, changes: dict[str, str | bytes | None] | None = None) -> Path:
    """A git repository (files added, nothing committed: ls-files reads the index) that passes every check, with
    `changes` applied: {path: content} writes a file, {path: None} leaves it out."""
    files: dict[str, str | bytes | None] = {**FILES, "model.safetensors": WEIGHTS, **(changes or {})}
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for rel, content in files.items():
        if content is None:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    return root


def test_this_repository_passes_every_check():
    """The command CI runs through this test: every line OK, exit code 0, one line per check."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_deploy.py")], capture_output=True,
                          text=True, cwd=ROOT, check=False)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(lines) == len(cd.CHECKS) and all(line.startswith("OK ") for line in lines), done.stdout


def test_this_repository_results():
    """The same, through the functions, with what each found: the shards and PNGs are binaries under LFS rules."""
    results = {r.name: r for r in cd.run_checks(ROOT)}
    assert all(r.ok for r in results.values()), [r.line() for r in results.values() if not r.ok]
    binaries = [f for f in cd.tracked_files(ROOT) if cd.is_binary(ROOT / f)]
    assert "gpt/default/model-00001-of-00004.safetensors" in binaries and "gpt/default/curves.png" in binaries
    assert "README.md" not in binaries and "gpt/default/tokenizer.tiktoken" not in binaries
    assert cd.lfs_tracked(ROOT, binaries) == set(binaries)


def test_the_small_repository_passes(tmp_path):
    """The baseline the failing cases below change one thing of."""
    results = cd.run_checks(make_repo(tmp_path))
    assert all(r.ok for r in results), [r.line() for r in results]
    assert cd.main(["--root", str(tmp_path)]) == 0


def test_front_matter_parsing(tmp_path):
    (tmp_path / "README.md").write_text(FRONT_MATTER, encoding="utf-8")
    fm = cd.read_front_matter(tmp_path / "README.md")
    assert fm.values["sdk_version"] == "6.31.0" and fm.values["python_version"] == "3.11"
    assert fm.values["tags"] == ["nanochat"] and fm.values["models"] == ["karpathy/nanochat-d32"]
    assert "python_version" not in fm.unquoted and "sdk_version" in fm.unquoted


def test_this_readme_front_matter_names_tags_and_models():
    fm = cd.read_front_matter(ROOT / "README.md")
    assert {"nanochat", "interpretability", "education", "visualization", "gradio"} <= set(fm.values["tags"])
    assert fm.values["models"] == ["karpathy/nanochat-d32"]  # the Hub repo the README's "Open a model" names


@pytest.mark.parametrize("old, new, why", [
    ("sdk_version: 6.31.0", "sdk_version: 6.30.0", "requirements.txt pins gradio==6.31.0"),
    ("sdk: gradio", "sdk: streamlit", "not 'gradio'"),
    ('python_version: "3.11"', "python_version: 3.10", "not quoted"),
    ('python_version: "3.11"', 'python_version: "3.9"', "older than 3.11"),
    ('python_version: "3.11"', 'python_version: "3.10"', "older than 3.11"),
    ('python_version: "3.11"', 'python_version: "python3"', "Spaces takes a Python '3.x' or '3.x.x'"),
    ("app_file: app.py", "app_file: main.py", "main.py is not a tracked file"),
])
def test_front_matter_fails(tmp_path, old, new, why):
    root = make_repo(tmp_path, {"README.md": FRONT_MATTER.replace(old, new)})
    result = cd.check_front_matter(root)
    assert not result.ok and why in result.reason, result.line()


def test_front_matter_fails_without_a_gradio_pin(tmp_path):
    root = make_repo(tmp_path, {"requirements.txt": "torch==2.13.0\ngradio>=6\n"})
    result = cd.check_front_matter(root)
    assert not result.ok and "does not pin gradio" in result.reason


def test_a_binary_without_an_lfs_rule_fails(tmp_path):
    root = make_repo(tmp_path, {"data/blob.dat": b"\x00\x01\x02 not text"})
    result = cd.check_binaries_under_lfs(root)
    assert not result.ok and "data/blob.dat" in result.reason and "model.safetensors" not in result.reason


def test_binaries_fail_without_gitattributes(tmp_path):
    root = make_repo(tmp_path, {".gitattributes": None, "docs/shot.png": b"\x89PNG\r\n\x1a\n"})
    result = cd.check_binaries_under_lfs(root)
    assert not result.ok and "model.safetensors" in result.reason and "docs/shot.png" in result.reason
    assert "notes.txt" not in result.reason


def test_a_binary_by_extension_and_a_nested_rule(tmp_path):
    """A .png with no NUL byte in it is still binary (by name); a rule in a subfolder's .gitattributes covers it."""
    root = make_repo(tmp_path, {"docs/shot.png": b"no nul here"})
    assert not cd.check_binaries_under_lfs(root).ok
    (root / "docs" / ".gitattributes").write_text("*.png filter=lfs diff=lfs merge=lfs -text\n", encoding="utf-8")
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    assert cd.check_binaries_under_lfs(root).ok


def test_untracked_binaries_do_not_count(tmp_path):
    root = make_repo(tmp_path)
    (root / "scratch.bin").write_bytes(b"\x00" * 10)  # not added: a deploy of the tracked files does not send it
    assert cd.check_binaries_under_lfs(root).ok


def test_a_file_over_the_git_limit_fails(tmp_path):
    root = make_repo(tmp_path, {"big.txt": "x" * 2000})
    result = cd.check_file_sizes(root, git_limit=1000)
    assert not result.ok and "big.txt (2000 bytes, over 1000 bytes and no filter=lfs rule" in result.reason
    assert cd.check_file_sizes(root, git_limit=5000).ok


def test_a_file_over_the_lfs_limit_fails(tmp_path):
    """The shard (1034 bytes) is under an LFS rule: past the git limit it is fine, past the LFS limit it is not."""
    root = make_repo(tmp_path)
    assert cd.check_file_sizes(root, git_limit=500, lfs_limit=5000).ok
    result = cd.check_file_sizes(root, git_limit=500, lfs_limit=1000)
    assert not result.ok and "model.safetensors" in result.reason and "even in Xet/LFS" in result.reason


@pytest.mark.parametrize("pre, why", [
    (None, "no pre-requirements.txt"),
    ("torch==2.13.0\n", "must pin torch==X+cpu"),
    ("--extra-index-url https://download.pytorch.org/whl/cu128\ntorch==2.13.0+cu128\n", "must pin torch==X+cpu"),
    ("torch==2.13.0+cpu\n", "does not add PyTorch's CPU index"),
    ("--index-url https://download.pytorch.org/whl/cpu\ntorch==2.12.0+cpu\n", "does not accept 2.12.0+cpu"),
    ("--extra-index-url https://download.pytorch.org/whl/cpu\ntorch>=2.13\n", "must pin torch==X+cpu"),
])
def test_a_gpu_or_mismatched_torch_fails(tmp_path, pre, why):
    result = cd.check_cpu_torch(make_repo(tmp_path, {"pre-requirements.txt": pre}))
    assert not result.ok and why in result.reason, result.line()


def test_requirements_pinning_a_cuda_build_fails(tmp_path):
    root = make_repo(tmp_path, {"requirements.txt": "torch==2.13.0+cu128\ngradio==6.31.0\n"})
    result = cd.check_cpu_torch(root)
    assert not result.ok and "does not accept 2.13.0+cpu" in result.reason


def test_pep440_a_plain_pin_accepts_the_cpu_build():
    """Why requirements.txt keeps torch==2.13.0: a specifier without a local label ignores the candidate's."""
    from packaging.specifiers import SpecifierSet
    assert "2.13.0+cpu" in SpecifierSet("==2.13.0")
    assert "2.13.0" not in SpecifierSet("==2.13.0+cpu") and "2.13.0+cu128" not in SpecifierSet("==2.13.0+cpu")


def test_gpu_hardware_must_not_pin_the_cpu_build(tmp_path):
    root = make_repo(tmp_path, {"README.md": FRONT_MATTER.replace("cpu-basic", "a10g-small")})
    result = cd.check_cpu_torch(root)
    assert not result.ok and "is a GPU" in result.reason
    (root / "pre-requirements.txt").unlink()
    assert cd.check_cpu_torch(root).ok


def test_missing_packages_txt_fails(tmp_path):
    result = cd.check_apt_packages(make_repo(tmp_path, {"packages.txt": None}))
    assert not result.ok and result.reason.startswith("missing")


@pytest.mark.parametrize("packages, why", [
    ("chromium\n", "no CJK font"),
    ("fonts-wqy-microhei\n", "no chromium"),
    ("chromium-browser  # Ubuntu's snap stub\nfonts-noto-cjk\n", "no chromium"),
])
def test_packages_txt_without_browser_or_font_fails(tmp_path, packages, why):
    result = cd.check_apt_packages(make_repo(tmp_path, {"packages.txt": packages}))
    assert not result.ok and why in result.reason, result.line()


def test_no_kaleido_needs_no_packages(tmp_path):
    root = make_repo(tmp_path, {"packages.txt": None, "requirements.txt": "torch==2.13.0\ngradio==6.31.0\n"})
    result = cd.check_apt_packages(root)
    assert result.ok and "PNG export is off" in result.reason


def test_the_command_fails_with_exit_code_1(tmp_path):
    root = make_repo(tmp_path, {"packages.txt": None})
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_deploy.py"), "--root", str(root)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["OK", "OK", "OK", "OK", "FAIL", "OK"]


def test_front_matter_reads_as_yaml_does():
    """The small reader agrees with a YAML parser (PyYAML comes with gradio) on this README's front matter."""
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert cd.read_front_matter(ROOT / "README.md").values == yaml.safe_load(text.split("---\n")[1])


# ZeroGPU (docs/zerogpu.md): the profile suggested_hardware zero-a10g selects, and the switch zerogpu_variant() applies.
ZEROGPU_FRONT_MATTER = FRONT_MATTER.replace('"3.11"', '"3.12"').replace("cpu-basic", "zero-a10g")
ZEROGPU = {
    "README.md": ZEROGPU_FRONT_MATTER,
    "pre-requirements.txt": None,
    "requirements.txt": FILES["requirements.txt"] + "spaces==0.51.3\n",
}


@pytest.mark.parametrize("hardware, profile", [
    ("zero-a10g", "zerogpu"), ("cpu-basic", "cpu"), ("cpu-upgrade", "cpu"), (None, "cpu"), ("a10g-small", "gpu"),
    ("h200", "gpu"),
])
def test_deploy_profile(hardware, profile):
    assert cd.deploy_profile(hardware) == profile


def test_zerogpu_hardware_is_huggingface_hubs_name():
    """The flavor string is huggingface_hub's SpaceHardware.ZERO_A10G (gradio installs huggingface_hub)."""
    hub = pytest.importorskip("huggingface_hub")
    assert hub.SpaceHardware.ZERO_A10G == cd.ZEROGPU_HARDWARE == "zero-a10g"


def test_this_repository_is_a_zerogpu_space_as_it_is():
    """The README leads with ZeroGPU (issue 23): the switch has nothing left to do, and check 6 holds the repository to
    ZeroGPU's Python and its torch list."""
    assert cd.zerogpu_variant(ROOT) == {}
    fm = cd.read_front_matter(ROOT / "README.md")
    assert fm.values["suggested_hardware"] == cd.ZEROGPU_HARDWARE and fm.values["python_version"] == "3.12"
    assert not (ROOT / "pre-requirements.txt").exists()
    zerogpu = cd.check_zerogpu(ROOT)
    assert zerogpu.reason == ('zero-a10g: python_version "3.12", torch 2.13.0 from PyPI (on ZeroGPU\'s list), '
                              'spaces==0.51.3')


def test_the_cpu_alternative_of_this_repository_passes(tmp_path):
    """The paid alternative, computed for this repository: only suggested_hardware changes in the README, a
    pre-requirements.txt installs the CPU build of requirements.txt's torch; every check passes; nothing on disk
    changes."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    changes = cd.cpu_variant(ROOT)
    assert set(changes) == {"README.md", "pre-requirements.txt"}
    assert changes["pre-requirements.txt"].splitlines()[-2:] == ["--extra-index-url https://download.pytorch.org/whl/cpu",
                                                                 "torch==2.13.0+cpu"]
    fm = cd.parse_front_matter(changes["README.md"])
    assert fm.values["suggested_hardware"] == "cpu-basic"
    assert {k: v for k, v in fm.values.items() if k != "suggested_hardware"} == {
        k: v for k, v in cd.read_front_matter(ROOT / "README.md").values.items() if k != "suggested_hardware"}
    results = cd.run_checks(ROOT, changes)
    assert all(r.ok for r in results), [r.line() for r in results if not r.ok]
    assert cd.check_cpu_torch(ROOT, changes).reason.startswith("pre-requirements.txt installs torch 2.13.0+cpu")
    assert (ROOT / "README.md").read_text(encoding="utf-8") == readme and not (ROOT / "pre-requirements.txt").exists()


@pytest.mark.parametrize("flag, first", [
    ("--zerogpu", "as switched to ZeroGPU (README, docs/zerogpu.md): nothing to change"),
    ("--cpu", "as switched to CPU hardware (README, docs/zerogpu.md): README.md edited, pre-requirements.txt written"),
])
def test_the_zerogpu_and_cpu_commands(flag, first):
    """What CI runs: the flag says what the switch changes, then one OK line per check; exit code 0."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_deploy.py"), flag],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    line, *lines = done.stdout.splitlines()
    assert line == first
    assert len(lines) == len(cd.CHECKS) and all(line.startswith("OK ") for line in lines), done.stdout


def test_a_copy_pinning_a_torch_zerogpu_does_not_list_fails_naming_it(tmp_path):
    """A copy of this repository's Space files with torch==2.12.0 (between two listed versions): --zerogpu exits 1,
    its ZeroGPU line naming the pin and the documented list."""
    files = {name: (ROOT / name).read_text(encoding="utf-8") for name in
             ("README.md", "requirements.txt", "packages.txt", "app.py", ".gitattributes")}
    assert "torch==2.13.0\n" in files["requirements.txt"]
    files["requirements.txt"] = files["requirements.txt"].replace("torch==2.13.0\n", "torch==2.12.0\n")
    root = make_repo(tmp_path, {**{name: None for name in FILES}, "model.safetensors": None, **files})
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_deploy.py"), "--root", str(root), "--zerogpu"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stdout
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == ["FAIL ZeroGPU: requirements.txt pins torch 2.12.0, which ZeroGPU does not list (hub-docs "
                      "spaces-zerogpu.md: 2.8.0, 2.9.1, 2.10.0, 2.11.0, 2.12.1, 2.13.0)"]


def test_the_switch_of_the_small_repository(tmp_path):
    """zerogpu_variant on the small CPU repository gives the ZeroGPU files above; applied, it has nothing left to do."""
    root = make_repo(tmp_path)
    changes = cd.zerogpu_variant(root)
    assert changes == {"README.md": ZEROGPU_FRONT_MATTER, "pre-requirements.txt": None,
                       "requirements.txt": FILES["requirements.txt"] + "spaces==0.51.3  # ZeroGPU (docs/zerogpu.md)\n"}
    assert all(r.ok for r in cd.run_checks(root, changes))
    assert cd.main(["--root", str(root), "--zerogpu"]) == 0
    assert cd.zerogpu_variant(make_repo(tmp_path / "switched", ZEROGPU)) == {}


def test_the_switch_adds_a_missing_hardware_key(tmp_path):
    root = make_repo(tmp_path, {"README.md": FRONT_MATTER.replace("suggested_hardware: cpu-basic\n", ""),
                                "requirements.txt": "torch==2.13.0\ngradio==6.31.0"})  # no newline at the end
    changes = cd.zerogpu_variant(root)
    assert cd.parse_front_matter(changes["README.md"]).values["suggested_hardware"] == "zero-a10g"
    assert changes["requirements.txt"].splitlines()[-1].startswith("spaces==0.51.3")
    assert cd.check_zerogpu(root, changes).ok


def test_a_cpu_space_passes_the_zerogpu_check(tmp_path):
    """Off ZeroGPU check 6 has nothing to hold the Space to (and a `spaces` there changes nothing)."""
    result = cd.check_zerogpu(make_repo(tmp_path))
    assert result.ok and result.reason.startswith("suggested_hardware cpu-basic: not ZeroGPU")


def test_a_switched_small_repository_passes(tmp_path):
    results = cd.run_checks(make_repo(tmp_path, ZEROGPU))
    assert all(r.ok for r in results), [r.line() for r in results]


@pytest.mark.parametrize("changes, why", [
    ({"README.md": ZEROGPU_FRONT_MATTER.replace('"3.12"', '"3.11"')},
     "python_version 3.11: ZeroGPU runs Python 3.10.13 or 3.12.12 only"),
    ({"README.md": ZEROGPU_FRONT_MATTER.replace('"3.12"', '"3.12.3"')}, "python_version 3.12.3: ZeroGPU runs"),
    ({"README.md": ZEROGPU_FRONT_MATTER.replace('"3.12"', '"3.10"')},
     "python_version 3.10: this app needs Python 3.11 or newer (tomllib)"),
    ({"pre-requirements.txt": FILES["pre-requirements.txt"]},
     "pre-requirements.txt installs torch's CPU build (torch==2.13.0+cpu)"),
    ({"pre-requirements.txt": "--index-url https://download.pytorch.org/whl/cpu\ntorch\n"},
     "pre-requirements.txt installs torch's CPU build (torch)"),
    ({"requirements.txt": FILES["requirements.txt"]}, "requirements.txt does not list spaces"),
    ({"requirements.txt": ZEROGPU["requirements.txt"].replace("torch==2.13.0", "torch==2.7.1")},
     "requirements.txt pins torch 2.7.1, which ZeroGPU does not list"),
    ({"requirements.txt": ZEROGPU["requirements.txt"].replace("torch==2.13.0", "torch==2.14.0")},
     "pins torch 2.14.0, which ZeroGPU does not list"),
    ({"requirements.txt": ZEROGPU["requirements.txt"].replace("torch==2.13.0", "torch>=2.8")},
     "requirements.txt must pin torch==X"),
    ({"requirements.txt": ZEROGPU["requirements.txt"].replace("torch==2.13.0", "torch==2.13.0+cu128")},
     "pins torch 2.13.0+cu128: ZeroGPU installs PyPI's CUDA build"),
])
def test_the_zerogpu_profile_fails(tmp_path, changes, why):
    """The switched small repository with one thing undone or wrong: check 6 fails, saying which."""
    root = make_repo(tmp_path, {**ZEROGPU, **changes})
    result = cd.check_zerogpu(root)
    assert not result.ok and why in result.reason, result.line()


def test_the_zerogpu_profile_fails_as_changes_too(tmp_path):
    """The same failures through `changes` (what --zerogpu passes) as through files on disk."""
    root = make_repo(tmp_path)
    changes = {**cd.zerogpu_variant(root), "requirements.txt": "torch==2.7.1\ngradio==6.31.0\n"}
    result = cd.check_zerogpu(root, changes)
    assert not result.ok and "pins torch 2.7.1, which ZeroGPU" in result.reason and "does not list spaces" in result.reason


def test_each_listed_torch_passes_and_its_neighbours_fail(tmp_path):
    """The list is the rule: every version hub-docs lists passes, the patch releases between them do not."""
    for version, ok in (("2.8.0", True), ("2.9.1", True), ("2.12.1", True), ("2.9.0", False), ("2.12.0", False)):
        changes = {"requirements.txt": ZEROGPU["requirements.txt"].replace("torch==2.13.0", f"torch=={version}")}
        assert cd.check_zerogpu(make_repo(tmp_path / version, ZEROGPU), changes).ok is ok, version


def test_docs_state_what_the_checks_hold():
    """docs/zerogpu.md and the README state the ZeroGPU Space this repository is, the switch zerogpu_variant applies
    to another, the CPU alternative, the commands and the documented versions."""
    doc = (ROOT / "docs" / "zerogpu.md").read_text(encoding="utf-8")
    for step in ("suggested_hardware: zero-a10g", f'python_version: "{cd.ZEROGPU_SWITCH_PYTHON}"',
                 "delete `pre-requirements.txt`", f"`{cd.SPACES_REQUIREMENT}`", "torch==2.13.0",
                 "python3 scripts/check_deploy.py --zerogpu", "zerogpu_variant", "3.10.13 or 3.12.12",
                 ", ".join(map(str, sorted(cd.ZEROGPU_TORCH_LISTED)))):
        assert step in doc, step
    assert "docs/zerogpu.md" in cd.zerogpu_variant.__doc__
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for step in ("docs/zerogpu.md", "--zerogpu", "--cpu", "suggested_hardware: cpu-basic", "torch==2.13.0+cpu",
                 "python app.py --publish"):
        assert step in readme, step
    assert readme.index("ZeroGPU") < readme.index("suggested_hardware: cpu-basic")  # ZeroGPU first
