"""The `multimix` command: stages end to end, and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from conftest import write_params

MULTIMIX = [sys.executable, "-m", "multimix"]


def multimix(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MULTIMIX, "-q", *args], cwd=cwd, capture_output=True, text=True)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multimix: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_stages_acquire_to_split(tmp_path):
    write_params(tmp_path, data={"datasets": ["jsrt", "nihx"]},
                 preprocess={"processed_dir": str(tmp_path / "processed"), "workers": 1},
                 split={"split_dir": str(tmp_path / "splits"), "segmentation_sizes": [1, 2, "full"]})
    first = multimix(tmp_path, "acquire")
    assert first.returncode == 0, first.stderr
    receipt = json.loads((tmp_path / "raw" / "acquired.json").read_text())
    assert receipt["source"] == "synthetic"
    # 4 images with 2 masks each, and the clinical files that list the nodules (CLNDAT_EN.txt, CNNDAT_EN.TXT)
    assert receipt["datasets"]["jsrt"]["origin"] == "synthetic" and receipt["datasets"]["jsrt"]["files"] == 4 * 3 + 2
    done = multimix(tmp_path, "harmonise")
    assert done.returncode == 0, done.stderr
    assert "jsrt: 4 images accepted" in done.stdout
    manifest = pd.read_csv(tmp_path / "interim" / "manifest.csv")
    assert set(manifest["dataset"]) == {"jsrt", "nihx"}
    # Rewriting the synthetic data gives the very same receipt: content-addressed, deterministic.
    again = multimix(tmp_path, "acquire")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "raw" / "acquired.json").read_text())["datasets"] == receipt["datasets"]
    done = multimix(tmp_path, "preprocess")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "processed").glob("*.h5")) == ["jsrt.h5", "nihx.h5"]
    done = multimix(tmp_path, "split")
    assert done.returncode == 0, done.stderr
    splits = json.loads((tmp_path / "splits" / "splits.json").read_text())
    assert sum(len(v) for v in splits["partitions"]["jsrt"].values()) == 4
    assert len(splits["partitions"]["nihx"]["test"]) == 9
    assert set(splits["subsets"]["segmentation"]["sizes"]) == {"1", "2", "full"}


def test_split_before_preprocess_is_a_one_line_error(tmp_path):
    write_params(tmp_path, preprocess={"processed_dir": str(tmp_path / "processed")})
    assert_one_line_error(multimix(tmp_path, "split"), "jsrt.h5: not found (run `multimix preprocess` first)")


def test_missing_params_file(tmp_path):
    assert_one_line_error(multimix(tmp_path, "harmonise"), "params.yaml: parameter file not found")


def test_unknown_parameter_is_an_error(tmp_path):
    path = write_params(tmp_path)
    params = yaml.safe_load(path.read_text())
    params["data"]["sourse"] = "synthetic"
    path.write_text(yaml.safe_dump(params))
    assert_one_line_error(multimix(tmp_path, "harmonise"), "params.yaml: data: unknown key(s) sourse")


def test_unknown_top_level_section_is_an_error(tmp_path):
    path = write_params(tmp_path)
    params = yaml.safe_load(path.read_text())
    params["trian"] = {"epochs": 3}
    path.write_text(yaml.safe_dump(params))
    assert_one_line_error(multimix(tmp_path, "harmonise"), "params.yaml: unknown key(s) trian")


def test_bad_source_value(tmp_path):
    write_params(tmp_path, data={"source": "ftp"})
    assert_one_line_error(multimix(tmp_path, "acquire"), "data.source is 'ftp'", "synthetic, download, local")


def test_missing_source_folder(tmp_path, tiny_raw):
    shutil.copytree(tiny_raw, tmp_path / "raw")
    shutil.rmtree(tmp_path / "raw" / "jsrt")
    write_params(tmp_path)
    assert_one_line_error(multimix(tmp_path, "harmonise"), "jsrt:", "All247images/JPCLN001.IMG")


def test_local_mode_refuses_phantoms(tmp_path, tiny_raw):
    shutil.copytree(tiny_raw, tmp_path / "raw")
    write_params(tmp_path, data={"source": "local"})
    assert_one_line_error(multimix(tmp_path, "acquire"), "holds synthetic phantoms")


def test_local_mode_needs_every_source(tmp_path):
    (tmp_path / "raw" / "chex").mkdir(parents=True)
    write_params(tmp_path, data={"source": "local", "datasets": ["chex"]})
    assert_one_line_error(multimix(tmp_path, "acquire"), "chex:", "is missing or empty", "chest_xray")
