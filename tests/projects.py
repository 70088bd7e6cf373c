"""The tiny project the orchestrator and cluster tests drive: git + DVC, the real dvc.yaml and
workflow/, the package source linked in, params.yaml at CI size."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import TINY_COUNTS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synth"]["counts"] = TINY_COUNTS
    params["synth"]["difficulty"] = {"segmentation": "easy", "classification": "easy"}  # learns in a few steps
    params["harmonise"]["workers"] = 1
    params["preprocess"].update(size=64, workers=1)
    params["split"].update(segmentation_sizes=[1, "full"], classification_sizes=[2, "full"], repeats=[0])
    params["study"] = {"name": "orchestrated", "repeats": [0],
                       "presets": {"segmentation": ["unet"], "classification": ["enc"], "multitask": []},
                       "segmentation_labels": [1], "classification_labels": [2], "multitask_labels": [],
                       "chexseg": params["study"]["chexseg"]}  # (empty: dvc.yaml's seed-004 matrices need the keys)
    # threads: the cluster test's SLURM jobs ask for 2 cores and must give the local run's bytes; torch's
    # default (every core) would make the local run's rounding depend on the machine's core count
    params["train"].update(epochs=3, steps_per_epoch=2, batch_size=2, figures=1, threads=2)
    return params


def sh(project: Path, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    tool = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    result = subprocess.run([tool, *args[1:]], cwd=project, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_project(tmp_path) -> Path:
    """The tiny project: git + DVC, the real pipeline files, the package source linked in."""
    folder = tmp_path / "project"
    folder.mkdir()
    for name in ("dvc.yaml", "Snakefile", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "workflow", folder / "workflow")
    os.symlink(ROOT / "src", folder / "src")  # the code dependencies of the stages
    (folder / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    sh(folder, "git", "init", "-q")
    sh(folder, "git", "config", "user.email", "test@example.org")
    sh(folder, "git", "config", "user.name", "test")
    sh(folder, "dvc", "init", "-q")
    sh(folder, "dvc", "config", "core.analytics", "false")  # a test project reports nothing anywhere
    assert sh(folder, "dvc", "config", "core.analytics").stdout.strip() == "false"
    sh(folder, "git", "add", "-A")
    sh(folder, "git", "commit", "-q", "-m", "tiny project")
    return folder


def copy_project(project: Path, folder: Path) -> Path:
    """A copy of a finished project (git, DVC cache, data, checkpoints) with an empty MLflow store:
    the original's store points its artifacts at the original's folder."""
    copy = folder / "project"
    shutil.copytree(project, copy, symlinks=True)
    (copy / "mlflow.db").unlink(missing_ok=True)
    shutil.rmtree(copy / "mlartifacts", ignore_errors=True)
    return copy
