"""`multimix paired`: two evaluations compared image by image, on made-up per_image.csv files
whose answers are known (McNemar counts, paired differences), and its one-line refusals."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from multimix.cli import main
from multimix.paired import compare_pair, read


def evaluation(folder, dice, right, seed):
    """A per_image.csv with a segmentation set (jsrt) and a classification set (chex)."""
    rng = np.random.default_rng(seed)
    seg = pd.DataFrame({"run": "r", "dataset": "jsrt", "task": "segmentation",
                        "id": [f"jsrt/{i}" for i in range(len(dice))], "dice": dice,
                        "ref_pixels": 100.0})
    label = np.arange(len(right)) % 2
    predicted = np.where(right, label, 1 - label)
    cls = pd.DataFrame({"run": "r", "dataset": "chex", "task": "classification",
                        "id": [f"chex/{i}" for i in range(len(right))], "label": label,
                        "predicted": predicted, "probability": rng.uniform(size=len(right))})
    folder.mkdir(parents=True)
    pd.concat([seg, cls]).to_csv(folder / "per_image.csv", index=False)
    return folder


@pytest.fixture
def arms(tmp_path):
    rng = np.random.default_rng(0)
    dice_b = rng.uniform(0.5, 0.8, 12)
    dice_a = dice_b + rng.normal(0.03, 0.01, 12)
    right_b = np.array([1] * 10 + [0] * 10, bool)
    right_a = right_b.copy()
    right_a[10:16] = True   # A alone right on 6 images
    right_a[0] = False      # B alone right on 1
    a = evaluation(tmp_path / "a", dice_a, right_a, 1)
    b = evaluation(tmp_path / "b", dice_b, right_b, 2)
    return a, b, dice_a, dice_b


def row(table, dataset, score):
    found = table[(table.dataset == dataset) & (table.score == score)]
    assert len(found) == 1, table
    return found.iloc[0]


def test_paired_scores_match_scipy_and_mcnemar_counts(arms):
    a, b, dice_a, dice_b = arms
    table, unpaired = compare_pair(read(a), read(b))
    dice = row(table, "jsrt", "dice")
    assert dice.images == 12
    assert dice["diff"] == pytest.approx((dice_a - dice_b).mean())
    assert dice.p == pytest.approx(stats.ttest_rel(dice_a, dice_b).pvalue)
    acc = row(table, "chex", "accuracy")
    assert (acc.A, acc.B) == (pytest.approx(15 / 20), pytest.approx(10 / 20))
    assert "only A right 6, only B right 1" in acc.test
    assert acc.p == pytest.approx(stats.binomtest(6, 7).pvalue)
    frame = pd.read_csv(a / "per_image.csv").query("dataset == 'chex'")
    assert row(table, "chex", "auc").A == pytest.approx(roc_auc_score(frame.label, frame.probability))
    # not scores: the truth, the decision, its input, the reference's size
    assert not set(table.score) & {"label", "predicted", "probability", "ref_pixels"}
    assert unpaired == {"jsrt": (0, 0), "chex": (0, 0)}


def test_images_of_one_arm_are_counted_not_dropped_silently(arms, capsys):
    a, b, *_ = arms
    frame = pd.read_csv(b / "per_image.csv")
    frame[frame.id != "jsrt/3"].to_csv(b / "per_image.csv", index=False)
    assert main(["-q", "paired", str(a), str(b / "per_image.csv")]) == 0
    out = capsys.readouterr().out
    assert "| jsrt | dice | 11 |" in out
    assert "jsrt: 1 images scored by A only, 0 by B only (left out of the pairs)" in out


def test_identical_evaluations_differ_by_nothing(arms):
    a, *_ = arms
    table, _ = compare_pair(read(a), read(a))
    assert (table["diff"] == 0).all()
    assert set(table.loc[table.test == "paired t", "p"]) == {1.0}


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "missing", "missing: not found (expected an evaluation folder"),
    (lambda d: (d / "x.csv").write_text("a,b\n1,2\n") and d / "x.csv", "x.csv: no column dataset, id"),
    (lambda d: (d / "y.csv").write_bytes(b"\xff\xfe\x00garbage") and d / "y.csv", "y.csv: "),
])
def test_bad_input_is_one_line(arms, tmp_path, capsys, make, expected):
    a, *_ = arms
    assert main(["-q", "paired", str(a), str(make(tmp_path))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("multimix: error: ") and expected in err and "\n" not in err


def test_two_rows_for_one_image_are_refused(arms, capsys):
    a, b, *_ = arms
    frame = pd.read_csv(b / "per_image.csv")
    pd.concat([frame, frame.iloc[:1]]).to_csv(b / "per_image.csv", index=False)
    assert main(["-q", "paired", str(a), str(b)]) == 2
    assert "jsrt image jsrt/0 has 2 rows (expected one evaluation" in capsys.readouterr().err


def test_no_common_image_is_refused(arms, tmp_path, capsys):
    a, *_ = arms
    other = evaluation(tmp_path / "other", [0.5, 0.6], [True], 3)
    frame = pd.read_csv(other / "per_image.csv")
    frame["id"] = frame["id"] + "-elsewhere"
    frame.to_csv(other / "per_image.csv", index=False)
    assert main(["-q", "paired", str(a), str(other)]) == 2
    assert "no test image scored by both" in capsys.readouterr().err


def test_csv_into_a_closed_pipe_exits_quietly(arms):
    a, b, *_ = arms
    # `| head -1` closes the pipe early: no BrokenPipeError traceback, exit 0
    pipe = subprocess.run(f"{sys.executable} -m multimix.cli -q paired --csv {a} {b} | head -1; "
                          "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                          capture_output=True, text=True)
    assert pipe.stdout.startswith("dataset,score,images,A,B,diff,p,test")
    assert "Traceback" not in pipe.stderr and pipe.returncode == 0, pipe.stderr
