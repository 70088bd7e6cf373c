"""Shared fixtures: tiny synthetic sources written once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Two xdist workers, each with OpenMP threads, beside the trainings other tests start as
# subprocesses, oversubscribe two cores; OpenMP's default spin-waiting then burns the cores the
# others need (a fixed-batch loss test: 3.7 s alone, 62 s beside one 2-thread training; 2.6x less
# for the whole file with passive waiting). Set before torch loads its OpenMP runtime; the
# subprocesses the tests start inherit it. Numbers are unchanged: only idle threads sleep sooner.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import yaml

from multimix.config import load_config
from multimix.data.acquire import synthesise

ROOT = Path(__file__).resolve().parents[1]
SHARED_NIH = ROOT.parent / "shared" / "data" / "nih"

TINY_COUNTS = {
    "jsrt": {"nodule": 2, "non_nodule": 2},
    "chex": {"train_normal": 2, "train_pneumonia": 2, "val_normal": 1, "val_pneumonia": 1,
             "test_normal": 1, "test_pneumonia": 1},
    "mcu": {"normal": 1, "tb": 1},
    "nihx": {"pneumonia": 3, "no_finding": 8, "other": 2},
    "shenzhen": {"normal": 1, "tb": 2, "unmasked": 1},
}


def write_params(folder: Path, **sections) -> Path:
    """params.yaml for a test project in `folder`, with absolute data paths."""
    params = {
        "data": {"source": "synthetic", "raw_dir": str(folder / "raw"), "interim_dir": str(folder / "interim")},
        # the easy phantoms: every test that trains needs a model to learn within a few steps
        "synth": {"preset": "small", "seed": 0, "counts": TINY_COUNTS,
                  "difficulty": {"segmentation": "easy", "classification": "easy"}},
        "harmonise": {"workers": 1},
    }
    for key, value in sections.items():
        params.setdefault(key, {}).update(value)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    """A pristine tiny synthetic raw tree (all four sources); copy before mutating."""
    folder = tmp_path_factory.mktemp("tiny")
    cfg = load_config(write_params(folder))
    synthesise(cfg, show_progress=False)
    return folder / "raw"


@pytest.fixture
def project(tmp_path, tiny_raw) -> Path:
    """A writable copy of the tiny raw tree with its own params.yaml."""
    shutil.copytree(tiny_raw, tmp_path / "raw")
    write_params(tmp_path)
    return tmp_path


@pytest.fixture
def shared_nih() -> Path:
    if not (SHARED_NIH / "Data_Entry_2017_v2020.csv.gz").exists():
        pytest.skip("../shared/data/nih is not present")
    return SHARED_NIH


@pytest.fixture(scope="session")
def finished_dvc_project(tmp_path_factory) -> Path:
    """The orchestrator tests' tiny project (tests/projects.py) after a complete local `dvc repro`,
    committed. Shared by several tests: never change it, work on projects.copy_project(...)."""
    from projects import make_project, sh  # (projects imports this module: import it late)

    project = make_project(tmp_path_factory.mktemp("dvc-run"))
    # two threads for every stage (training sets its own, train.threads), as the cluster test's
    # 2-core jobs and Snakemake's `--cores 2` runs give theirs, whatever this machine's core count
    sh(project, "dvc", "repro", "-q", env=dict(os.environ, OMP_NUM_THREADS="2"))
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", "a finished run")
    return project


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end tests first. pytest-xdist hands tests out in collection order (after
    the xdist groups), so a long test collected last would leave one worker idle at the end;
    longest first keeps both workers busy until the suite's last minute."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
