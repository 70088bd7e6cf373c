"""The package's structure (docs/layout.md, "Layers"): layers that import only downwards, methods
that never import each other, shared stages that reach a method only through the registry, no
import cycle anywhere, and no method or preset named in the shared stages' code."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "multimix"
# The stages every method goes through (the issue's "study, train, evaluate, report, compare, cli
# and config") and the shared modules they stand on.
SHARED = ["study.py", "training/loop.py", "evaluation.py", "reporting.py", "compare.py", "cli.py", "config.py",
          "testsets.py", "streams.py", "tables.py", "paths.py", "runs.py", "codedeps.py", "methods/base.py",
          "data/split.py", "serving.py", "predict.py", "precision.py"]


def test_import_contracts_hold():
    """import-linter's layers, independence and forbidden contracts (.importlinter)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def import_cycles(package: str = "multimix") -> list[list[str]]:
    """Groups of modules that import each other in a circle (strongly connected components of
    the runtime import graph, imports inside functions included)."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=True, cache_dir=None)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in edges:
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle():
    assert import_cycles() == []


def method_words() -> set[str]:
    from multimix.methods import PLUGINS, PRESETS

    sections = {s for p in PLUGINS.values() for s in [*p.sections, *p.study_sections]}
    return set(PRESETS) | set(PLUGINS) | sections


def names_in(path: Path, words: set[str], methods: set[str]) -> list[tuple[int, str]]:
    """(line, word) of every method, preset or method-section name in the code of `path`:
    string constants (docstrings aside), identifiers and attributes; a word `<method>_…` counts
    as the method's. The package's own name is not MultiMix the method: `multimix` as the
    program (`prog="multimix"`, "multimix <command>"), in a module path or a folder, and as the
    default study name (`name: str = "multimix"`)."""
    tree = ast.parse(path.read_text())
    skip = {id(node.body[0].value) for node in ast.walk(tree)  # docstrings
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    skip |= {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.keyword) and node.arg == "prog"}
    skip |= {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.AnnAssign)
             and isinstance(node.target, ast.Name) and node.target.id == "name" and node.value is not None}

    def named(word: str) -> bool:
        return word in words or any(word.startswith(f"{m}_") for m in methods)

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = re.sub(r"(?<![\w/])multimix(?=[ .:])|src/multimix", "", node.value)
            found += [(node.lineno, w) for w in re.findall(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*", text) if named(w)]
        elif isinstance(node, ast.Attribute) and named(node.attr):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Name) and named(node.id):
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and named(node.target.id):
            found.append((node.lineno, node.target.id))
    return found


# The cohorts' partitions (JCX, MCX, SCX, CCX: datasets, drawn for any method) are salted with
# "partition-seed003/<source>": renaming the salt would redraw every cohort split.
KNOWN = {"data/split.py": {"seed003"}}


def test_shared_stages_name_no_method_or_preset():
    from multimix.methods import PLUGINS

    words = method_words()
    for name in SHARED:
        found = {w for _, w in names_in(PACKAGE / name, words, set(PLUGINS))} - KNOWN.get(name, set())
        assert not found, f"src/multimix/{name} names {sorted(found)}"


def test_the_name_check_finds_what_it_looks_for(tmp_path):
    """The check would catch the branches this structure replaced."""
    from multimix.methods import PLUGINS

    sample = tmp_path / "sample.py"
    sample.write_text('"""Docstrings may say multimix, chexseg or unet."""\n'
                      'import multimix.methods\n'
                      'def f(spec, cfg):\n'
                      '    if spec.variant.method == "chexseg":\n'
                      '        return cfg.seed003.kl_weight\n'
                      '    print("run `multimix report`", "multimix")\n'
                      '    return [s for s in spec if s.preset == "multimix"], cfg.split.chexseg_trials\n')
    found = {w for _, w in names_in(sample, method_words(), set(PLUGINS))}
    assert found == {"chexseg", "seed003", "multimix", "chexseg_trials"}
