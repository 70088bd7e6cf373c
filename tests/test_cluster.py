"""The paper's study as a lab runs it on a cluster, on this machine (tests/services.py):

* processed data from a DVC remote: pushed once from a finished local run, pulled by a fresh clone
  and byte-identical there;
* Snakemake on a real SLURM cluster with accounting (slurmdbd): trainings and evaluations as sbatch
  jobs asking for a GPU, job states from sacct, outputs identical to the local run's;
* a shared MLflow server on PostgreSQL behind MLflow's basic-auth app: several trainings log to it
  at once with a lab user's credentials from the environment, every run complete, and `multimix
  compare` reads it (tests/test_tracking_server.py: who may do what there).

These start their services themselves and stop them by PID. Without the Debian packages they skip
with one line saying what is missing; under CI they fail instead (`.ci/run` installs them).
"""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import services
from projects import copy_project, sh

# in the xdist worker that holds the session's finished tiny project (pyproject.toml)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800), pytest.mark.xdist_group("finished_project")]

DATA_STAGES = ["acquire", "harmonise", "preprocess", "split"]
RUNS = ["unet-s1-r0", "enc-c2-r0"]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """An MLflow server with a PostgreSQL backend store, on loopback, behind basic auth, and a
    lab user's environment (URI and credentials) for this module's tests."""
    folder = tmp_path_factory.mktemp("tracking")
    with services.postgres(folder / "postgres", also=("mlflow_auth",)) as database, \
            services.mlflow_server(folder, database, auth_uri=database.rsplit("/", 1)[0] + "/mlflow_auth") as server:
        user = services.add_mlflow_user(server, "lab")
        yield server.env(user)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, finished_dvc_project):
    """A finished local run with a DVC remote (a folder, as a lab's NFS or S3 bucket), pushed."""
    folder = tmp_path_factory.mktemp("lab")
    project = copy_project(finished_dvc_project, folder)
    sh(project, "dvc", "remote", "add", "-d", "lab", str(folder / "remote"))
    sh(project, "git", "commit", "-q", "-am", "the lab's DVC remote")
    sh(project, "dvc", "push", "-q")
    return project


def outputs(project: Path, stages: list[str] | None = None) -> list[str]:
    """Paths of the outputs dvc.lock records, of the stages named (or of all)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return sorted(out["path"] for name, stage in lock.items()
                  if stages is None or name.split("@")[0] in stages for out in stage.get("outs", []))


def assert_same_files(a: Path, b: Path, paths: list[str]) -> None:
    for path in paths:
        left, right = a / path, b / path
        assert right.exists(), f"{path} missing in {b}"
        if left.is_dir():
            compared = filecmp.dircmp(left, right, ignore=[*filecmp.DEFAULT_IGNORES, ".snakemake_timestamp"])
            assert not (compared.left_only or compared.right_only or compared.diff_files), (path, compared.report())
            for name in compared.common_files:
                assert filecmp.cmp(left / name, right / name, shallow=False), f"{path}/{name} differs"
        else:
            assert filecmp.cmp(left, right, shallow=False), f"{path} differs from the local run's"


def test_a_fresh_clone_pulls_every_output_from_the_dvc_remote(tmp_path, lab):
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(lab), str(clone))
    sh(clone, "dvc", "pull", "-q")
    paths = [p for p in outputs(lab) if not p.endswith("figures")]  # figures: not cached (cache: false)
    assert_same_files(lab, clone, paths)
    status = sh(clone, "dvc", "status").stdout.split()
    assert status[:3] == ["acquire:", "always", "changed"] and "modified:" not in status, status
    assert "Running stage 'harmonise'" not in sh(clone, "dvc", "repro", "harmonise").stdout


def test_the_study_on_slurm_with_data_from_the_remote_matches_the_local_run(tmp_path, lab, tracking, monkeypatch):
    """The lab's three commands: clone, `dvc pull` the data, Snakemake on SLURM for the GPU work;
    with two trainings per GPU (cluster.trainings_per_gpu = 2): Snakemake groups the two trainings
    into one sbatch job that asks for one GPU and both trainings' cores, and they give the weights
    of the local (ungrouped) run."""
    with services.slurm_cluster(tmp_path / "slurm") as cluster:
        clone = tmp_path / "clone"
        sh(tmp_path, "git", "clone", "-q", str(lab), str(clone))
        sh(clone, "dvc", "pull", "-q", *DATA_STAGES)
        assert_same_files(lab, clone, outputs(lab, DATA_STAGES))
        # the phantoms' raw files (the lesion masks that evaluate scores saliency against) are not
        # DVC outputs: the synthetic source writes them again, with the same receipt
        sh(clone, "multimix", "-q", "acquire")
        assert_same_files(lab, clone, ["data/raw/acquired.json"])
        params = yaml.safe_load((clone / "params.yaml").read_text())
        # one (declared) GPU; the jobs ask for what the local run used (2 cores), so the group of
        # two trainings asks for 4 (the test cluster declares at least 4 CPUs)
        params["cluster"] = {"gpu_jobs": {"gpus": 1, "cpus": 2, "mem_mb": 1000, "runtime_min": 30},
                             "cpu_jobs": {"gpus": 0, "cpus": 1, "mem_mb": 1000, "runtime_min": 30},
                             "trainings_per_gpu": 2}
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = tracking
        command = ["snakemake", "--workflow-profile", "workflow/profiles/slurm",
                   "--allowed-rules", "train", "evaluate", "report",
                   "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2"]
        # Snakemake takes job grouping from its command line only: without it, one line and no job
        refused = sh(clone, *command, check=False, env=env)
        assert refused.returncode != 0 and "multimix: error: params.yaml: cluster.trainings_per_gpu = 2 needs " \
            "`--group-components trainings=2` on the snakemake command line" in refused.stderr, refused.stderr
        result = sh(clone, *command, "--group-components", "trainings=2", env=env)
        accounted = cluster.sacct()
        print(cluster.squeue(), accounted, sep="\n")  # (shown with pytest -s)
    jobs = [line.split() for line in accounted.splitlines()[2:] if line.strip()]
    assert len(jobs) == 4, accounted + result.stderr  # one job for both trainings, two evaluations, the report
    assert all("COMPLETED" in job for job in jobs), accounted
    singles = {f"rule_evaluate_wildcards_{run}": "cpu=2" for run in RUNS} | {"rule_report": "cpu=1"}
    by_comment = {job[1]: job for job in jobs if job[1] in singles}
    assert set(by_comment) == set(singles), accounted
    (group,) = [job for job in jobs if job[1] not in singles]  # the trainings' job
    assert "gres/gpu=1" in group[-1] and "cpu=4" in group[-1], accounted  # one GPU, the two trainings' cores
    for comment, cores in singles.items():  # an evaluation: one GPU, two cores; the report: one core
        job = by_comment[comment]
        assert cores in job[-1] and ("gres/gpu=1" in job[-1]) == (comment != "rule_report"), accounted
    local = outputs(lab, ["train-segmentation", "train-classification", "evaluate-segmentation",
                          "evaluate-classification", "report"])
    assert_same_files(lab, clone, local)  # weights, scores, tables and figures: as the local run's
    assert not (clone / "mlflow.db").exists()  # everything went to the server
    import mlflow

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, tracking[name])
    client = mlflow.MlflowClient(tracking_uri=tracking["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("orchestrated")
    finished = {r.info.run_name: r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert {finished.get(run) for run in RUNS} == {"FINISHED"}, finished


@pytest.mark.heavy
def test_concurrent_trainings_log_every_run_to_a_shared_mlflow_server(tmp_path, lab, tracking, monkeypatch):
    """Four trainings at once against one server (PostgreSQL store): no lost or half-written run."""
    project = copy_project(lab, tmp_path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["study"]["name"] = "concurrent"
    params["study"]["presets"] = {"segmentation": ["unet"], "classification": ["enc"], "multitask": ["multimix"]}
    params["study"]["multitask_labels"] = [{"segmentation": 1, "classification": 2}]
    params["study"]["segmentation_labels"] = [1, "full"]
    params["train"].update(threads=1)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    runs = ["unet-s1-r0", "unet-sfull-r0", "enc-c2-r0", "multimix-s1-c2-r0"]
    shutil.rmtree(project / "data" / "runs")
    shutil.rmtree(project / "data" / "checkpoints")
    env = tracking
    procs = [subprocess.Popen([shutil.which("multimix") or "multimix", "-q", "train", "--run", run],
                              cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for run in runs]
    logs = [proc.communicate(timeout=900)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), "\n".join(logs)
    import mlflow

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, tracking[name])
    client = mlflow.MlflowClient(tracking_uri=tracking["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("concurrent")
    found = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in found) == sorted(runs)  # one experiment, one record per run
    # (MLflow's own set_experiment, racing to create it, once let a run land in "Default")
    assert not client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    epochs, steps = params["train"]["epochs"], params["train"]["steps_per_epoch"]
    for run in found:
        assert run.info.status == "FINISHED", run.info.run_name
        history = client.get_metric_history(run.info.run_id, "val_score")
        assert sorted(m.step for m in history) == [(e + 1) * steps for e in range(epochs)], run.info.run_name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "config.json" in artifacts and run.data.tags["model_uri"].startswith("models:/"), run.info.run_name
        local = json.loads((project / "data" / "runs" / run.info.run_name / "metrics.json").read_text())
        assert run.data.metrics["best_val_score"] == pytest.approx(local["best_val_score"])
    shown = sh(project, "multimix", "compare", "--experiment", "concurrent", env=env).stdout
    assert all(preset in shown for preset in ("unet", "enc", "multimix")), shown

