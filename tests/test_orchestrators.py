"""The pipeline under the real orchestrators, with faults injected: every fault leaves a usable state.

Each test builds a tiny project (git + DVC, the real dvc.yaml and workflow/, the
package source linked in) and drives `dvc repro`, `dvc exp run` and `snakemake`
as a user would: a forced rerun of a finished training, a SIGKILL in the middle
of one, and raw files changed by hand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_COUNTS
from projects import BIN, ROOT, copy_project, make_project, sh

RUN = "enc-c2-r0"

# Whole pipelines under the real orchestrators: minutes each (about 2 on 2 idle cores), more on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path)


def run_folder(project: Path, run: str = RUN) -> Path:
    return project / "data" / "runs" / run


def assert_complete_run(project: Path, run: str = RUN, epochs: int = 3) -> None:
    """best.pt, history, metrics and figures present and from one training."""
    folder = run_folder(project, run)
    best = torch.load(folder / "best.pt", weights_only=True)
    last = torch.load(project / "data" / "checkpoints" / run / "last.pt", weights_only=True)
    metrics = json.loads((folder / "metrics.json").read_text())
    history = (folder / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + epochs and metrics["epochs_done"] == epochs
    assert best["epoch"] == metrics["best_epoch"] == last["best"]["epoch"]
    assert all(torch.equal(best["model"][k], last["best_weights"]["model"][k]) for k in best["model"])
    assert list((folder / "figures").glob("*.png"))


def mlflow_statuses(project: Path, run: str = RUN) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("orchestrated")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run}'")
    return [r.info.status for r in runs]


def find_process(fragment: str, folder: Path, deadline: float) -> int:
    """PID of the process in `folder` whose command line contains `fragment` (tests run in
    parallel: another test may train a run of the same name in its own folder)."""
    while time.time() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    cwd = os.readlink(entry / "cwd")
                except OSError:
                    continue
                if fragment in cmdline and "python" in cmdline and Path(cwd) == folder:
                    return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no process running {fragment!r}")


def kill_during_training(project: Path, command: list[str], epochs: int) -> subprocess.Popen:
    """Start an orchestrator, SIGKILL the training process after its first epoch's checkpoint."""
    proc = subprocess.Popen(command, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    pid = find_process(f"train --run {RUN}", project.resolve(), deadline)
    log = project / "data" / "logs" / "train" / f"{RUN}.log"
    while f"epoch 1/{epochs}:" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline and proc.poll() is None, f"training never logged its first epoch in {log}"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=600)
    assert proc.returncode != 0, "the orchestrator finished although its training was killed"
    return proc


@pytest.mark.xdist_group("finished_project")  # the session's finished project
@pytest.mark.heavy
def test_forced_dvc_rerun_and_a_second_fresh_project_write_the_same_dvc_lock(tmp_path, finished_dvc_project):
    """`dvc repro -f` deletes best.pt but not last.pt; the rerun must still end with a complete run.
    Every output DVC records is a pure function of the inputs (no timings, run ids or dates): the
    forced rerun and a second fresh project write the same dvc.lock as the first."""
    locks = [(finished_dvc_project / "dvc.lock").read_text()]
    (tmp_path / "second").mkdir()
    fresh = make_project(tmp_path / "second")
    sh(fresh, "dvc", "repro", "-q")
    locks.append((fresh / "dvc.lock").read_text())
    (tmp_path / "first").mkdir()
    project = copy_project(finished_dvc_project, tmp_path / "first")
    assert_complete_run(project)
    sh(project, "dvc", "repro", "-f", "-q", "-s", "train-classification@enc-2-0")
    assert_complete_run(project)
    assert set(mlflow_statuses(project)) == {"FINISHED"}
    sh(project, "dvc", "repro", "-q")  # evaluate and report follow the rerun
    status = sh(project, "dvc", "status").stdout
    assert status.split() == ["acquire:", "always", "changed"], status  # it re-fingerprints raw files, by design
    locks.append((project / "dvc.lock").read_text())
    assert locks[0] == locks[1] == locks[2]


@pytest.mark.xdist_group("finished_project")  # the session's finished project
@pytest.mark.heavy
def test_dvc_exp_run_after_a_kill_resumes_and_shows_metrics(tmp_path, finished_dvc_project):
    project = copy_project(finished_dvc_project, tmp_path)  # a finished, committed baseline run
    command = [str(BIN / "dvc"), "exp", "run", "-S", "train.epochs=4", "-S", "train.steps_per_epoch=10"]
    kill_during_training(project, command, epochs=4)
    assert "RUNNING" in mlflow_statuses(project)  # SIGKILL leaves no chance to record anything
    result = sh(project, "dvc", "exp", "run", "-S", "train.epochs=4", "-S", "train.steps_per_epoch=10")
    log = (project / "data" / "logs" / "train" / f"{RUN}.log").read_text()
    assert "resuming after epoch" in log, log
    assert_complete_run(project, epochs=4)
    assert "RUNNING" not in mlflow_statuses(project), result.stdout
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json").stdout)
    values = json.dumps(shown)
    assert '"accuracy"' in values and "enc-c2" in values  # the study's metrics, not "!"


@pytest.mark.heavy
def test_snakemake_forcerun_of_a_finished_training(project):
    sh(project, "snakemake", "--cores", "2")
    assert_complete_run(project)
    sh(project, "snakemake", "--cores", "2", "--forcerun", "train")
    assert_complete_run(project)
    assert set(mlflow_statuses(project)) == {"FINISHED"}
    dry = sh(project, "snakemake", "--cores", "1", "-n").stdout
    assert "Nothing to be done" in dry, dry


@pytest.mark.heavy
def test_snakemake_rerun_after_a_kill(project):
    sh(project, "snakemake", "--cores", "1", "data/splits/splits.json")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(epochs=4, steps_per_epoch=10)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    kill_during_training(project, [str(BIN / "snakemake"), "--cores", "1"], epochs=4)
    sh(project, "snakemake", "--cores", "1")
    assert_complete_run(project, epochs=4)
    assert "RUNNING" not in mlflow_statuses(project)


def _local_raw(project: Path) -> None:
    """Turn the tiny project into one with hand-placed files (data.source: local)."""
    sh(project, "multimix", "-q", "synth")
    (project / "data" / "raw" / ".synthetic.json").unlink()  # now they are "real" files
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["source"] = "local"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _truncate_a_chex_image(project: Path) -> Path:
    image = sorted((project / "data" / "raw" / "chex").rglob("*.jpeg"))[0]
    image.write_bytes(image.read_bytes()[:2000])
    return image


def test_dvc_sees_a_raw_file_truncated_by_hand(project):
    _local_raw(project)
    sh(project, "dvc", "repro", "-q", "harmonise")

    def reran_harmonise() -> bool:  # acquire always runs (it re-fingerprints); harmonise only on a change
        out = sh(project, "dvc", "repro", "harmonise").stdout
        assert "Running stage 'acquire'" in out, out
        return "Running stage 'harmonise'" in out

    assert not reran_harmonise()
    image = _truncate_a_chex_image(project)
    assert reran_harmonise()
    rejected = (project / "data" / "interim" / "rejected.csv").read_text()
    assert image.name in rejected, rejected
    assert not reran_harmonise()


def test_snakemake_sees_a_raw_file_truncated_by_hand(project):
    _local_raw(project)
    target = "data/interim/manifest.csv"
    sh(project, "snakemake", "--cores", "1", target)
    assert "Nothing to be done" in sh(project, "snakemake", "--cores", "1", "-n", target).stdout
    image = _truncate_a_chex_image(project)
    dry = sh(project, "snakemake", "--cores", "1", "-n", target).stdout
    assert "harmonise" in dry and "acquire" in dry, dry
    sh(project, "snakemake", "--cores", "1", target)
    assert image.name in (project / "data" / "interim" / "rejected.csv").read_text()
    assert "Nothing to be done" in sh(project, "snakemake", "--cores", "1", "-n", target).stdout


@pytest.mark.heavy
def test_a_tiny_seed003_study_under_snakemake(tmp_path):
    """Seed 003 on phantom CCX (studies/seed003-synthetic.yaml at CI size): PPAU-Net-KLTV and
    APPAU-Net-KLTV through `snakemake`, and reports/seed003.md with both models' rows (segmentation,
    and APPAU-Net's three-class scores). DVC runs the same commands on the same inputs: its graph of
    this study equals Snakemake's (test_pipeline_graphs); one real run here keeps CI within its time."""
    params = yaml.safe_load((ROOT / "studies" / "seed003-synthetic.yaml").read_text())
    params["synth"]["counts"] = TINY_COUNTS
    params["harmonise"]["workers"] = 1
    params["preprocess"].update(size=64, workers=1)
    params["split"].update(segmentation_sizes=[2, "full"], repeats=[0])
    params["study"]["segmentation_labels"] = [2]
    params["train"].update(epochs=2, steps_per_epoch=2, batch_size=2, figures=1)
    folder = make_project(tmp_path)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(folder, "snakemake", "--cores", "2", "--quiet")
    table = (folder / "reports" / "seed003.md").read_text()
    assert "Seed 003 — segmentors and APPAU-Net on ccx" in table
    rows = [line.split(" | ")[2] for line in table.splitlines() if line.startswith(("| ppaunet_kltv", "| appaunet_kltv"))]
    assert rows == ["ours", "paper", "ours", "paper"], table  # each of ours, then seed 003's Table 1 / 2 row
    metrics = json.loads((folder / "data" / "eval" / "appaunet_kltv-s2-r0" / "metrics.json").read_text())
    assert set(metrics) == {"ccx", "ccx_classification"} and "f1_2" in metrics["ccx_classification"]
    assert "Nothing to be done" in sh(folder, "snakemake", "--cores", "2", "-n").stdout


CHEXSEG_TINY = {"chexpert": {"train": 6, "valid": 3}, "chexlocalize": {"val": 4, "test": 3}}


@pytest.mark.heavy
def test_a_tiny_chexseg_p_sweep_under_dvc(tmp_path):
    """Seed 004 on pathology phantoms (studies/chexseg-synthetic.yaml at CI size): classifiers,
    Grad-CAM pseudo-labels, a p-sweep and a distillation pair through `dvc repro`, and
    reports/chexseg.md with mIoU per p beside the paper's. Snakemake runs the same commands on the
    same inputs: its graph of this study equals DVC's (test_pipeline_graphs); the two gave identical
    weights and scores when run for real (docs/results.md, "Seed 004 on phantoms")."""
    params = yaml.safe_load((ROOT / "studies" / "chexseg-synthetic.yaml").read_text())
    params["synth"]["counts"] = CHEXSEG_TINY
    params["harmonise"]["workers"] = 1
    params["preprocess"].update(size=32, workers=1)
    params["seed004"]["subsets"].update(pseudo_labelled=3, trials=[0], unlabelled=[0.5])
    # one classifier (ResNet18: Grad-CAM source and encoder init) keeps CI within its time; the study
    # file's DenseNet121 is the same stage with another --classifier
    params["study"]["chexseg"].update(classifiers=["resnet18"], cam=["resnet18"], p=[0, 1], trials=[0])
    params["train"].update(epochs=2, steps_per_epoch=2, figures=1)
    params["seed004"].update(classifier_batch=4, segmentation_batch=2, bootstrap=50)
    folder = make_project(tmp_path)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(folder, "dvc", "repro", "-q")
    table = (folder / "reports" / "chexseg.md").read_text()
    rows = [line.split(" | ")[:2] for line in table.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert rows == [["| 0", "ours"], ["| 0", "paper (CAM)"], ["| 1", "ours"], ["| 1", "paper (CAM)"]], table
    assert "| student_classifier-u0.5 |" in table and "| resnet18 | mean |" in table
    assert (folder / "reports" / "figures" / "chexseg_p_sweep.png").is_file()
    info = json.loads((folder / "data" / "pseudo" / "pseudo_labels.json").read_text())
    assert info["images"] == 3 and "quality_vs_phantom_truth" in info  # phantoms: scored against the truth
    for run in ("pathology_resnet18", "chexseg_classifier-p0-t0", "student_classifier-u0.5"):
        assert list((folder / "data" / "runs" / run / "figures").glob("*.png")), run
        metrics = json.loads((folder / "data" / "eval" / run / "metrics.json").read_text())
        assert ("mean_auc" if run.startswith("pathology") else "mIoU") in metrics, run
    status = sh(folder, "dvc", "status").stdout
    assert status.split() == ["acquire:", "always", "changed"], status
