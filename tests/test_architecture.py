"""ARCHITECTURE.md, held against the code: imports run one way (app -> demo -> rules -> explain -> gpt, text/ beside
explain; app -> api -> rules, text, gpt; bench -> rules, explain, gpt), and no module imports itself back through others (no import cycle), counting imports inside functions too."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# room -> the rooms it may import (ARCHITECTURE.md's arrows)
MAY_IMPORT = {"app": {"demo", "api", "publish"}, "api": {"rules", "text", "gpt"},
              "publish": {"demo", "rules", "explain", "text", "gpt"}, "demo": {"rules", "explain", "text", "gpt"},
              "rules": {"explain", "text", "gpt"},
              "explain": {"text", "gpt"}, "text": set(), "gpt": set(), "bench": {"rules", "explain", "text", "gpt"},
              "vllm_nanochat": set()}


def modules() -> dict[str, Path]:
    """Every module of the rooms, by dotted name."""
    found = {"app": ROOT / "app.py"}
    for room in ("publish", "demo", "api", "rules", "explain", "text", "gpt", "bench", "vllm_nanochat"):
        for path in (ROOT / room).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports (module-level or inside functions), resolved to known module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, name, set(mods)) for name, path in mods.items()}


def wrong_way(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from one room into another that ARCHITECTURE.md does not allow."""
    room = lambda m: m.split(".")[0]  # noqa: E731
    return sorted((a, b) for a, targets in edges.items() for b in targets
                  if room(b) != room(a) and room(b) not in MAY_IMPORT[room(a)])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles, each as the path that closes it (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    found = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return found


def test_imports_run_one_way():
    assert wrong_way(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_can_fail(tmp_path):
    """A function-level import is seen, a cycle through it is found, and an arrow against the rooms is reported."""
    (tmp_path / "a.py").write_text("from b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    import a\n")
    edges = {m: imports(tmp_path / f"{m}.py", m, {"a", "b"}) for m in ("a", "b")}
    assert edges == {"a": {"b"}, "b": {"a"}} and cycles(edges) == [["a", "b", "a"]]
    assert wrong_way({"gpt.model": {"explain.trace"}, "explain.trace": {"gpt.model"}}) == [("gpt.model",
                                                                                          "explain.trace")]
    assert "gpt.nanochat" in graph()["gpt.engine"]  # a real arrow of this tree is seen


# Outside gpt/nanochat/ only these may name a version of nanochat: the loaders and the command line (what a file or a
# user names), training
# (which version to train) and the then-and-now view (which of two is the earlier). Everything else asks the model.
MAY_NAME_VERSIONS = {"app", "gpt.checkpoint", "gpt.hf_format", "gpt.anywhere", "gpt.training.train",
                     "explain.then_now"}
VERSION_MODULES = {"gpt.nanochat.tutorial", "gpt.nanochat.current", "gpt.nanochat.registry", "gpt.nanochat.features"}


def version_names() -> set[str]:
    from gpt import nanochat

    return {m.name for m in nanochat.MEMBERS} | set(nanochat.ALIASES)


def names_versions(path: Path, names: set[str]) -> list[str]:
    """What in this module names a version of nanochat: an import of a version module, a string in code (not a
    docstring) that is a version's name, or a comparison with a model's member or architecture."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module in VERSION_MODULES or node.module == "gpt.nanochat" and
                                                 any(f"gpt.nanochat.{a.name}" in VERSION_MODULES for a in node.names)):
            found.append(f"line {node.lineno}: imports {node.module}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [f"line {node.lineno}: {w!r}" for w in names if w in node.value]
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(n, ast.Attribute) and n.attr in ("member", "arch") for s in sides for n in ast.walk(s)):
                found.append(f"line {node.lineno}: compares a model's version")
    return found


def test_no_version_names_outside_the_family():
    names = version_names()
    offenders = {name: hits for name, path in modules().items()
                 if not name.startswith("gpt.nanochat") and name not in MAY_NAME_VERSIONS
                 and (hits := names_versions(path, names))}
    assert offenders == {}


def test_the_version_check_can_fail(tmp_path):
    (tmp_path / "m.py").write_text('"""about 4a87a0d"""\nfrom gpt.nanochat.current import GPT\n'
                                   'if model.member == x or arch == "nanochat-2026-07":\n    pass\n')
    hits = names_versions(tmp_path / "m.py", version_names())
    assert len(hits) == 3 and not any("4a87a0d" in h for h in hits)


def test_explain_draws_and_does_not_schedule():
    """explain/ records forwards and draws them; when model work yields to chats is the app's business (demo passes
    gpt.torch_thread's pause points and clock in)."""
    assert sorted((a, b) for a, targets in graph().items() if a.startswith("explain") for b in targets
                  if b == "gpt.torch_thread") == []


def test_architecture_md_names_every_module_of_gpt_and_every_cache_method():
    """ARCHITECTURE.md stays true of gpt/: each of its modules (and the family's) is named there, and so is every
    method of the model-cache interface."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    files = [p.name for p in (ROOT / "gpt").glob("*.py")] + [p.name for p in (ROOT / "gpt" / "nanochat").glob("*.py")]
    assert [f for f in files if f != "__init__.py" and f not in text] == []
    from gpt.kv_cache import Cache

    methods = [m for m in vars(Cache) if not m.startswith("_")]
    assert len(methods) == 4 and [m for m in methods if f"`{m}`" not in text] == []
