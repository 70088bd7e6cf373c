"""MLflow's UI as its users open it, in a real browser: headless Chromium on the runs table of a
finished tiny project (`#/experiments/<id>/runs`; MLflow 3 lands on a GenAI overview). The table
must list the study's runs with their key metrics; the screenshot is kept in the test's folder
(docs/predict.md, "The runs table", says where to look). Chromium from Debian (.ci/run installs
it); without it the test skips with one line (and fails under CI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import services

# in the xdist worker that holds the session's finished tiny project (pyproject.toml)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("finished_project")]
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
    # the trainings, not the report's run (a filter `tags.kind != 'report'` would drop untagged runs)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("kind") != "report"}
    assert {"unet-s1-r0", "enc-c2-r0"} <= set(runs)
    # the runs' records hold what the table shows: key metrics, the dataset inputs, the model
    assert all("best_val_score" in r.data.metrics for r in runs.values())
    assert all(r.inputs.dataset_inputs for r in runs.values())
    port = services.free_port()
    log = tmp_path / "ui.log"
    server = subprocess.Popen(["mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs"
    try:
        services.wait_for(lambda: services.answers(f"http://127.0.0.1:{port}/health"), "mlflow server",
                          timeout=180, log=log, process=server)
        common = [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1600,1000",
                  "--virtual-time-budget=20000"]

        def page(url: str) -> str:
            return subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout

        table = page(base)
        # MLflow 3.17's table shows no metric column until one is picked under "Columns"; each
        # run's own page lists its metrics with their values
        run_pages = {name: page(f"{base}/{run.info.run_id}") for name, run in runs.items()}
        shot = tmp_path / "runs_table.png"
        subprocess.run([*common, f"--screenshot={shot}", base], capture_output=True, timeout=180)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    for name, run in runs.items():  # every run of the study is a row, with its split file as Dataset
        assert name in table, f"{name} not in the runs table ({len(table)} characters of DOM)"
        split = next(d.dataset for d in run.inputs.dataset_inputs if d.dataset.name == "splits.json")
        assert f"splits.json ({split.digest})" in table, f"{name}: its split file is not in the Dataset column"
        shown = re.sub(r"<[^>]+>", " ", run_pages[name])
        best = run.data.metrics["best_val_score"]
        assert re.search(rf"best_val_score\s+{re.escape(repr(best))}\b", shown), f"{name}: best_val_score {best} not shown"
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"screenshot: {shot}")


def test_the_ui_page_docs_point_at_the_runs_table():
    text = (Path(__file__).resolve().parents[1] / "docs" / "predict.md").read_text()
    assert "#/experiments/<id>/runs" in text
