"""MLflow's UI as its users open it, in a real browser: headless Chromium on the runs table of a
finished tiny project (`#/experiments/<id>/runs`; MLflow 3 lands on a GenAI overview). The table
must list the study's runs with their key metrics; the screenshot is kept in the test's folder
(docs/predict.md, "The runs table", says where to look). Chromium from Debian (.ci/run installs
it); without it the test skips with one line (and fails under CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import services

pytestmark = [pytest.mark.slow]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        services.unavailable("chromium not installed (Debian package chromium; .ci/run installs it)")
    return found


def test_the_runs_table_lists_the_study_runs_with_their_metrics(finished_dvc_project, tmp_path):
    browser = chromium()
    import mlflow

    store = f"sqlite:///{finished_dvc_project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("orchestrated")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], "tags.kind != 'report'")}
    assert {"unet-s1-r0", "enc-c2-r0"} <= set(runs)
    # the runs' records hold what the table shows: key metrics, the dataset inputs, the model
    assert all("best_val_score" in r.data.metrics for r in runs.values())
    assert all(r.inputs.dataset_inputs for r in runs.values())
    port = services.free_port()
    log = tmp_path / "ui.log"
    server = subprocess.Popen(["mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs"
    try:
        services.wait_for(lambda: services.request(f"http://127.0.0.1:{port}/health")[0] == 200, "mlflow server",
                          timeout=180, log=log, process=server)
        profile = tmp_path / "profile"
        common = [browser, *FLAGS, f"--user-data-dir={profile}", "--window-size=1600,1000",
                  "--virtual-time-budget=20000"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
        shot = tmp_path / "runs_table.png"
        subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=180)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    for name in runs:  # every run of the study is a row of the table
        assert name in dom, f"{name} not in the runs table ({len(dom)} characters of DOM)"
    assert "best_val_score" in dom or "val_score" in dom, "no metric column in the runs table"
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"screenshot: {shot}")


def test_the_ui_page_docs_point_at_the_runs_table():
    text = (Path(__file__).resolve().parents[1] / "docs" / "predict.md").read_text()
    assert "#/experiments/<id>/runs" in text
