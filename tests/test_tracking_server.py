"""The lab's tracking server as docs/cluster.md sets it up: `mlflow server --app-name basic-auth` on
PostgreSQL, with a non-default admin password and READ as the default permission.

* a request without credentials gets 401;
* a user without permission on another's experiment can read it but not change it (403);
* training, evaluation, `multimix compare` and `multimix report` work with a user's credentials
  from the environment (MLFLOW_TRACKING_USERNAME / _PASSWORD);
* no credential lands in any file a run writes: artifacts, logs, configs, the server's store.

The services start here and stop by PID (tests/services.py); without PostgreSQL they skip with
one line saying what is missing (under CI they fail: .ci/run installs it).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import services
from test_training import linked_data, tiny_params, tiny_project  # noqa: F401  (module fixture)

# One worker starts the module's PostgreSQL and MLflow server once.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200), pytest.mark.xdist_group("test_tracking_server")]
API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth-server")
    with services.postgres(folder / "postgres", also=("mlflow_auth",)) as database, \
            services.mlflow_server(folder, database, auth_uri=database.rsplit("/", 1)[0] + "/mlflow_auth") as running:
        yield running, folder


def test_the_admin_password_is_not_the_default_and_anonymous_requests_get_401(server):
    running, _ = server
    assert running.admin[1] not in ("password", "password1234", "")
    for path in (f"{API}/experiments/search?max_results=5", "/", f"{API}/runs/search"):
        status, _ = services.request(running.uri + path)
        assert status == 401, path
    status, _ = services.request(running.uri + f"{API}/experiments/search?max_results=5", ("admin", "wrong"))
    assert status == 401
    status, _ = services.request(running.uri + f"{API}/experiments/search?max_results=5", running.admin)
    assert status == 200


def test_a_user_cannot_change_another_users_experiment(server):
    running, _ = server
    alice, bob = services.add_mlflow_user(running, "alice"), services.add_mlflow_user(running, "bob")
    status, body = services.request(running.uri + f"{API}/experiments/create", alice, {"name": "alice-study"})
    assert status == 200, body
    experiment = json.loads(body)["experiment_id"]
    status, body = services.request(running.uri + f"{API}/runs/create", alice, {"experiment_id": experiment})
    assert status == 200, body
    run = json.loads(body)["run"]["info"]["run_id"]
    # bob reads (the default permission) but may not rename, delete or write into alice's study
    status, _ = services.request(running.uri + f"{API}/experiments/get?experiment_id={experiment}", bob)
    assert status == 200
    for path, payload in ((f"{API}/experiments/update", {"experiment_id": experiment, "new_name": "mine"}),
                          (f"{API}/experiments/delete", {"experiment_id": experiment}),
                          (f"{API}/runs/log-metric", {"run_id": run, "key": "dice", "value": 1.0, "timestamp": 0}),
                          (f"{API}/runs/delete", {"run_id": run})):
        status, body = services.request(running.uri + path, bob, payload)
        assert status == 403, (path, status, body)
    status, body = services.request(running.uri + f"{API}/runs/log-metric", alice,
                                    {"run_id": run, "key": "dice", "value": 0.5, "timestamp": 0})
    assert status == 200, body


@pytest.mark.heavy
def test_training_compare_and_report_with_credentials_from_the_environment_leave_no_credential(
        server, tmp_path, tiny_project):
    running, server_folder = server
    user = services.add_mlflow_user(running, "carol")
    project = linked_data(tiny_project, tmp_path / "project")
    tiny_params(project, study={"name": "secured", "repeats": [0], "segmentation_labels": [1],
                                "classification_labels": [2], "multitask_labels": [],
                                "presets": {"segmentation": ["unet"], "classification": ["enc"], "multitask": []}})
    env = running.env(user)
    for command in (["train"], ["evaluate"], ["compare", "--experiment", "secured"], ["report"]):
        done = subprocess.run([sys.executable, "-m", "multimix", "-q", "--log", f"data/logs/{command[0]}.log",
                               *command], cwd=project, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        if command[0] == "compare":
            assert "unet" in done.stdout and "enc" in done.stdout, done.stdout
    assert not (project / "mlflow.db").exists()  # everything went to the server
    # without credentials the same command is refused with a message, not a traceback
    anonymous = {k: v for k, v in env.items() if not k.startswith("MLFLOW_TRACKING_USER") and k != "MLFLOW_TRACKING_PASSWORD"}
    done = subprocess.run([sys.executable, "-m", "multimix", "-q", "compare", "--experiment", "secured"],
                          cwd=project, env=anonymous, capture_output=True, text=True)
    assert done.returncode != 0 and "401" in done.stderr + done.stdout
    secrets = [user[1], running.admin[1], base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()]
    leaks = []
    for root in (project, server_folder / "artifacts", tmp_path):
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                leaks += [f"{path}: {s[:4]}…" for s in secrets if s.encode() in data]
    assert not leaks, leaks
    # the server's own log is the one place the admin password is not (it is in its config file only)
    assert running.admin[1].encode() not in (server_folder / "mlflow-server.log").read_bytes()
    assert os.stat(server_folder / "basic_auth.ini").st_mode & 0o077 == 0  # readable by its owner alone
