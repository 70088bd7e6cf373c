"""dvc.yaml and the Snakemake workflow declare the same pipeline.

Both are read through their own tools (DVC's stage index, a forced
Snakemake dry run), so templating and includes are resolved exactly as
`dvc repro` and `snakemake --cores N` resolve them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _empty() -> dict:
    return {"cmds": set(), "deps": set(), "outs": set(), "params": set()}


def dvc_graph() -> dict[str, dict]:
    """Per stage (foreach stages `train@<run>` merged under `train`, with the run
    name replaced by `{run}`): commands, deps, outs and params."""
    from dvc.repo import Repo

    graph: dict[str, dict] = defaultdict(_empty)
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            base, _, key = stage.name.partition("@")
            generic = (lambda text: text.replace(key, "{run}")) if key else (lambda text: text)
            node = graph[base]
            node["cmds"].add(generic(stage.cmd))
            for dep in stage.deps:
                if type(dep).__name__ == "ParamsDependency":
                    node["params"].update(generic(p) for p in dep.params)
                else:
                    node["deps"].add(generic(dep.def_path))
            node["outs"].update(generic(out.def_path) for out in stage.outs)
    return dict(graph)


def snakemake_graph() -> dict[str, dict]:
    """Jobs of a forced dry run: `rule X:` blocks with input/output lines and the shell command."""
    import yaml

    runs = list(yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["runs"])
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "--cores", "1", "--forceall", "--dry-run", "--printshellcmds", "--nocolor"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )

    def generic(text: str) -> str:  # the same normalisation as for DVC's foreach stages
        for run in runs:
            text = re.sub(rf"\b{re.escape(run)}\b", "{run}", text)
        return text

    graph: dict[str, dict] = defaultdict(_empty)
    rule = None
    for line in result.stdout.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            rule = None if match.group(1) == "default" else graph[match.group(1)]
        elif rule is not None and (match := re.match(r"^\s+(input|output): (.*)$", line)):
            files = {generic(p.strip()) for p in match.group(2).split(",")}
            rule["deps" if match.group(1) == "input" else "outs"].update(files)
        elif rule is not None and line.startswith("Shell command:"):
            rule["cmds"].add(generic(line.removeprefix("Shell command:").strip()))
    # Parameters a rule reruns on: the keys given to param_slice(...) in its block,
    # the names listed in module-level lists it unpacks, and its own train.runs entry.
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        lists = {}
        for list_name, body in re.findall(r"^(\w+) = (\[.*?\])$", text, re.S | re.M):
            try:
                lists[list_name] = ast.literal_eval(body)
            except ValueError:
                pass  # not a literal list of parameter keys
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, re.S | re.M):
            for call in re.findall(r"param_slice\((.*?)\)", body, re.S):
                if call.startswith("*"):
                    graph[name]["params"].update(lists[call[1:]])
                else:
                    graph[name]["params"].update(ast.literal_eval(f"[{call}]"))
            if "run_slice(" in body:
                graph[name]["params"].add("train.runs.{run}")
    return dict(graph)


@pytest.fixture(scope="module")
def graphs():
    return dvc_graph(), snakemake_graph()


def test_same_stages(graphs):
    dvc, smk = graphs
    assert set(dvc) == set(smk)


def test_same_commands_call_the_multimix_cli(graphs):
    dvc, smk = graphs
    for name in dvc:
        assert dvc[name]["cmds"] == smk[name]["cmds"], name
        assert all(cmd.startswith(f"multimix -q {name}") for cmd in dvc[name]["cmds"]), name


def _folder_deps_expanded(dvc_deps: set[str], smk_deps: set[str]) -> set[str]:
    """DVC cannot list a foreach stage's outputs as deps, so `report` depends on
    their folder; Snakemake names the files. A folder dep matches the Snakemake
    deps below it (and must have some)."""
    out = set()
    for dep in dvc_deps:
        inside = {d for d in smk_deps if d.startswith(dep.rstrip("/") + "/")}
        out |= inside if dep not in smk_deps and inside else {dep}
    return out


def test_same_inputs_outputs_and_params(graphs):
    dvc, smk = graphs
    for name in dvc:
        assert _folder_deps_expanded(dvc[name]["deps"], smk[name]["deps"]) == smk[name]["deps"], name
        assert dvc[name]["outs"] == smk[name]["outs"], name
        assert dvc[name]["params"] == smk[name]["params"], name


def test_every_code_dependency_exists(graphs):
    dvc, _ = graphs
    for stage in dvc.values():
        for dep in stage["deps"]:
            if dep.startswith("src/"):
                assert (ROOT / dep).is_file(), dep
