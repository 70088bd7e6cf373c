"""`multimix report`: every method's tables and figures for the runs of a study.

Reads the outputs of `evaluate` (and the training histories) for the runs of the study in
`params.yaml` and writes to `reports/` (the `report.dir` parameter):
  each method's own files   its `MethodPlugin.report` (MultiMix: table2_in_domain,
                            table3_cross_domain, claims, bridge_sensitivity,
                            saliency_localisation, paper_comparison; seed 003: seed003;
                            seed 004: chexseg), written even without runs where the
                            pipeline declares them;
  runs_summary.csv          one row per run and test set of the methods scored on the
                            shared test sets (`multimix.testsets`);
  summary.json              their key test scores per model and test set, mean over
                            repeats (the DVC metrics file of the study: `dvc exp show` lists these);
  figures/*.png             Dice distributions, accuracy vs label count, ROC curves,
                            Bland-Altman of lung pixel counts, boundary overlays (reference
                            green, prediction red) and saliency maps of those runs, beside
                            the methods' own figures.
Figures and tables are also logged to an MLflow run named `report` in the study's experiment.
"""

from __future__ import annotations

import json
from pathlib import Path

from multimix import testsets, tracking
from multimix.config import Config
from multimix.methods import plugin_of, plugins
from multimix.study import expand


def report(cfg: Config, out: Path | None = None, use_mlflow: bool = True) -> dict[str, Path]:
    out = out or Path(cfg.report.dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = expand(cfg)
    scored = [spec for spec in specs if plugin_of(spec).test_set_results]
    summary, images, examples = testsets.load_results(cfg, scored)  # fails early on a run not evaluated
    written = {}
    for plugin in plugins():
        for path in plugin.report(cfg, [spec for spec in specs if plugin_of(spec) is plugin], out):
            written[path.stem] = path
    summary.to_csv(out / "runs_summary.csv", index=False)
    (out / "summary.json").write_text(json.dumps(testsets.summary_metrics(summary), indent=1, sort_keys=True) + "\n")
    featured = {spec.name for spec in scored if spec.preset in plugin_of(spec).featured_presets}
    for path in testsets.figures(summary, images, examples, out / "figures", featured):
        written[path.stem] = path
    if use_mlflow:
        import mlflow

        tracking.use_experiment(cfg.study.name)
        with mlflow.start_run(run_name="report", tags={"kind": "report"}):
            for path in written.values():
                mlflow.log_artifact(str(path), artifact_path="report" if path.suffix == ".md" else "figures")
    return written
