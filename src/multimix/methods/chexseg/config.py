"""Seed 004's parameters: the `seed004` section, the `study.chexseg` runs, and their checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from multimix.errors import InputError
from multimix.runs import RunSpec


@dataclass(frozen=True)
class ChexsegSubsets:
    """What `multimix split` draws for seed 004 from CheXpert train (splits.json's
    `subsets.chexseg`): per trial seed, the images that get Grad-CAM pseudo-labels (the paper:
    3 trials of 100), and per share the distillation students' unlabelled images (nested: 1 %
    within 10 %)."""

    pseudo_labelled: int = 100
    trials: tuple[int, ...] = (0, 1, 2)
    unlabelled: tuple[float, ...] = (0.01, 0.1)


@dataclass(frozen=True)
class Seed004Config:
    """CheXseg (Gadgil et al. 2021): its Appendix B where it gives a value, our choice where not
    (docs/methods/chexseg.md)."""

    uncertainty: Literal["ones", "zeros", "ignore"] = "ones"  # CheXpert's -1 labels (U-Ones / U-Zeros / ignored)
    classifier_lr: float = 1.0e-4  # B.1: Adam, fixed rate
    classifier_batch: int = 16
    threshold: Literal["tuned", "otsu"] = "tuned"  # CAM -> mask: per-pathology tuned (paper) | Otsu (public code)
    gate: Literal["label", "probability"] = "label"  # which pathologies of an image get a mask
    probability_cutoff: float | None = None  # optional: also require the classifier's probability
    segmentation_lr: float = 1.0e-3  # B.2: 1e-3 on small data
    segmentation_batch: int = 8
    temperature: float = 10.0  # B.4: sigmoid temperature of distillation
    distill_lr: float = 1.0e-3
    true_pos_only: bool = True  # CheXlocalize's IoU convention
    bootstrap: int = 1000  # replicates of the 95% intervals
    pseudo_dir: str = "data/pseudo"  # `multimix pseudolabel`: pseudo_labels.h5 (masks) and .json (thresholds, quality)
    subsets: ChexsegSubsets = field(default_factory=ChexsegSubsets)  # drawn by `multimix split`


@dataclass(frozen=True)
class ChexsegStudy:
    """Seed 004's runs (CheXseg). Empty lists: none (the MultiMix default)."""

    classifiers: tuple[Literal["densenet121", "resnet18"], ...] = ()  # pathology classifiers trained
    cam: tuple[Literal["densenet121", "resnet18"], ...] = ()  # the Grad-CAM source (at most one)
    p: tuple[int | float, ...] = ()  # expert-sampling probabilities of the sweep
    trials: tuple[int, ...] = (0,)  # pseudo-label draws (seed004.subsets.trials)
    init: Literal["classifier", "random"] = "classifier"  # encoder of the sweep's models
    distill_inits: tuple[Literal["classifier", "random"], ...] = ()  # teacher + students per init
    distill_unlabelled: tuple[int | float, ...] = ()  # students' unlabelled shares (seed004.subsets.unlabelled)


def runs(chexseg: ChexsegStudy) -> list[RunSpec]:
    """Seed 004's runs, in a fixed order (classifiers, sweep, teachers, students); p and shares
    written as params.yaml writes them (0.9, 1), as DVC renders them:
      pathology_<arch>              per classifier architecture
      chexseg_<init>-p<p>-t<trial>  the p-sweep: per p and pseudo-label trial
      teacher_<init>                per distillation init (expert masks only)
      student_<init>-u<share>       per init and unlabelled share"""
    found = [RunSpec(f"pathology_{arch}", f"pathology_{arch}", None, None, 0) for arch in chexseg.classifiers]
    found += [RunSpec(f"chexseg_{chexseg.init}-p{p}-t{t}", f"chexseg_{chexseg.init}", None, None, 0, p=float(p),
                      trial=t) for p in chexseg.p for t in chexseg.trials]
    found += [RunSpec(f"teacher_{init}", f"teacher_{init}", None, None, 0, p=1.0) for init in chexseg.distill_inits]
    found += [RunSpec(f"student_{init}-u{u}", f"student_{init}", None, None, 0, unlabelled=float(u))
              for init in chexseg.distill_inits for u in chexseg.distill_unlabelled]
    return found


def validate(cfg, where: str) -> None:
    """`seed004` values in range; the `study.chexseg` runs' dependencies exist: a CAM source among
    the classifiers, the encoder's classifier, trials and shares the split file draws, and the
    sources in data.datasets."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise InputError(f"{where}: {message}")

    s4 = cfg.seed004
    need(s4.classifier_lr > 0 and s4.segmentation_lr > 0 and s4.distill_lr > 0,
         "seed004.classifier_lr, segmentation_lr and distill_lr must be > 0")
    need(s4.classifier_batch >= 1 and s4.segmentation_batch >= 1,
         "seed004.classifier_batch and segmentation_batch must be >= 1")
    need(s4.temperature > 0, f"seed004.temperature is {s4.temperature!r}; expected a number > 0")
    need(s4.probability_cutoff is None or 0 < s4.probability_cutoff < 1,
         f"seed004.probability_cutoff is {s4.probability_cutoff!r}; expected null or a number in (0, 1)")
    need(s4.bootstrap >= 1, f"seed004.bootstrap is {s4.bootstrap!r}; expected an integer >= 1")
    need(s4.subsets.pseudo_labelled >= 1, "seed004.subsets.pseudo_labelled must be >= 1")
    need(all(0 < f <= 1 for f in s4.subsets.unlabelled), "seed004.subsets.unlabelled: shares in (0, 1] expected")
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
        if t not in s4.subsets.trials:
            raise InputError(f"{where}: study.chexseg.trials has {t!r}, which seed004.subsets.trials "
                             f"({list(s4.subsets.trials)}) does not draw")
    for u in cs.distill_unlabelled:
        if float(u) not in [float(v) for v in s4.subsets.unlabelled]:
            raise InputError(f"{where}: study.chexseg.distill_unlabelled has {u!r}, which seed004.subsets.unlabelled "
                             f"({list(s4.subsets.unlabelled)}) does not draw")
    if cs.distill_inits and not cs.distill_unlabelled:
        raise InputError(f"{where}: study.chexseg.distill_inits needs study.chexseg.distill_unlabelled")
    missing = [d for d in ("chexpert", "chexlocalize") if d not in cfg.data.datasets]
    if missing:
        raise InputError(f"{where}: study.chexseg needs {missing[0]} in data.datasets")


def subsets(cfg, partitions: dict) -> dict | None:
    """Seed 004's subsets of CheXpert train (`ChexsegSubsets`), or None without CheXpert. Every
    draw orders the pool by SHA-256 (`data.split.hash_order`): the same on any machine."""
    from multimix.data.split import hash_order

    if "chexpert" not in partitions:
        return None
    pool, s = partitions["chexpert"]["train"], cfg.seed004.subsets
    return {"dataset": "chexpert", "pool_size": len(pool),
            "pseudo": {str(t): sorted(hash_order(pool, "chexseg/pseudo", t)[:s.pseudo_labelled]) for t in s.trials},
            "unlabelled": {str(float(u)): sorted(hash_order(pool, "chexseg/unlabelled", cfg.split.seed)
                                                 [:max(1, round(float(u) * len(pool)))])
                           for u in s.unlabelled}}


def describe_subsets(info: dict) -> str:
    return (f"chexseg (chexpert train, pool {info['pool_size']}): pseudo-labelled "
            + ", ".join(f"trial {t}: {len(v)}" for t, v in info["pseudo"].items()) + "; unlabelled "
            + ", ".join(f"{u}: {len(v)}" for u, v in info["unlabelled"].items()))
