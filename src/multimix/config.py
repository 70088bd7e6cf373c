"""Typed configuration: `params.yaml` -> frozen dataclasses.

`params.yaml` is the single parameter file of the project: DVC reads it for
`params:` dependencies, Snakemake loads it as its configfile, and every
`multimix <stage>` command parses it here. Unknown keys are an error, not a
silent no-op, so a typo can never make a run quietly use a default.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from multimix.errors import InputError

DATASETS = ("jsrt", "chex", "mcu", "nihx")
SOURCES = ("synthetic", "download", "local")


@dataclass(frozen=True)
class NihxConfig:
    # Number of "No Finding" images drawn for NIHX. "auto" keeps the paper's
    # ratio 2754:1431 to the Pneumonia rows: exactly 2,754 on the real label file.
    normal_count: int | str = "auto"
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"
    raw_dir: str = "data/raw"
    interim_dir: str = "data/interim"
    datasets: tuple[str, ...] = DATASETS
    nihx: NihxConfig = field(default_factory=NihxConfig)


@dataclass(frozen=True)
class SynthConfig:
    preset: str = "small"  # small | paper
    seed: int = 0
    # Per-source overrides of the preset's counts, e.g. {"jsrt": 20}.
    counts: dict[str, Any] = field(default_factory=dict)


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
    aspect: str = "squash"  # squash (as the paper) | pad (letterbox to a square)
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    processed_dir: str = "data/processed"
    workers: int = 2


@dataclass(frozen=True)
class SplitConfig:
    split_dir: str = "data/splits"
    seed: int = 0  # train/val/test partition
    segmentation_dataset: str = "jsrt"  # in-domain training sources of the paper
    classification_dataset: str = "chex"
    # Labelled-subset sizes of the paper (section 3.2); "full" = the whole training pool.
    segmentation_sizes: tuple[int | str, ...] = (10, 50, "full")
    classification_sizes: tuple[int | str, ...] = (100, 1000, "full")
    repeats: tuple[int, ...] = (0, 1, 2, 3, 4)  # one subset draw per repeat seed


@dataclass(frozen=True)
class LossConfig:
    threshold: float = 0.7  # t: pseudo-label confidence
    lambda_u: float = 0.25  # λ: unlabelled classification weight
    alpha: float = 5.0  # α: Dice weight
    beta: float = 0.01  # β: segmentation consistency weight


@dataclass(frozen=True)
class MixMatchConfig:
    augmentations: int = 2  # K
    temperature: float = 0.5  # T
    alpha: float = 0.75  # Beta(α, α) for MixUp
    lambda_u: float = 75.0
    rampup_epochs: int = 4  # λ_u ramps up linearly over these epochs


@dataclass(frozen=True)
class TrainConfig:
    study: str = "multimix"  # MLflow experiment name
    runs_dir: str = "data/runs"
    epochs: int = 24
    steps_per_epoch: int | None = None  # None: batches in the largest stream the preset uses
    batch_size: int = 10  # per stream
    lr: float = 1e-4
    lr_step_epochs: int = 8
    lr_gamma: float = 0.1
    strong_max_ops: int = 3
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    num_workers: int = 0  # DataLoader workers per stream
    figures: int = 4  # validation images drawn into saliency/mask figures
    loss: LossConfig = field(default_factory=LossConfig)
    mixmatch: MixMatchConfig = field(default_factory=MixMatchConfig)
    # name -> {preset, segmentation_labels, classification_labels, repeat}
    runs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateConfig:
    dir: str = "data/eval"


@dataclass(frozen=True)
class ReportConfig:
    dir: str = "reports"


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    harmonise: HarmoniseConfig = field(default_factory=HarmoniseConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

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


def _build(cls: type, raw: Any, file: str, section: str = "") -> Any:
    """Build dataclass `cls` from a mapping, recursing into nested dataclasses."""
    where = f"{file}: {section}" if section else file
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; expected one of {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in raw.items():
        hint, key = hints[name], f"{section}.{name}" if section else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, file, key)
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, (list, tuple)):
                raise InputError(f"{file}: {key}: expected a list, got {value!r}")
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _validate(cfg: Config, where: str) -> None:
    if cfg.data.source not in SOURCES:
        raise InputError(f"{where}: data.source is {cfg.data.source!r}; expected one of {', '.join(SOURCES)}")
    bad = [d for d in cfg.data.datasets if d not in DATASETS]
    if bad or not cfg.data.datasets:
        raise InputError(f"{where}: data.datasets must list some of {', '.join(DATASETS)}; got {list(cfg.data.datasets)}")
    n = cfg.data.nihx.normal_count
    if not (n == "auto" or (isinstance(n, int) and n >= 0)):
        raise InputError(f"{where}: data.nihx.normal_count must be 'auto' or a non-negative integer; got {n!r}")
    if cfg.synth.preset not in ("small", "paper"):
        raise InputError(f"{where}: synth.preset is {cfg.synth.preset!r}; expected small or paper")
    if cfg.harmonise.workers < 1 or cfg.preprocess.workers < 1:
        raise InputError(f"{where}: harmonise.workers and preprocess.workers must be >= 1")
    pp = cfg.preprocess
    if not (isinstance(pp.size, int) and 16 <= pp.size <= 4096):
        raise InputError(f"{where}: preprocess.size must be an integer in 16..4096; got {pp.size!r}")
    if pp.aspect not in ("squash", "pad"):
        raise InputError(f"{where}: preprocess.aspect is {pp.aspect!r}; expected squash or pad")
    lo, hi = pp.clip_percentiles
    if not 0 <= lo < hi <= 100:
        raise InputError(f"{where}: preprocess.clip_percentiles must be two numbers 0 <= low < high <= 100")
    for name in ("segmentation_sizes", "classification_sizes"):
        for size in getattr(cfg.split, name):
            if not (size == "full" or (isinstance(size, int) and size > 0)):
                raise InputError(f"{where}: split.{name} entries must be positive integers or 'full'; got {size!r}")


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: parameter file not found (expected the project's params.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})".splitlines()[0]) from None
    cfg = _build(Config, raw, str(path))  # unknown top-level sections are errors too
    _validate(cfg, str(path))
    return cfg


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (for logging and receipts)."""
    return dataclasses.asdict(cfg)
