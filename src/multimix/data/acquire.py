"""`multimix acquire`: the pipeline's first stage — put raw files in place.

`data.source` picks how:
  synthetic  write phantoms with `synth` (the embedded default);
  download   fetch the public archives (`download`), then check the
             registration-only sources (JSRT/SCR) were placed by hand;
  local      use files already under `data/raw/` as they are.

The stage's declared output is a small receipt, `data/raw/acquired.json`,
not the raw folder itself: DVC and Snakemake delete a stage's outputs before
re-running it, and nobody wants hand-placed JSRT files deleted. The receipt
fingerprints every source (content hashes for synthetic data, which is
small and deterministic; path + size + mtime for real data, which is not
small), so `harmonise` re-runs whenever the raw files change.

Raw files can change behind the pipeline's back (a file added, fixed or
truncated by hand), so both orchestrators run this stage every time (DVC:
`always_changed`; Snakemake: the raw tree's state is a parameter of the
rule). It is cheap when nothing changed: synthetic sources whose settings
and files are as last written are not written again, and the receipt is
only rewritten when its content changes, so nothing downstream reruns.

Synthetic data never overwrites real data: `synth` only replaces a source
folder that is empty or that it wrote itself (recorded in
`data/raw/.synthetic.json`), and real-data modes refuse folders that still
hold phantoms.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from multimix.data import download as downloader
from multimix.data import difficulty, layout, synth, synth_chexseg
from multimix.data.acquisition import Level
from multimix.errors import InputError

if TYPE_CHECKING:  # types only: config sits above the data stages
    from multimix.config import Config

RECEIPT = "acquired.json"
OWNERS = ".synthetic.json"


def _owners(raw_dir: Path) -> dict:
    path = raw_dir / OWNERS
    return json.loads(path.read_text()) if path.exists() else {}


def _save_owners(raw_dir: Path, owners: dict) -> None:
    (raw_dir / OWNERS).write_text(json.dumps(owners, indent=2, sort_keys=True) + "\n")


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def fingerprint(root: Path, content: bool) -> dict:
    """Digest of a source folder: file list with sizes, plus content or mtimes."""
    digest = hashlib.sha256()
    files = total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            st = path.stat()
            files += 1
            total += st.st_size
            digest.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0".encode())
            if content:
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
            else:
                digest.update(str(st.st_mtime_ns).encode())
    return {"files": files, "bytes": total, "sha256": digest.hexdigest(), "method": "content" if content else "stat"}


def synth_level(cfg: Config) -> Level:
    """The difficulty numbers the synthetic sources are written at (names resolved through the
    committed calibration, so a recalibration rewrites them)."""
    return Level(**{task: difficulty.resolve(task, getattr(cfg.synth.difficulty, task)) for task in difficulty.TASKS})


def _synth_settings(cfg: Config, counts: dict, dataset: str) -> dict:
    return {"preset": cfg.synth.preset, "seed": cfg.synth.seed, "chex_layout": cfg.synth.chex_layout,
            "difficulty": dataclasses.asdict(synth_level(cfg)), "findings": cfg.synth.findings,
            "counts": counts[dataset],
            "version": synth_chexseg.VERSION if dataset in synth_chexseg.WRITERS else synth.VERSION}


def synthesise(cfg: Config, datasets: list[str] | None = None, show_progress: bool = True,
               reuse: bool = False) -> dict[str, int]:
    """Write synthetic sources; returns images written per source. With `reuse`, a
    source whose settings and files are exactly as last written is left alone."""
    raw = cfg.raw_dir
    raw.mkdir(parents=True, exist_ok=True)
    try:
        counts = synth.resolve_counts(cfg.synth.preset, cfg.synth.counts)
    except ValueError as exc:
        raise InputError(f"params.yaml: {exc}") from None
    owners = _owners(raw)
    written = {}
    for dataset in datasets or list(cfg.data.datasets):
        target = raw / dataset
        if _non_empty(target) and dataset not in owners:
            raise InputError(
                f"{target} holds files that multimix synth did not write; refusing to replace them "
                "(move them away, or set data.source: local to use them)"
            )
        settings = _synth_settings(cfg, counts, dataset)
        owned = owners.get(dataset, {})
        if reuse and owned.get("settings") == settings and owned.get("stat") == fingerprint(target, content=False):
            written[dataset] = 0
            continue
        shutil.rmtree(target, ignore_errors=True)
        owners[dataset] = {"settings": settings}
        _save_owners(raw, owners)  # before writing: a killed run still owns its partial folder
        total = synth.image_count(dataset, counts[dataset])
        with tqdm(total=total, desc=f"synth {dataset}", unit="img", disable=not show_progress) as bar:
            written[dataset] = synth.write_dataset(dataset, target, counts, cfg.synth.seed,
                                                   workers=cfg.harmonise.workers, progress=lambda: bar.update(),
                                                   chex_layout=cfg.synth.chex_layout,
                                                   level=synth_level(cfg), findings=cfg.synth.findings)
        # What was written, to recognise it next time: its stat state (cheap to compare)
        # and its content digest (for the receipt; identical on every machine).
        owners[dataset] |= {"stat": fingerprint(target, content=False), "content": fingerprint(target, content=True)}
        _save_owners(raw, owners)
    return written


def _refuse_phantoms(cfg: Config) -> None:
    owners = _owners(cfg.raw_dir)
    for dataset in cfg.data.datasets:
        if dataset in owners and _non_empty(cfg.raw_dir / dataset):
            raise InputError(
                f"{cfg.raw_dir / dataset} holds synthetic phantoms (written by multimix synth) but data.source is "
                f"{cfg.data.source!r}; delete that folder and put the real files there"
            )


def raw_state(cfg: Config) -> str:
    """What the acquire stage must rerun on besides its parameters: for real data the
    state (paths, sizes, mtimes) of the raw folders; for synthetic data nothing
    (its parameters say what it is). Snakemake gives it to the rule as a parameter."""
    if cfg.data.source == "synthetic":
        return ""
    digest = hashlib.sha256()
    for dataset in cfg.data.datasets:
        digest.update(json.dumps(fingerprint(cfg.raw_dir / dataset, content=False), sort_keys=True).encode())
    return digest.hexdigest()


def acquire(cfg: Config, show_progress: bool = True, log=print) -> dict:
    raw = cfg.raw_dir
    datasets = list(cfg.data.datasets)
    if cfg.data.source == "synthetic":
        synthesise(cfg, datasets, show_progress, reuse=True)
    else:
        _refuse_phantoms(cfg)
        if cfg.data.source == "download":
            report = downloader.download(raw, datasets, allow_unpinned=cfg.download.allow_unpinned,
                                         registry=cfg.download.registry, show_progress=show_progress, log=log)
            for line in report["manual_missing"]:
                log(f"manual step needed — {line}")
        missing = [d for d in datasets if not _non_empty(raw / d)]
        if missing:
            raise InputError(f"{missing[0]}: {raw / missing[0]} is missing or empty; expected "
                             f"{layout.expected(missing[0], raw)}")
    owners = _owners(raw)
    receipt = {
        "source": cfg.data.source,
        "config": dataclasses.asdict(cfg.data) | {"synth": dataclasses.asdict(cfg.synth)
                                              | {"level": dataclasses.asdict(synth_level(cfg))}},
        "datasets": {
            d: {"origin": "synthetic", **owners[d]["content"]} if d in owners and "content" in owners[d]
            else {"origin": "synthetic" if d in owners else "real"} | fingerprint(raw / d, content=d in owners)
            for d in datasets
        },
    }
    text = json.dumps(receipt, indent=2, sort_keys=True) + "\n"
    path = raw / RECEIPT
    if not path.is_file() or path.read_text() != text:  # unchanged: keep its mtime, rerun nothing downstream
        path.write_text(text)
    return receipt
