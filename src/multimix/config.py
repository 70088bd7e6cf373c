"""Typed configuration: `params.yaml` -> frozen dataclasses.

`params.yaml` is the single parameter file of the project: DVC reads it for
`params:` dependencies, Snakemake loads it as its configfile, and every
`multimix <stage>` command parses it here. Every key is checked against the
type its dataclass field declares *before* any stage writes anything:
unknown keys, wrong types and values outside a field's choices are one-line
errors naming the key, the value and what was expected, never a silent
default or a traceback later. A number written as a string (PyYAML reads
`1e-4` as the string "1e-4": YAML 1.1 wants a dot in the mantissa) is
accepted where a number is expected.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from multimix.errors import InputError
from multimix.methods import plugins
from multimix.study import validate_study

# MultiMix's and seed 003's sources (the default), then seed 004's (CheXseg)
DEFAULT_DATASETS = ("jsrt", "chex", "mcu", "nihx", "shenzhen")
DATASETS = DEFAULT_DATASETS + ("chexpert", "chexlocalize")
SOURCES = ("synthetic", "download", "local")
Dataset = Literal["jsrt", "chex", "mcu", "nihx", "shenzhen", "chexpert", "chexlocalize"]
# a training source: a dataset, or one of seed 003's cohorts (layout.COHORTS)
TrainingSource = Literal["jsrt", "chex", "mcu", "nihx", "shenzhen", "jcx", "mcx", "scx", "ccx"]


@dataclass(frozen=True)
class NihxConfig:
    # Number of "No Finding" images drawn for NIHX. "auto" keeps the paper's
    # ratio 2754:1431 to the Pneumonia rows: exactly 2,754 on the real label file.
    normal_count: int | Literal["auto"] = "auto"
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    source: Literal["synthetic", "download", "local"] = "synthetic"
    raw_dir: str = "data/raw"
    interim_dir: str = "data/interim"
    datasets: tuple[Dataset, ...] = DEFAULT_DATASETS
    nihx: NihxConfig = field(default_factory=NihxConfig)


@dataclass(frozen=True)
class DifficultyConfig:
    """How hard the phantoms are, per task (data/difficulty.py): easy (the old look, for fast
    tests), paper (calibrated on the paper's baselines: data/phantom_calibration.json) or a number
    in [0, 3]."""

    segmentation: float | Literal["easy", "paper"] = "paper"
    classification: float | Literal["easy", "paper"] = "paper"


@dataclass(frozen=True)
class SynthConfig:
    preset: Literal["small", "paper"] = "small"
    seed: int = 0
    # Per-source overrides of the preset's counts, e.g. {"mcu": {"normal": 4}}.
    counts: dict[str, Any] = field(default_factory=dict)
    # Kermany's folders as Mendeley distributes them (train + test: the 16
    # validation images sit in train) or as the redistributed copy (train/val/test).
    chex_layout: Literal["mendeley", "with_val"] = "mendeley"
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    # Classes of the segmentation sources visible in the pixels: a nodule in JSRT's JPCLN
    # phantoms, TB-like consolidation in Montgomery's and Shenzhen's _1 ones (seed 003's classes).
    findings: bool = True


@dataclass(frozen=True)
class DownloadConfig:
    # Refuse archives whose checksum is not pinned in the project unless allowed.
    allow_unpinned: bool = False
    registry: str | None = None  # alternative registry YAML (mirrors, tests)


@dataclass(frozen=True)
class HarmoniseConfig:
    workers: int = 2


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 256
    aspect: Literal["squash", "pad"] = "squash"  # squash (as the paper) | pad (letterbox to a square)
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    processed_dir: str = "data/processed"
    workers: int = 2


@dataclass(frozen=True)
class SplitConfig:
    split_dir: str = "data/splits"
    seed: int = 0  # train/val/test partition
    segmentation_dataset: TrainingSource = "jsrt"  # in-domain training sources of the paper
    classification_dataset: TrainingSource = "chex"
    # Labelled-subset sizes of the paper (section 3.2); "full" = the whole training pool.
    segmentation_sizes: tuple[int | Literal["full"], ...] = (10, 50, "full")
    classification_sizes: tuple[int | Literal["full"], ...] = (100, 1000, "full")
    repeats: tuple[int, ...] = (0, 1, 2, 3, 4)  # one subset draw per repeat seed
    # Share of CheXlocalize's val images (its expert-annotated pool, split into train and val)
    # held out for checkpoint selection.
    chexlocalize_val: float = 0.1


@dataclass(frozen=True)
class StudyPresets:
    """Which models a study trains, grouped by the tasks they learn: a
    single-task model is trained once per label count of its own task only."""

    segmentation: tuple[str, ...] = ()  # |D_l^s| only (unet)
    classification: tuple[str, ...] = ()  # |D_l^c| only (enc, enc_ssl, enc_mm)
    multitask: tuple[str, ...] = ()  # every |D_l^s| x |D_l^c| (umtl*, multimix)


@dataclass(frozen=True)
class LabelSetting:
    """(|D_l^s|, |D_l^c|) of a multi-task run."""

    segmentation: int | Literal["full"] = 10
    classification: int | Literal["full"] = 100


@dataclass(frozen=True)
class SharedStudyConfig:
    """The study keys every method reads; `StudyConfig` adds the methods' own sub-sections."""

    name: str = "multimix"  # MLflow experiment; report and compare group by it
    presets: StudyPresets = field(default_factory=StudyPresets)
    # Label counts (sizes of split.*_sizes) of the single-task runs, and the
    # settings of the multi-task runs (Table 2 of the paper: all nine pairs).
    segmentation_labels: tuple[int | Literal["full"], ...] = (10,)
    classification_labels: tuple[int | Literal["full"], ...] = (100,)
    multitask_labels: tuple[LabelSetting, ...] = (LabelSetting(),)
    repeats: tuple[int, ...] = (0,)  # seeds of split.repeats


def _method_fields(sections: str) -> list[tuple[str, type, object]]:
    """(name, dataclass, default) of the sections every registered method owns."""
    return [(name, cls, field(default_factory=cls)) for plugin in plugins()
            for name, cls in getattr(plugin, sections).items()]


# study = the shared keys + each method's sub-section (e.g. study.chexseg)
StudyConfig = dataclasses.make_dataclass("StudyConfig", _method_fields("study_sections"),
                                         bases=(SharedStudyConfig,), frozen=True)
StudyConfig.__module__ = __name__


@dataclass(frozen=True)
class TrainConfig:
    runs_dir: str = "data/runs"  # results: best.pt, history.csv, metrics.json, figures (pipeline outputs)
    # Resume state and bookkeeping (last.pt, run_info.json): not outputs. Kept apart so that
    # DVC and Snakemake never delete them, and so that the runs folder holds only files that
    # identical runs write identically (last.pt records the MLflow run).
    checkpoint_dir: str = "data/checkpoints"
    # The budget: every run of a study takes epochs x steps_per_epoch optimiser
    # steps, whatever its preset, and the learning-rate steps fall at the same step.
    epochs: int = 24
    steps_per_epoch: int = 522
    batch_size: int = 10  # per stream
    lr: float = 1e-4
    lr_step_epochs: int = 8
    lr_gamma: float = 0.1
    strong_max_ops: int = 3
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Numeric precision (multimix/precision.py): auto = bf16 where the device runs it fast (CUDA
    # with bf16, a CPU with AVX512-BF16 or AMX), fp16 on older CUDA, else fp32 | fp32 | bf16 | fp16
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Memory layout of images and convolutions: auto = channels-last on CUDA only (slower on CPU)
    channels_last: bool | Literal["auto"] = "auto"
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    num_workers: int = 0  # DataLoader workers per stream
    # Training streams read once onto the training device (HDF5 -> tensors): auto = float32 on a
    # GPU where they take under half its free memory, else the DataLoader; off; float32; float16.
    data_on_device: Literal["auto", "off", "float32", "float16"] = "auto"
    figures: int = 4  # validation images drawn into saliency/mask figures
    # MLflow system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) every 10 s
    system_metrics: bool = False
    # Memory against speed (docs/benchmarks.md, "Memory"): fast = glibc keeps freed buffers for
    # reuse (no page faults on every step; RSS grows by about 1 GB) | low = MultiMix's network
    # recomputes activations in the backward pass (identical weights, more arithmetic) and glibc
    # returns freed memory | auto = low on CPU from 256² up (5.1 GB -> under 3 GB), else fast.
    memory: Literal["auto", "fast", "low"] = "auto"


@dataclass(frozen=True)
class EvaluateConfig:
    dir: str = "data/eval"


@dataclass(frozen=True)
class ReportConfig:
    dir: str = "reports"


@dataclass(frozen=True)
class ClusterJobs:
    """What one SLURM job of a kind asks of a node (Snakemake resources; README "Running the
    paper's study on a cluster")."""

    partition: str | None = None  # null = the cluster's default partition
    gpus: int = 0
    cpus: int = 4  # also the job's threads (local runs give a job every core Snakemake has)
    mem_mb: int = 16000
    runtime_min: int = 120


@dataclass(frozen=True)
class ClusterConfig:
    # Read only by `snakemake --workflow-profile workflow/profiles/slurm`: local runs and DVC ignore it.
    account: str | None = None  # sbatch -A; null = the cluster's default
    # trainings, pseudo-labels and evaluations (the model on the device)
    gpu_jobs: ClusterJobs = field(default_factory=lambda: ClusterJobs(gpus=1, cpus=8, mem_mb=32000, runtime_min=720))
    # acquire, harmonise, preprocess, split, report
    cpu_jobs: ClusterJobs = field(default_factory=ClusterJobs)
    # Trainings that share one GPU in one SLURM job (Snakemake's job groups): k trainings run side
    # by side on the job's GPU, each with gpu_jobs' cpus and mem_mb (the job asks k times those).
    # A small network rarely fills a modern GPU alone; each training checks that k of it fit.
    # Snakemake also needs `--group-components trainings=k` (docs/cluster.md).
    trainings_per_gpu: int = 1


@dataclass(frozen=True)
class _Paths:
    """The folders of a Config as paths."""

    @property
    def raw_dir(self) -> Path:
        return Path(self.data.raw_dir)

    @property
    def interim_dir(self) -> Path:
        return Path(self.data.interim_dir)

    @property
    def processed_dir(self) -> Path:
        return Path(self.preprocess.processed_dir)

    @property
    def split_dir(self) -> Path:
        return Path(self.split.split_dir)

    @property
    def runs_dir(self) -> Path:
        return Path(self.train.runs_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.train.checkpoint_dir)


# The whole parameter file: the shared sections, with the methods' sections (in registration
# order) after `train`, where a reader of params.yaml finds them.
_SHARED_BEFORE = [("data", DataConfig), ("synth", SynthConfig), ("download", DownloadConfig),
                  ("harmonise", HarmoniseConfig), ("preprocess", PreprocessConfig), ("split", SplitConfig),
                  ("study", StudyConfig), ("train", TrainConfig)]
_SHARED_AFTER = [("evaluate", EvaluateConfig), ("report", ReportConfig), ("cluster", ClusterConfig)]
Config = dataclasses.make_dataclass(
    "Config", [(name, cls, field(default_factory=cls)) for name, cls in _SHARED_BEFORE] + _method_fields("sections")
    + [(name, cls, field(default_factory=cls)) for name, cls in _SHARED_AFTER], bases=(_Paths,), frozen=True)
Config.__module__ = __name__


# ------------------------------------------------------------------ type checking
class _Mismatch(Exception):
    pass


def _describe(hint) -> str:
    """A type hint in words, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return repr(args[0]) if len(args) == 1 else "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of ({_describe(args[0])})"
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null", Any: "any value"}.get(hint, getattr(hint, "__name__", str(hint)))


def _check(value, hint, key: str, file: str):
    """`value` as the type `hint` declares (numbers in strings become numbers), else _Mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, file, key)
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _check(value, option, key, file)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        element_hints = [args[0]] * len(value) if args[1:] == (Ellipsis,) else list(args)
        if len(element_hints) != len(value):
            raise _Mismatch
        return tuple(_check(v, h, key, file) for v, h in zip(value, element_hints))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # "1e-4": a number to anyone but YAML 1.1
            except ValueError:
                pass
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"config field type {hint!r} has no checker")


def _build(cls: type, raw: Any, file: str, section: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking every key against its field type."""
    where = f"{file}: {section}" if section else file
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names), key=str)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                         f"expected one of {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in raw.items():
        key = f"{section}.{name}" if section else name
        try:
            kwargs[name] = _check(value, hints[name], key, file)
        except _Mismatch:
            raise InputError(f"{file}: {key} is {value!r}; expected {_describe(hints[name])}") from None
    return cls(**kwargs)


# ------------------------------------------------------------------ values in range
def _validate(cfg: Config, where: str) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise InputError(f"{where}: {message}")

    need(bool(cfg.data.datasets), "data.datasets must list at least one of " + ", ".join(DATASETS))
    n = cfg.data.nihx.normal_count
    need(n == "auto" or n >= 0, f"data.nihx.normal_count is {n!r}; expected 'auto' or an integer >= 0")
    from multimix.data import difficulty  # the named levels live beside the calibration they read

    for task in difficulty.TASKS:
        difficulty.resolve(task, getattr(cfg.synth.difficulty, task))  # one-line error when out of range
    need(cfg.harmonise.workers >= 1 and cfg.preprocess.workers >= 1,
         "harmonise.workers and preprocess.workers must be >= 1")
    pp = cfg.preprocess
    need(16 <= pp.size <= 4096, f"preprocess.size is {pp.size!r}; expected an integer in 16..4096")
    lo, hi = pp.clip_percentiles
    need(0 <= lo < hi <= 100, f"preprocess.clip_percentiles is {[lo, hi]}; expected 0 <= low < high <= 100")
    for name in ("segmentation_sizes", "classification_sizes"):
        for size in getattr(cfg.split, name):
            need(size == "full" or size > 0, f"split.{name} has {size!r}; expected positive integers or 'full'")
    need(cfg.cluster.trainings_per_gpu >= 1,
         f"cluster.trainings_per_gpu is {cfg.cluster.trainings_per_gpu!r}; expected an integer >= 1")
    for kind in ("gpu_jobs", "cpu_jobs"):
        jobs = getattr(cfg.cluster, kind)
        need(jobs.gpus >= 0 and jobs.cpus >= 1 and jobs.mem_mb >= 1 and jobs.runtime_min >= 1,
             f"cluster.{kind}: expected gpus >= 0 and cpus, mem_mb, runtime_min >= 1, got {jobs}")
    tc = cfg.train
    for name in ("epochs", "steps_per_epoch", "batch_size", "lr_step_epochs", "strong_max_ops"):
        need(getattr(tc, name) >= 1, f"train.{name} is {getattr(tc, name)!r}; expected an integer >= 1")
    for name in ("threads", "num_workers", "figures"):
        need(getattr(tc, name) >= 0, f"train.{name} is {getattr(tc, name)!r}; expected an integer >= 0")
    need(tc.lr > 0, f"train.lr is {tc.lr!r}; expected a number > 0")
    need(0 < tc.lr_gamma <= 1, f"train.lr_gamma is {tc.lr_gamma!r}; expected a number in (0, 1]")
    need(0 < cfg.split.chexlocalize_val < 1, "split.chexlocalize_val: a share in (0, 1) expected")
    validate_study(cfg, where)  # the study's groups, then each method's own checks


def config_from_dict(raw: Any, where: str = "params.yaml") -> Config:
    """A checked Config from an already parsed mapping (Snakemake's `config`)."""
    cfg = _build(Config, raw, where)  # unknown top-level sections are errors too
    _validate(cfg, where)
    return cfg


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: parameter file not found (expected the project's params.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})".splitlines()[0]) from None
    return config_from_dict(raw, str(path))


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (for logging and receipts)."""
    return dataclasses.asdict(cfg)
