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

Seed 004's runs come from `study.chexseg` (presets.ChexsegVariant):
  pathology_<arch>              per classifier architecture
  chexseg_<init>-p<p>-t<trial>  the p-sweep: per p and pseudo-label trial
  teacher_<init>                per distillation init (expert masks only)
  student_<init>-u<share>       per init and unlabelled share
p and shares are written as params.yaml writes them (0.9, 1), as DVC renders them.
"""

from __future__ import annotations

from dataclasses import dataclass

from multimix.errors import InputError
from multimix.presets import PRESETS, Variant

GROUPS = ("segmentation", "classification", "multitask")


@dataclass(frozen=True)
class RunSpec:
    name: str
    preset: str
    segmentation_labels: str | None  # "10", "50", "full", … (keys of the split file) or None
    classification_labels: str | None
    repeat: int
    # seed 004: the sweep's expert probability and pseudo-label trial, a student's unlabelled share
    p: float | None = None
    trial: int | None = None
    unlabelled: float | None = None

    @property
    def variant(self) -> Variant:
        return PRESETS[self.preset]


def run_name(preset: str, segmentation_labels=None, classification_labels=None, repeat: int = 0) -> str:
    parts = [preset]
    if segmentation_labels is not None:
        parts.append(f"s{segmentation_labels}")
    if classification_labels is not None:
        parts.append(f"c{classification_labels}")
    return "-".join(parts + [f"r{repeat}"])


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
    return runs + chexseg_runs(study.chexseg)


def chexseg_runs(chexseg) -> list[RunSpec]:
    """Seed 004's runs, in a fixed order (classifiers, sweep, teachers, students)."""
    runs = [RunSpec(f"pathology_{arch}", f"pathology_{arch}", None, None, 0) for arch in chexseg.classifiers]
    runs += [RunSpec(f"chexseg_{chexseg.init}-p{p}-t{t}", f"chexseg_{chexseg.init}", None, None, 0, p=float(p),
                     trial=t) for p in chexseg.p for t in chexseg.trials]
    runs += [RunSpec(f"teacher_{init}", f"teacher_{init}", None, None, 0, p=1.0) for init in chexseg.distill_inits]
    runs += [RunSpec(f"student_{init}-u{u}", f"student_{init}", None, None, 0, unlabelled=float(u))
             for init in chexseg.distill_inits for u in chexseg.distill_unlabelled]
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
            if PRESETS[preset].tasks == "chexseg":
                raise InputError(f"{where}: study.presets.{group} has {preset!r}, a seed-004 model; "
                                 "study.chexseg lists those runs")
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
    _validate_chexseg(cfg, where)
    names = run_names(cfg)
    if len(set(names)) != len(names):
        raise InputError(f"{where}: study lists a preset, label count or repeat twice")


def _validate_chexseg(cfg, where: str) -> None:
    """The seed-004 runs' dependencies exist: a CAM source among the classifiers, the encoder's
    classifier, trials and shares the split file draws, and the sources in data.datasets."""
    cs = cfg.study.chexseg
    segmenters = bool(cs.p) or bool(cs.distill_inits)
    if not (cs.classifiers or cs.cam or segmenters):
        return
    if len(cs.cam) > 1 or (cs.cam and cs.cam[0] not in cs.classifiers):
        raise InputError(f"{where}: study.chexseg.cam must name at most one of study.chexseg.classifiers "
                         f"({list(cs.classifiers)})")
    if cs.p and not cs.cam:
        raise InputError(f"{where}: study.chexseg.p needs a Grad-CAM source: set study.chexseg.cam")
    if segmenters and "resnet18" not in cs.classifiers:
        # every segmenter's stage depends on it (a static DAG for DVC), whichever init it uses
        raise InputError(f"{where}: study.chexseg's segmentation runs need resnet18 in study.chexseg.classifiers "
                         "(the encoder init of the paper's best setting)")
    for p in cs.p:
        if not 0 <= p <= 1:
            raise InputError(f"{where}: study.chexseg.p has {p!r}; expected probabilities in [0, 1]")
    for t in cs.trials:
        if t not in cfg.split.chexseg_trials:
            raise InputError(f"{where}: study.chexseg.trials has {t!r}, which split.chexseg_trials "
                             f"({list(cfg.split.chexseg_trials)}) does not draw")
    for u in cs.distill_unlabelled:
        if float(u) not in [float(v) for v in cfg.split.chexseg_unlabelled]:
            raise InputError(f"{where}: study.chexseg.distill_unlabelled has {u!r}, which split.chexseg_unlabelled "
                             f"({list(cfg.split.chexseg_unlabelled)}) does not draw")
    if cs.distill_inits and not cs.distill_unlabelled:
        raise InputError(f"{where}: study.chexseg.distill_inits needs study.chexseg.distill_unlabelled")
    missing = [d for d in ("chexpert", "chexlocalize") if d not in cfg.data.datasets]
    if missing:
        raise InputError(f"{where}: study.chexseg needs {missing[0]} in data.datasets")
