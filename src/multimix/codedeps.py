"""Which source files each pipeline stage runs, derived from the import graph — the code
dependencies of DVC's stages and Snakemake's rules, so that no list of files is kept by hand.

A stage's code is its entry module (`STAGES`) and every module of the package it imports,
directly or not (grimp's import graph; imports for type checkers only do not count), with
the package data files (YAML, JSON, CSV) of the folders those modules sit in. A method's
stages (training, evaluation, its own commands) add its whole folder `methods/<name>/`;
the report, which calls every method, adds every folder. No stage depends on another
method's folder: the registry loads other methods only for their names and presets, so
editing `methods/appaunet/` leaves every MultiMix and CheXseg result cached.

Snakemake's rules take these files as inputs (`files`). DVC's matrix stages cannot map a
preset to its method, so its `code` stage writes one manifest per stage and preset under
`data/code/` (`write_manifests`: "sha256  path" lines), rerun whenever `src/multimix`
changes; a stage reruns only when its own manifest's content changed.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import grimp

from multimix.errors import InputError
from multimix.methods import PLUGINS, PRESETS

PACKAGE = __name__.partition(".")[0]  # the package whose import graph is read
ROOT = Path(__file__).resolve().parent
SOURCE = "src/multimix"  # where the project's checkout has ROOT (an editable install)
DATA_SUFFIXES = (".yaml", ".json", ".csv")
# stage -> the module that implements it (what `multimix <stage>` calls)
STAGES = {
    "acquire": "multimix.data.acquire",
    "harmonise": "multimix.data.harmonise",
    "preprocess": "multimix.data.preprocess",
    "split": "multimix.data.split",
    "train": "multimix.training.loop",
    "evaluate": "multimix.evaluation",
    "report": "multimix.reporting",
}
PER_PRESET = ("train", "evaluate")  # matrix stages: their code depends on the run's method


@lru_cache(maxsize=1)
def _graph():
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=True, cache_dir=None)


def method_package(method: str) -> str:
    return type(PLUGINS[method]).__module__  # the plugin's folder, e.g. multimix.methods.chexseg


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def modules(stage: str, method: str | None = None) -> list[str]:
    """The modules stage `stage` runs (for a method's stage, `method`'s)."""
    graph = _graph()
    entries = {STAGES[stage]} if stage in STAGES else set()
    own = [method_package(name) for name in (PLUGINS if stage == "report" else [method] if method else [])]
    entries |= {m for m in graph.modules if any(_in(m, p) for p in own)}
    if not entries:
        raise KeyError(f"no stage {stage!r} (have {', '.join(STAGES)}) and no method given")
    found = set(entries)
    for entry in entries:
        found |= graph.find_upstream_modules(entry)
    # importing a module runs its packages' __init__ first
    found |= {".".join(m.split(".")[:k]) for m in found for k in range(1, m.count(".") + 1)}
    others = [method_package(name) for name in PLUGINS if method_package(name) not in own]
    return sorted(m for m in found if not any(_in(m, p) for p in others))


def _path(module: str) -> Path:
    parts = module.split(".")[1:]
    folder = ROOT.joinpath(*parts)
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def files(stage: str, method: str | None = None) -> list[str]:
    """The stage's source and package data files, relative to the project root (src/multimix/…)."""
    paths = {_path(m) for m in modules(stage, method)}
    for folder in {p.parent for p in paths}:
        paths |= {p for p in folder.iterdir() if p.suffix in DATA_SUFFIXES}
    return sorted(f"{SOURCE}/{p.relative_to(ROOT).as_posix()}" for p in paths)


def manifests() -> dict[str, list[str]]:
    """file name under data/code/ -> the files of that stage: one per shared stage, one per
    (matrix stage, preset), one per method command (`<command>.txt`)."""
    out = {f"{stage}.txt": files(stage) for stage in STAGES if stage not in PER_PRESET}
    for stage in PER_PRESET:
        for preset, variant in PRESETS.items():
            out[f"{stage}-{preset}.txt"] = files(stage, variant.method)
    for name, plugin in PLUGINS.items():
        for command in plugin.commands:
            out[f"{command}.txt"] = files(command, name)
    return out


def write_manifests(out_dir: Path, project: Path = Path(".")) -> int:
    """Write `manifests()` as "sha256  path" lines, hashing the files of the project checkout
    `project` (the folder DVC runs stages in); a manifest whose content would not change is left
    alone. Returns the number of manifests."""
    if not (project / SOURCE).is_dir():
        raise InputError(f"{project / SOURCE}: not found (run `multimix code` in the project's root folder)")
    out_dir.mkdir(parents=True, exist_ok=True)
    found = manifests()
    for name, paths in found.items():
        text = "".join(f"{hashlib.sha256((project / p).read_bytes()).hexdigest()}  {p}\n" for p in paths)
        target = out_dir / name
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
    for stale in set(p.name for p in out_dir.glob("*.txt")) - set(found):
        (out_dir / stale).unlink()  # a preset no longer registered
    return len(found)
