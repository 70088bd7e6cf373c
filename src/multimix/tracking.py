"""MLflow plumbing: where the store is, and what identifies a run's code and data."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path


def project_root(start: Path | None = None) -> Path:
    """The project folder, also from inside a DVC experiment's temporary copy
    (`<repo>/.dvc/tmp/exps/…`), so every run lands in the same store."""
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i] == ".dvc" and parts[i + 1] == "tmp":
            return Path(*parts[:i])
    return here


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else an absolute sqlite store in the project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def use_experiment(name: str) -> None:
    """Point MLflow at the store and experiment `name`, created if missing. A new experiment in a
    local sqlite store gets an absolute artifact folder beside the database: MLflow's default
    (`./mlartifacts`, relative to where the run happens) would scatter artifacts into DVC
    experiments' temporary copies."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    for attempt in range(5):
        # Several trainings starting at once race to create the experiment (sqlite: its tables
        # too); the losers find it made and go on.
        try:
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                artifacts = None
                if uri.startswith("sqlite:///"):
                    artifacts = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
                try:
                    mlflow.create_experiment(name, artifact_location=artifacts)
                except Exception:
                    pass  # made by another process meanwhile (checked below)
                experiment = mlflow.get_experiment_by_name(name)
            # By id: MLflow's set_experiment(name), when it loses that race, returns without making
            # the experiment active, and the run lands in "Default" (found by tests/test_cluster.py).
            mlflow.set_experiment(experiment_id=experiment.experiment_id)
            return
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)


def git_commit(root: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or project_root(), capture_output=True,
                             text=True, timeout=10)
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root or project_root(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "") if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()


def source_digest() -> str:
    """Digest of the package's own source: a changed method must not resume an old checkpoint."""
    package = Path(__file__).resolve().parent
    return file_digest(sorted(package.rglob("*.py")))


def end_abandoned_run(run_id: str) -> None:
    """Mark a run killed (SIGKILL, power loss) and never to be resumed as KILLED, not RUNNING forever."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED")
    except Exception:
        pass  # not in this store (another MLFLOW_TRACKING_URI): nothing to mend


def log_inputs(files: dict, spec) -> None:
    """Record the data a run reads as MLflow dataset inputs (the runs table's Dataset column): the
    split file and the sources' HDF5, each by its content digest, tagged with the run's subset."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    subset = ", ".join(f"{k} {v}" for k, v in (("segmentation labels", spec.segmentation_labels),
                                                ("classification labels", spec.classification_labels),
                                                ("repeat", spec.repeat)) if v is not None)
    for path, digest in files.items():
        with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways" (both local)
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(Path(path).resolve()))
        dataset = MetaDataset(source=source, name=Path(path).name, digest=digest[:16])
        mlflow.log_input(dataset, context="training", tags={"subset": subset} if subset else None)
