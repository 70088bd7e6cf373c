"""report and compare on a tiny fake study in a temporary MLflow store."""

from __future__ import annotations

import io
import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from multimix.compare import compare
from multimix.config import load_config
from multimix.testsets import _summarise
from multimix.reporting import report

from conftest import write_params

STUDY = {"name": "fake-study", "presets": {"segmentation": ["unet"], "multitask": ["umtl", "multimix"]},
         "segmentation_labels": [10], "multitask_labels": [{"segmentation": 10, "classification": 100}],
         "repeats": [0, 1]}
RUNS = {
    f"{preset}-s10-c100-r{r}": {"preset": preset, "segmentation_labels": 10, "classification_labels": 100, "repeat": r}
    for preset in ("multimix", "umtl") for r in (0, 1)
} | {f"unet-s10-r{r}": {"preset": "unet", "segmentation_labels": 10, "repeat": r} for r in (0, 1)}


def fake_eval(folder, name, spec, rng):
    """Per-image rows as `evaluate` writes them; MultiMix a little better than the others."""
    bonus = 0.05 if spec["preset"] == "multimix" else 0.0
    rows = []
    tasks = [("jsrt", "in-domain", "segmentation"), ("mcu", "cross-domain", "segmentation")]
    if spec["preset"] != "unet":
        tasks += [("chex", "in-domain", "classification"), ("nihx", "cross-domain", "classification")]
    summary = {}
    for dataset, domain, task in tasks:
        frame = []
        for i in range(12):
            row = {"run": name, "preset": spec["preset"], "dataset": dataset, "domain": domain, "task": task,
                   "id": f"{dataset}/{i}"}
            if task == "segmentation":
                dice = float(np.clip(0.8 + bonus + 0.03 * rng.standard_normal(), 0, 1))
                bridge = spec["preset"] == "multimix"
                row.update(dice=dice, jaccard=dice / (2 - dice), ssim=dice, hausdorff=2 - dice, precision=dice,
                           recall=dice, sensitivity=dice, specificity=0.99, f1=(dice + 0.99) / 2, pred_pixels=int(1000 * dice + 50 * i), ref_pixels=1000 + 50 * i,
                           dice_without_saliency=dice - 0.1 if bridge else dice,
                           bridge_logit_change=0.5 if bridge else 0.0)
            else:
                label = i % 2
                p = float(np.clip(0.5 + (0.3 + bonus) * (1 if label else -1) + 0.2 * rng.standard_normal(), 0, 1))
                row.update(label=label, probability=p)
                if label == 1 and dataset == "chex":  # phantoms with known opacities: saliency scored
                    hit = float(spec["preset"] == "multimix" or i % 4 == 1)
                    row.update(saliency_hit=hit, saliency_mass=0.3 * hit + 0.1, saliency_iou=0.2, lesion_share=0.05)
            frame.append(row)
        frame = pd.DataFrame(frame)
        rows.append(frame)
        summary[dataset] = {"domain": domain, "task": task} | _summarise(frame, task)
    out = folder / name
    out.mkdir(parents=True)
    pd.concat(rows).to_csv(out / "per_image.csv", index=False)
    (out / "metrics.json").write_text(json.dumps(summary))
    img = rng.random((2, 32, 32)).astype(np.float32)
    examples = {"jsrt_image": img, "jsrt_saliency": img, "jsrt_label": np.array([-1, -1]),
                "jsrt_probability": np.array([0.5, 0.5]), "jsrt_pred": img > 0.5, "jsrt_ref": img > 0.4}
    if spec["preset"] != "unet":
        examples |= {"chex_image": img, "chex_saliency": img, "chex_label": np.array([0, 1]),
                     "chex_probability": np.array([0.2, 0.9])}
    np.savez_compressed(out / "examples.npz", **examples)
    return summary


@pytest.fixture
def study(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    write_params(tmp_path, study=STUDY, train={"runs_dir": str(tmp_path / "runs")},
                 evaluate={"dir": str(tmp_path / "eval")}, report={"dir": str(tmp_path / "reports")})
    cfg = load_config(tmp_path / "params.yaml")
    rng = np.random.default_rng(0)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("fake-study")
    for name, spec in RUNS.items():
        summary = fake_eval(tmp_path / "eval", name, spec, rng)
        with mlflow.start_run(run_name=name, tags={"preset": spec["preset"], "repeat": str(spec["repeat"]),
                                                   "segmentation_labels": "10",
                                                   "classification_labels": str(spec.get("classification_labels"))}):
            for dataset, values in summary.items():
                for key, value in values.items():
                    if isinstance(value, (int, float)):
                        mlflow.log_metric(f"test_{dataset}_{key}", value)
    return tmp_path, cfg


def test_report_tables_figures_and_mlflow(study):
    folder, cfg = study
    written = report(cfg)
    table = pd.read_csv(folder / "reports" / "table2_in_domain.csv", dtype=str)
    assert list(table["Model"]) == ["unet", "umtl", "multimix"]
    mm = table[table.Model == "multimix"].iloc[0]
    assert " ± " in mm["DS"] and " ± " in mm["Acc"] and mm["repeats"] == "2"
    assert mm["p (DS)"] == "—"
    unet = table[table.Model == "unet"].iloc[0]
    assert float(unet["p (DS)"]) < 0.05  # MultiMix is better on every image by construction
    assert unet["Acc"] == "—"
    md = (folder / "reports" / "table3_cross_domain.md").read_text()
    assert "| multimix | 100 | 10 |" in md
    assert md.splitlines()[6].startswith("| Model | \\|D_l^c\\| | \\|D_l^s\\| | Acc |")  # escaped pipes
    for name in ("dice_distribution", "roc", "bland_altman", "accuracy_vs_labels", "boundaries",
                 "saliency_classification", "saliency_segmentation"):
        assert (folder / "reports" / "figures" / f"{name}.png").stat().st_size > 1000, name
    assert "paper_comparison" in written
    bridge = pd.read_csv(folder / "reports" / "bridge_sensitivity.csv", dtype=str)
    row = bridge[(bridge.Model == "multimix") & (bridge.dataset == "jsrt")].iloc[0]
    assert row["Δ DS"].startswith("0.100") and row["mean |Δ logit|"].startswith("5.00e-01")
    assert bridge[bridge.Model == "unet"]["Δ DS"].str.startswith("0.000").all()
    saliency = pd.read_csv(folder / "reports" / "saliency_localisation.csv", dtype=str)
    assert list(saliency["Model"]) == ["umtl", "multimix"] and set(saliency["dataset"]) == {"chex"}  # nihx: no masks
    mm = saliency[saliency.Model == "multimix"].iloc[0]
    assert mm["hit"].startswith("1.000") and mm["mass"].startswith("0.400") and mm["chance"].startswith("0.050")
    assert mm["images"] == "6" and mm["repeats"] == "2"
    assert saliency[saliency.Model == "umtl"].iloc[0]["hit"].startswith("0.500")
    assert "| 2 | chex | 100 | 10 | accuracy | 0.800 ± 0.025 |" in (folder / "reports" / "paper_comparison.md").read_text()
    runs = mlflow.search_runs(experiment_names=["fake-study"], filter_string="tags.kind = 'report'")
    assert len(runs) == 1
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs.iloc[0].run_id)}
    assert {"figures", "report"} <= artifacts


def test_compare_groups_repeats_and_marks_the_best(study):
    out = io.StringIO()
    table = compare(["fake-study"], stream=out)
    text = out.getvalue()
    assert set(table["preset"]) == {"multimix", "umtl", "unet"}
    assert (table["repeats"] == 2).all()
    mm_dice = table.loc[table.preset == "multimix", "test_jsrt_dice_mean"].item()
    assert mm_dice == table["test_jsrt_dice_mean"].max()
    line = next(l for l in text.splitlines() if " multimix " in l)
    assert f"*{mm_dice:.3f} ±" in line
    csv = io.StringIO()
    compare(["fake-study"], preset="unet", csv=True, stream=csv)
    parsed = pd.read_csv(io.StringIO(csv.getvalue()))
    assert list(parsed["preset"]) == ["unet"] and "test_jsrt_dice_std" in parsed


def test_compare_unknown_experiment(study):
    from multimix.errors import InputError

    with pytest.raises(InputError, match="no MLflow experiment named nope"):
        compare(["nope"], stream=io.StringIO())


def test_compare_takes_the_latest_evaluated_record_and_separates_configs(study):
    """A later run of a repeat that was never evaluated must not hide the evaluated one;
    a run trained with other settings (another config digest) gets a row of its own."""
    tags = {"preset": "multimix", "repeat": "0", "segmentation_labels": "10", "classification_labels": "100"}
    with mlflow.start_run(run_name="multimix-s10-c100-r0", tags=tags):
        mlflow.log_metric("best_val_score", 0.1)  # trained again, not evaluated
    with mlflow.start_run(run_name="multimix-s10-c100-r0", tags=tags | {"config_digest": "f" * 64}):
        mlflow.log_metric("test_jsrt_dice", 0.5)
    table = compare(["fake-study"], preset="multimix", stream=io.StringIO())
    assert len(table) == 2 and sorted(table["config"]) == ["", "ffffffff"]
    main = table[table["config"] == ""].iloc[0]
    assert main["repeats"] == 2 and main["test_jsrt_dice_mean"] > 0.8  # both evaluated repeats, not the 0.1 run
    other = table[table["config"] == "ffffffff"].iloc[0]
    assert other["repeats"] == 1 and other["test_jsrt_dice_mean"] == 0.5


def test_compare_stars_scores_not_counts_and_marks_missing_values_once(study):
    from multimix.compare import fetch, render, summarise

    table = summarise(fetch(["fake-study"]), all_metrics=True)
    shown = pd.read_fwf(io.StringIO(render(table)), dtype=str)
    counts = [c for c in shown.columns if c.endswith(("_images", "_undefined"))]
    assert "test_jsrt_images" in counts and "test_jsrt_hausdorff_undefined" in counts
    for column in counts:  # 12 test images everywhere: equal counts, never a "best"
        assert not shown[column].str.startswith("*").any(), column
    assert shown["test_jsrt_dice"].str.startswith("*").sum() == 1  # scores are starred
    text = render(table)
    assert "None" not in text and "nan" not in text.lower()
    unet = shown[shown["preset"] == "unet"].iloc[0]
    assert unet["cls_labels"] == "—" and unet["test_chex_accuracy"] == "—"  # one marker for what does not exist


def test_claims_are_tested_where_both_models_exist(study):
    folder, cfg = study
    report(cfg, use_mlflow=False)
    claims = pd.read_csv(folder / "reports" / "claims.csv", dtype=str)
    rows = claims[claims["claim"].str.startswith("MultiMix segments better than U-Net")]
    assert set(rows["dataset"]) == {"jsrt", "mcu"}
    assert (rows["verdict"] == "holds").all()  # MultiMix is better on every image by construction
    assert (rows["|D_l^s|"] == "10").all() and (rows["images"] == "12").all()
    consistency = claims[claims["A"].eq("multimix") & claims["B"].eq("umtl_ssl_s")]
    assert consistency.empty  # the study has no UMTL-SSL-S: nothing claimed
    # the verdict follows the sign of the difference and the p-value
    for _, row in claims.iterrows():
        p = float(row["p"])
        expected = "not significant" if not p < 0.05 else ("holds" if float(row["A − B"]) > 0 else "reversed")
        assert row["verdict"] == expected


def test_seed003_table_puts_the_papers_row_after_ours():
    from multimix.methods.appaunet.report import seed003_table

    def rows(preset, repeat, dice, accuracy=None):
        out = [{"preset": preset, "seg_labels": "62", "cls_labels": "", "repeat": repeat, "dataset": "ccx",
                "task": "segmentation", "dice": dice, "jaccard": 0.8, "ssim": 0.7, "f1": 0.9, "hausdorff": 3.0,
                "sensitivity": 0.9, "specificity": 0.8, "precision": 0.85, "recall": 0.9}]
        if accuracy is not None:
            out.append({"preset": preset, "seg_labels": "62", "cls_labels": "", "repeat": repeat,
                        "dataset": "ccx_classification", "task": "classification", "accuracy": accuracy,
                        "precision": 0.5, "recall": 0.4})
        return out

    summary = pd.DataFrame(rows("appaunet_kltv", 0, 0.90, 0.6) + rows("appaunet_kltv", 1, 0.92, 0.7)
                           + rows("ppaunet_kltv", 0, 0.95) + rows("multimix", 0, 0.5))
    table = seed003_table(summary, "ccx")
    assert list(table["Model"]) == ["ppaunet_kltv", "ppaunet_kltv", "appaunet_kltv", "appaunet_kltv"]
    assert list(table["source"]) == ["ours", "paper", "ours", "paper"]
    ours, paper = table.iloc[2], table.iloc[3]
    assert ours["DS"] == "0.910 ± 0.014" and ours["Acc"] == "0.650 ± 0.071" and ours["repeats"] == 2
    assert paper["DS"] == "0.926" and paper["Acc"] == "0.750" and paper["HD"] == "4.669"  # seed 003, Table 2
    assert table.iloc[0]["Acc"] == "—" and table.iloc[1]["DS"] == "0.967"  # Table 1: no classifier
    # a dataset the paper does not have (MultiMix's JSRT partition): our rows only, nothing invented
    other = seed003_table(summary, "jsrt")
    assert set(other["source"]) == {"ours"} and set(other["DS"]) == {"—"}


def test_claims_test_the_repeats_beside_the_images():
    """Per image, A beats B on every image; per repeat, one of A's repeats fails badly: the
    image test holds, the repeat test (paired by repeat, over the repeats' means) does not."""
    from scipy import stats

    from multimix.methods.multimix.report import claims_table

    rows = []
    for repeat, shift in enumerate([0.30, 0.30, -0.35]):  # MultiMix's third repeat fails
        for i in range(40):
            base = 0.5 + 0.01 * (i % 7)
            for preset in ("multimix", "unet"):
                rows.append({"preset": preset, "cls_labels": "100" if preset == "multimix" else "",
                             "seg_labels": "10", "repeat": repeat, "dataset": "jsrt", "id": f"img{i}",
                             "dice": base + (shift + 0.003 * (i % 5)) * (preset == "multimix")})
    frame = pd.DataFrame(rows)
    claims = claims_table(frame)
    row = claims[claims["claim"] == "MultiMix segments better than U-Net"].iloc[0]
    assert row["verdict"] == "holds" and float(row["p"]) < 1e-6 and row["repeats"] == 3
    a = frame[frame["preset"] == "multimix"].groupby("repeat")["dice"].mean()
    b = frame[frame["preset"] == "unet"].groupby("repeat")["dice"].mean()
    assert float(row["p (repeats)"]) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-3)
    assert float(row["p (repeats)"]) > 0.05
