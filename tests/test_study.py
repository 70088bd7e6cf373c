"""Studies: the matrix expands into runs, the same for DVC and Snakemake; study files stay in step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from multimix.config import config_from_dict, load_config
from multimix.errors import InputError
from multimix.study import expand, find_run, run_names

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))


def params(**study) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["study"].update(study)
    return raw


def test_single_task_models_are_not_repeated_across_the_other_task():
    cfg = config_from_dict(params(
        presets={"segmentation": ["unet"], "classification": ["enc"], "multitask": ["multimix", "umtl"]},
        segmentation_labels=[10, "full"], classification_labels=[100, "full"],
        multitask_labels=[{"segmentation": 10, "classification": 100}, {"segmentation": "full", "classification": "full"}],
        repeats=[0, 1]), )
    names = run_names(cfg)
    assert len(names) == len(set(names)) == 2 * 2 + 2 * 2 + 2 * 2 * 2
    assert "unet-s10-r1" in names and "enc-cfull-r0" in names and "multimix-sfull-cfull-r1" in names
    assert not any(n.startswith("unet-") and "-c" in n for n in names)
    assert not any(n.startswith("enc-") and "-s" in n for n in names)
    assert "multimix-s10-cfull-r0" not in names  # only the listed multi-task settings
    spec = find_run(cfg, "multimix-s10-c100-r1")
    assert (spec.preset, spec.segmentation_labels, spec.classification_labels, spec.repeat) == ("multimix", "10", "100", 1)


def test_paper_study_is_table2():
    cfg = load_config(ROOT / "studies" / "paper.yaml")
    runs = expand(cfg)
    assert len(runs) == 3 * 5 + 3 * 3 * 5 + 5 * 9 * 5 == 285
    assert {(r.segmentation_labels, r.classification_labels) for r in runs if r.preset == "multimix"} == {
        (s, c) for s in ("10", "50", "full") for c in ("100", "1000", "full")}
    assert cfg.preprocess.size == 256 and cfg.train.epochs * cfg.train.steps_per_epoch == 12_528


@pytest.mark.parametrize("cohort, n_train", [("mcx", 93), ("scx", 355), ("jcx", 166), ("ccx", 614)])
def test_seed003_study_files_are_its_tables_1_and_2(cohort, n_train):
    from multimix.data import layout

    cfg = load_config(ROOT / "studies" / f"seed003-{cohort}.yaml")
    runs = expand(cfg)
    tenth = str(round(n_train / 10))
    assert len(runs) == 9 * 2 and {r.segmentation_labels for r in runs} == {tenth, "full"}
    assert {r.preset for r in runs} == {f"{m}_{loss}" for m in ("unet", "attunet", "ppaunet") for loss in ("tv", "kltv")} \
        | {f"appaunet_{loss}" for loss in ("tv", "xetv", "kltv")}
    assert cfg.split.segmentation_dataset == cohort and set(layout.sources(cohort)) <= set(cfg.data.datasets)
    assert cfg.preprocess.size == 128 and cfg.train.batch_size == 16
    assert cfg.train.epochs == 300 and cfg.train.steps_per_epoch == -(-n_train // 16)  # 300 epochs of the train set
    assert cfg.train.lr_gamma == 1.0 and cfg.seed003.lr_segmentor == 1e-5 and cfg.seed003.lr_discriminator == 1e-4


@pytest.mark.parametrize("change, message", [
    ({"presets": {"multitask": ["unet"]}}, "study.presets.multitask has 'unet', a segmentation model"),
    ({"presets": {"classification": ["vnet"]}}, "study.presets.classification has 'vnet'; expected presets among"),
    ({"classification_labels": [300]}, "study.classification_labels has classification size 300"),
    ({"multitask_labels": [{"segmentation": 7, "classification": 100}]}, "study.multitask_labels has segmentation size 7"),
    ({"repeats": [9]}, "study.repeats has 9, which split.repeats"),
    ({"repeats": [0, 0]}, "study lists a preset, label count or repeat twice"),
    ({"multitask_labels": [{"segmentation": 10}], "presets": {"multitask": ["umtl"]}}, None),
])
def test_study_errors_are_one_line(change, message):
    raw = params(**change)
    if message is None:  # a partial setting takes the dataclass default for the other count
        assert run_names(config_from_dict(raw)) == ["umtl-s10-c100-r0"]
        return
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        config_from_dict(raw)


def _keys(node, prefix=""):
    if isinstance(node, dict):
        out = set()
        for key, value in node.items():
            out |= {f"{prefix}{key}"} | _keys(value, f"{prefix}{key}.")
        return out
    return set()


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_files_load_and_have_the_keys_of_params_yaml(path):
    """A study file is a complete params file: a key added to params.yaml must be added there too."""
    load_config(path)
    base = _keys(yaml.safe_load((ROOT / "params.yaml").read_text()))
    study = _keys(yaml.safe_load(path.read_text()))
    ignore = ("study.", "synth.counts.")  # the study's own matrix and synthetic count overrides
    assert {k for k in base if not k.startswith(ignore)} == {k for k in study if not k.startswith(ignore)}


def test_phantom_study_settings_differ_only_in_their_label_counts():
    """docs/results.md: the phantom study's two label settings use "the same data, budget and seeds".
    studies/phantom-full.yaml must equal studies/phantom.yaml outside the study's name and
    label counts (and comments), or its table stops being comparable with the other."""
    small = yaml.safe_load((ROOT / "studies/phantom.yaml").read_text())
    full = yaml.safe_load((ROOT / "studies/phantom-full.yaml").read_text())
    assert set(full["study"]["segmentation_labels"]) == {"full"}
    assert set(full["study"]["classification_labels"]) == {"full"}
    assert full["study"]["multitask_labels"] == [{"segmentation": "full", "classification": "full"}]
    for raw in (small, full):
        for key in ("name", "segmentation_labels", "classification_labels", "multitask_labels"):
            raw["study"].pop(key)
    assert small == full


@pytest.mark.slow
@pytest.mark.parametrize("study, count", [("paper", 285), ("seed003-ccx", 18)])
def test_dvc_and_snakemake_expand_the_ready_studies_alike(tmp_path, study, count):
    """The 285 runs of studies/paper.yaml (and the 18 of a seed-003 study, whose classification and
    multi-task groups are empty), as both orchestrators list them."""
    for name in ("dvc.yaml", "Snakefile", "workflow"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    os.symlink(ROOT / "src", tmp_path / "src")
    shutil.copy(ROOT / "studies" / f"{study}.yaml", tmp_path / "params.yaml")
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    listed = subprocess.run([str(bin_dir / "dvc"), "stage", "list", "--name-only"], cwd=tmp_path, check=True,
                            capture_output=True, text=True).stdout.split()
    dvc_stages = [s for s in listed if s.startswith("train-")]
    dry = subprocess.run([str(bin_dir / "snakemake"), "--cores", "1", "--forceall", "--dry-run", "--printshellcmds",
                          "--nocolor"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    smk_runs = sorted(line.split("--run ")[1].strip() for line in dry.splitlines()
                      if line.startswith("Shell command: multimix") and " train --run " in line)
    expected = sorted(run_names(load_config(tmp_path / "params.yaml")))
    assert len(dvc_stages) == len(expected) == count
    assert smk_runs == expected
    dvc_cmds = subprocess.run([str(bin_dir / "dvc"), "stage", "list"], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout
    dvc_runs = sorted({line.split("data/runs/")[1].split("/")[0] for line in dvc_cmds.splitlines()
                       if line.startswith("train-")})
    assert dvc_runs == expected
