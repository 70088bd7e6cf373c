"""dvc.yaml and the Snakemake workflow declare the same pipeline.

Both are read through their own tools (DVC's stage index, a forced
Snakemake dry run), so templating and includes are resolved exactly as
`dvc repro` and `snakemake --cores N` resolve them. DVC expands the study in
one matrix stage per group of presets (`train-multitask@…`), Snakemake in one
rule: both are compared as `train` / `evaluate`, with every run name of the
study replaced by `{run}` — after checking that both expand the same runs.
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
CODE = "data/code"  # DVC's code manifests: the one stage Snakemake does not need (it reads the import graph)


def _empty() -> dict:
    return {"cmds": set(), "deps": set(), "outs": set(), "params": set()}


def study_runs(root: Path = ROOT) -> list[str]:
    from multimix.config import load_config
    from multimix.study import run_names

    return run_names(load_config(root / "params.yaml"))


def study_specs(root: Path = ROOT):
    from multimix.config import load_config
    from multimix.study import expand

    return expand(load_config(root / "params.yaml"))


def generic_names(runs: list[str]):
    """A function replacing the study's run names in a text by `{run}`."""
    pattern = re.compile("(?<![\\w-])(" + "|".join(map(re.escape, sorted(runs, key=len, reverse=True))) + ")(?![\\w-])")
    return lambda text: pattern.sub("{run}", text) if runs else text


def dvc_graph(root: Path = ROOT) -> tuple[dict[str, dict], list[str]]:
    """Per stage (matrix stages `train-<group>@<item>` merged under `train`, with
    run names replaced by `{run}`): commands, deps, outs and params; and the
    run names found in the train commands. A dep on a code manifest (data/code/, written by
    DVC's own `code` stage) stands for the source files it lists, as Snakemake names them."""
    from dvc.repo import Repo

    from multimix import codedeps

    manifests = codedeps.manifests()
    generic = generic_names(study_runs(root))
    graph: dict[str, dict] = defaultdict(_empty)
    runs = []
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            base = stage.name.partition("@")[0]
            base = base.split("-")[0] if base.startswith(("train-", "evaluate-")) else base
            if base == "train":
                runs.append(stage.cmd.split("--run ")[1])
            node = graph[base]
            node["cmds"].add(generic(stage.cmd))
            for dep in stage.deps:
                if type(dep).__name__ == "ParamsDependency":
                    node["params"].update(generic(p) for p in dep.params)
                elif dep.def_path.startswith(CODE + "/") and base != "code":
                    node["deps"].update(manifests[dep.def_path.removeprefix(CODE + "/")])
                else:
                    node["deps"].add(generic(dep.def_path))
            node["outs"].update(generic(out.def_path) for out in stage.outs)
    return dict(graph), runs


def snakemake_graph(root: Path = ROOT) -> tuple[dict[str, dict], list[str]]:
    """Jobs of a forced dry run: `rule X:` blocks with input/output lines and the
    shell command; and the run names of its train jobs."""
    generic = generic_names(study_runs(root))
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(snakemake), "--cores", "1", "--forceall", "--dry-run", "--printshellcmds", "--nocolor"],
        cwd=root, capture_output=True, text=True, check=True,
    )
    graph: dict[str, dict] = defaultdict(_empty)
    runs = []
    rule = None
    for line in result.stdout.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            rule = None if match.group(1) == "default" else graph[match.group(1)]
            name = match.group(1)
        elif rule is not None and (match := re.match(r"^\s+(input|output): (.*)$", line)):
            files = {generic(p.strip()) for p in match.group(2).split(",")}
            rule["deps" if match.group(1) == "input" else "outs"].update(files)
        elif rule is not None and line.startswith("Shell command:"):
            cmd = line.removeprefix("Shell command:").strip()
            if name == "train":
                runs.append(cmd.split("--run ")[1])
            rule["cmds"].add(generic(cmd))
    # Parameters a rule reruns on: the keys given to param_slice(...) in its block
    # and the names listed in module-level lists it unpacks; for train and evaluate, whose
    # params are a function of the run, the lists of the kinds of runs the study has.
    methods = {s.variant.method for s in study_specs(root)}
    has_chexseg, has_other = "chexseg" in methods, bool(methods - {"chexseg"})
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        lists = {}
        for list_name, body in re.findall(r"^(\w+) = (\[.*?\])$", text, re.S | re.M):
            try:
                lists[list_name] = ast.literal_eval(body)
            except ValueError:
                pass  # not a literal list of parameter keys
        # functions of the wildcards a rule names as its params (`p=train_params`): a choice
        # between module-level lists, `param_slice(*(A if … else B))`
        functions = {name: body for name, body in re.findall(r"^def (\w+)\(wildcards\):\n(.*?)(?=^\S|\Z)", text,
                                                              re.S | re.M)}
        for name, body in re.findall(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule |^\S|\Z)", text, re.S | re.M):
            if name not in graph:
                continue  # a rule no job of this study runs (seed 004's pseudolabel in the default)
            for call in re.findall(r"param_slice\((.*?)\)", body, re.S):
                if call.startswith("*"):
                    graph[name]["params"].update(lists[call[1:]])
                else:
                    graph[name]["params"].update(ast.literal_eval(f"[{call}]"))
            for function in re.findall(r"params:\s*\n\s*p=(\w+),", body):
                for chexseg_list, other_list in re.findall(r"param_slice\(\*\((\w+) if chexseg else (\w+)\)\)",
                                                           functions[function]):
                    if has_chexseg:
                        graph[name]["params"].update(lists[chexseg_list])
                    if has_other:
                        graph[name]["params"].update(lists[other_list])
    return dict(graph), runs


# The default and the ready studies whose stages the default does not have (seed 003's adversarial
# models, seed 004's classifiers, pseudo-labels, p-sweep and distillation).
STUDIES = ["params.yaml", "studies/seed003-synthetic.yaml", "studies/chexseg-synthetic.yaml"]


@pytest.fixture(scope="module", params=STUDIES)
def root(request, tmp_path_factory) -> Path:
    """The project, or a copy of its pipeline files with a study as params.yaml."""
    if request.param == "params.yaml":
        return ROOT
    import shutil

    folder = tmp_path_factory.mktemp(Path(request.param).stem)
    for name in ("dvc.yaml", "Snakefile"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "workflow", folder / "workflow")
    (folder / "src").symlink_to(ROOT / "src")
    shutil.copy(ROOT / request.param, folder / "params.yaml")
    subprocess.run([str(Path(sys.executable).with_name("dvc")), "init", "--no-scm", "-q"], cwd=folder, check=True)
    return folder


@pytest.fixture(scope="module")
def both(root):
    return dvc_graph(root), snakemake_graph(root)


@pytest.fixture(scope="module")
def graphs(both):
    (dvc, _), (smk, _) = both
    return dvc, smk


def test_both_run_the_study_expansion(both, root):
    (_, dvc_runs), (_, smk_runs) = both
    expected = study_runs(root)
    assert len(expected) == len(set(expected)) > 0
    assert sorted(dvc_runs) == sorted(smk_runs) == sorted(expected)


def test_same_stages(graphs):
    dvc, smk = graphs
    assert set(dvc) - {"code"} == set(smk)


def test_dvc_code_stage_rewrites_the_manifests_on_any_source_change(graphs):
    dvc, _ = graphs
    assert dvc["code"]["deps"] == {"src/multimix"} and dvc["code"]["outs"] == {CODE}
    assert dvc["code"]["cmds"] == {"multimix -q --log data/logs/code.log code"}


def test_same_commands_call_the_multimix_cli(graphs):
    dvc, smk = graphs
    for name in set(dvc) - {"code"}:
        assert dvc[name]["cmds"] == smk[name]["cmds"], name
        # one log per stage (and run) under data/logs/, the same file for both orchestrators
        log = f"data/logs/{name}/{{run}}.log" if name in ("train", "evaluate") else f"data/logs/{name}.log"
        assert all(cmd.startswith(f"multimix -q --log {log} {name}") for cmd in dvc[name]["cmds"]), name


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
    for name in set(dvc) - {"code"}:
        assert _folder_deps_expanded(dvc[name]["deps"], smk[name]["deps"]) == smk[name]["deps"], name
        assert dvc[name]["outs"] == smk[name]["outs"], name
        assert dvc[name]["params"] == smk[name]["params"], name


def test_every_code_dependency_exists(graphs):
    dvc, _ = graphs
    for name, stage in dvc.items():
        for dep in stage["deps"]:
            if dep.startswith("src/") and name != "code":
                assert (ROOT / dep).is_file(), dep


# Modules no pipeline stage runs: the command line itself, and the commands outside the
# pipeline (`multimix calibrate`, `compare`, `paired`, `phantoms`, `code`, `predict` with its DICOM reader),
# and the MLflow model's code file (copied into each logged model, never imported by a stage).
OUTSIDE_THE_PIPELINE = {"__main__.py", "cli.py", "calibration.py", "compare.py", "codedeps.py", "data/realism.py",
                        "predict.py", "data/dicom.py", "mlflow_model.py", "paired.py"}


def test_every_source_file_is_some_stages_code_and_each_method_only_its_own():
    from multimix import codedeps
    from multimix.methods import PLUGINS, PRESETS

    manifests = codedeps.manifests()
    covered = {p.removeprefix("src/multimix/") for files in manifests.values() for p in files}
    package = ROOT / "src" / "multimix"
    sources = {p.relative_to(package).as_posix() for p in package.rglob("*")
               if p.suffix in (".py", ".yaml", ".json", ".csv") and "__pycache__" not in p.parts}
    assert sources - covered == OUTSIDE_THE_PIPELINE
    for preset, variant in PRESETS.items():
        for stage in codedeps.PER_PRESET:
            folders = {p.split("/")[3] for p in manifests[f"{stage}-{preset}.txt"] if p.startswith("src/multimix/methods/")
                       and p.count("/") > 3}
            assert folders == {variant.method}, (stage, preset)
    report = {p.split("/")[3] for p in manifests["report.txt"] if p.count("/") > 3 and "/methods/" in p}
    assert report == set(PLUGINS)  # the report calls every method


def test_editing_one_method_changes_only_its_stages_manifests(tmp_path):
    """What DVC reruns after an edit: the stages whose manifest changed."""
    import shutil

    from multimix import codedeps
    from multimix.methods import PRESETS

    shutil.copytree(ROOT / "src" / "multimix", tmp_path / "src" / "multimix",
                    ignore=shutil.ignore_patterns("__pycache__"))
    codedeps.write_manifests(tmp_path / "before", tmp_path)
    edited = tmp_path / "src" / "multimix" / "methods" / "appaunet" / "training.py"
    edited.write_text(edited.read_text() + "\n# an edit\n")
    codedeps.write_manifests(tmp_path / "after", tmp_path)
    changed = {p.name for p in (tmp_path / "after").iterdir()
               if p.read_text() != (tmp_path / "before" / p.name).read_text()}
    appaunet = {p for p, v in PRESETS.items() if v.method == "appaunet"}
    assert changed == {f"{stage}-{p}.txt" for stage in codedeps.PER_PRESET for p in appaunet} | {"report.txt"}
