"""A study: presets x label counts x repeats -> the list of runs.

`params.yaml`'s `study` section names the models (grouped by the tasks they
learn), the labelled-set sizes and the repeats; this module expands it into
runs, the same list for `multimix train/evaluate/report`, for DVC (whose
`matrix` stages expand the same three groups) and for Snakemake (which calls
`run_names`). A single-task model is trained once per label count of its own
task (`segmentation_labels` or `classification_labels`): U-Net is not repeated
across |D_l^c|, nor Enc across |D_l^s|. A multi-task model is trained once per
(|D_l^s|, |D_l^c|) setting of `multitask_labels`: the paper's Table 2 lists
all nine pairs, a cheaper study a few.

A run is named `<preset>[-s<|D_l^s|>][-c<|D_l^c|>]-r<repeat>`, e.g.
`multimix-s10-c100-r0`, `unet-s10-r0`, `enc-c100-r0`; the name is the run's
identity in folders, MLflow and tables.

A method may add runs of its own from its study section (`MethodPlugin.runs`: seed 004's
`study.chexseg`, methods/chexseg/); they follow the groups' runs.
"""

from __future__ import annotations

from multimix.errors import InputError
from multimix.methods import PRESETS, plugins
from multimix.runs import RunSpec, run_name  # noqa: F401 (the study's names for them)

GROUPS = ("segmentation", "classification", "multitask")


def _spec(preset: str, seg, cls, repeat: int) -> RunSpec:
    seg = None if seg is None else str(seg)
    cls = None if cls is None else str(cls)
    return RunSpec(run_name(preset, seg, cls, repeat), preset, seg, cls, repeat)


def expand(cfg) -> list[RunSpec]:
    """Every run of the study, in a fixed order (group, preset, labels, repeat)."""
    study = cfg.study
    runs = []
    for preset in study.presets.segmentation:
        runs += [_spec(preset, s, None, r) for s in study.segmentation_labels for r in study.repeats]
    for preset in study.presets.classification:
        runs += [_spec(preset, None, c, r) for c in study.classification_labels for r in study.repeats]
    for preset in study.presets.multitask:
        runs += [_spec(preset, pair.segmentation, pair.classification, r) for pair in study.multitask_labels
                 for r in study.repeats]
    for plugin in plugins():  # runs a method derives from its own study section
        runs += plugin.runs(cfg)
    return runs


def run_names(cfg) -> list[str]:
    return [spec.name for spec in expand(cfg)]


def find_run(cfg, name: str) -> RunSpec:
    """The study's run `name`, or a one-line error listing the runs it has."""
    runs = {spec.name: spec for spec in expand(cfg)}
    if name not in runs:
        have = ", ".join(list(runs)[:12]) + (f", … ({len(runs)} in all)" if len(runs) > 12 else "")
        raise InputError(f"params.yaml: study {cfg.study.name!r} has no run {name!r} (have {have or 'none'})")
    return runs[name]


def validate_study(cfg, where: str) -> None:
    """Presets in the right group, label counts and repeats that the split file will have."""
    study = cfg.study
    for group in GROUPS:
        for preset in getattr(study.presets, group):
            if preset not in PRESETS:
                raise InputError(f"{where}: study.presets.{group} has {preset!r}; expected presets among "
                                 f"{', '.join(PRESETS)}")
            if PRESETS[preset].tasks not in GROUPS:
                raise InputError(f"{where}: study.presets.{group} has {preset!r}, which its method lists from "
                                 f"its own study section (study.{PRESETS[preset].tasks})")
            if PRESETS[preset].tasks != group:
                raise InputError(f"{where}: study.presets.{group} has {preset!r}, a {PRESETS[preset].tasks} "
                                 f"model; list it under study.presets.{PRESETS[preset].tasks}")
    for name, sizes in (("segmentation", cfg.split.segmentation_sizes),
                        ("classification", cfg.split.classification_sizes)):
        # only the label counts some preset of the study will train on
        wanted = [(f"study.{name}_labels", size) for size in getattr(study, f"{name}_labels")
                  if getattr(study.presets, name)]
        wanted += [("study.multitask_labels", getattr(pair, name)) for pair in study.multitask_labels
                   if study.presets.multitask]
        for key, size in wanted:
            if str(size) not in {str(s) for s in sizes}:
                raise InputError(f"{where}: {key} has {name} size {size!r}, which split.{name}_sizes "
                                 f"({list(sizes)}) does not make")
    for repeat in study.repeats:
        if repeat not in cfg.split.repeats:
            raise InputError(f"{where}: study.repeats has {repeat!r}, which split.repeats "
                             f"({list(cfg.split.repeats)}) does not draw")
    for plugin in plugins():
        plugin.validate(cfg, where)
    names = run_names(cfg)
    if len(set(names)) != len(names):
        raise InputError(f"{where}: study lists a preset, label count or repeat twice")
