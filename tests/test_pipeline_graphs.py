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


def dvc_graph() -> dict[str, dict]:
    from dvc.repo import Repo

    graph = {}
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            params = set()
            deps = set()
            for dep in stage.deps:
                if type(dep).__name__ == "ParamsDependency":
                    params.update(dep.params)
                else:
                    deps.add(dep.def_path)
            graph[stage.name] = {
                "cmd": stage.cmd,
                "deps": deps,
                "outs": {out.def_path for out in stage.outs},
                "params": params,
            }
    return graph


def snakemake_graph() -> dict[str, dict]:
    """Jobs of a forced dry run: `rule X:` blocks with input/output lines and the shell command."""
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "--cores", "1", "--forceall", "--dry-run", "--printshellcmds", "--nocolor"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    graph: dict[str, dict] = defaultdict(lambda: {"cmd": None, "deps": set(), "outs": set(), "params": set()})
    rule = None
    for line in result.stdout.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            rule = None if match.group(1) == "default" else graph[match.group(1)]
        elif rule is not None and (match := re.match(r"^\s+(input|output): (.*)$", line)):
            rule["deps" if match.group(1) == "input" else "outs"].update(p.strip() for p in match.group(2).split(","))
        elif rule is not None and line.startswith("Shell command:"):
            rule["cmd"] = line.removeprefix("Shell command:").strip()
    # Parameters a rule reruns on: the keys given to param_slice(...) in its block.
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", smk.read_text(), re.S | re.M):
            for call in re.findall(r"param_slice\((.*?)\)", body, re.S):
                graph[name]["params"].update(ast.literal_eval(f"[{call}]"))
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
        assert dvc[name]["cmd"] == smk[name]["cmd"], name
        assert dvc[name]["cmd"].startswith("multimix "), name


def test_same_inputs_outputs_and_params(graphs):
    dvc, smk = graphs
    for name in dvc:
        assert dvc[name]["deps"] == smk[name]["deps"], name
        assert dvc[name]["outs"] == smk[name]["outs"], name
        assert dvc[name]["params"] == smk[name]["params"], name


def test_every_code_dependency_exists(graphs):
    dvc, _ = graphs
    for stage in dvc.values():
        for dep in stage["deps"]:
            if dep.startswith("src/"):
                assert (ROOT / dep).is_file(), dep
