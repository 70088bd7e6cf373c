"""Localisation scores (CheXlocalize's IoU conventions, bootstrap CIs, saliency vs lesions)
on hand-made masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from multimix import localisation


def _box(shape, rows, cols):
    m = np.zeros(shape, bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


def test_iou_and_true_pos_only():
    a, b = _box((10, 10), (0, 4), (0, 4)), _box((10, 10), (2, 6), (0, 4))  # 16 px each, 8 shared
    empty = np.zeros((10, 10), bool)
    assert localisation.iou(a, b) == pytest.approx(8 / 24)
    assert localisation.iou(a, a) == 1.0
    # a missed or an invented finding: undefined when scoring true positives only, else 0
    assert np.isnan(localisation.iou(empty, b)) and np.isnan(localisation.iou(a, empty))
    assert localisation.iou(empty, b, true_pos_only=False) == 0.0
    assert localisation.iou(a, empty, true_pos_only=False) == 0.0
    assert np.isnan(localisation.iou(empty, empty, true_pos_only=False))
    with pytest.raises(ValueError, match="differ in size"):
        localisation.iou(a, np.zeros((5, 5), bool))


def test_summary_means_skip_undefined_and_miou_is_the_mean_of_pathologies():
    per_image = pd.DataFrame({"Edema": [0.2, 0.4, np.nan, 0.6], "Cardiomegaly": [np.nan, 1.0, 1.0, np.nan]})
    table = localisation.summarise(per_image, replicates=200, seed=0).set_index("name")
    assert table.loc["Edema", "mean"] == pytest.approx(0.4)
    assert table.loc["Cardiomegaly", "mean"] == 1.0
    assert table.loc["mIoU", "mean"] == pytest.approx(0.7)
    assert table.loc["Edema", "n"] == 3 and table.loc["mIoU", "n"] == 4
    # a constant column has a zero-width interval; a varying one brackets its mean
    assert table.loc["Cardiomegaly", ["lower", "upper"]].tolist() == [1.0, 1.0]
    assert table.loc["Edema", "lower"] < 0.4 < table.loc["Edema", "upper"]
    assert 0.2 <= table.loc["Edema", "lower"] and table.loc["Edema", "upper"] <= 0.6
    again = localisation.summarise(per_image, replicates=200, seed=0)
    assert again.equals(table.reset_index())  # seeded


def test_bootstrap_interval_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    small = pd.DataFrame({"Edema": rng.uniform(0, 1, 20)})
    large = pd.DataFrame({"Edema": rng.uniform(0, 1, 500)})
    width = [float((t["upper"] - t["lower"]).iloc[0]) for t in (localisation.summarise(small),
                                                               localisation.summarise(large))]
    assert width[1] < width[0] / 3  # ~ 1/sqrt(n): 5x narrower for 25x the images


def test_saliency_scores_against_a_lesion():
    lesion = _box((20, 20), (5, 10), (5, 10))  # 25 px
    on_target = np.zeros((20, 20))
    on_target[6, 6], on_target[0, 0] = 3.0, 1.0
    scores = localisation.saliency_scores(on_target, lesion)
    assert scores["hit"] == 1.0 and scores["mass"] == pytest.approx(0.75)
    off_target = np.zeros((20, 20))
    off_target[15, 15] = 1.0
    assert localisation.saliency_scores(off_target, lesion)["hit"] == 0.0
    uniform = localisation.saliency_scores(np.ones((20, 20)), lesion)
    assert uniform["mass"] == pytest.approx(25 / 400)
    # the lesion itself, as a map: thresholded at its 95th percentile it is the lesion's top part
    exact = localisation.saliency_scores(lesion.astype(float) + 0.01 * np.arange(400).reshape(20, 20) / 400, lesion)
    assert exact["hit"] == 1.0 and exact["mass"] > 0.9 and exact["iou"] == pytest.approx(20 / 25)
    nothing = localisation.saliency_scores(np.zeros((20, 20)), lesion)
    assert all(np.isnan(v) for v in nothing.values())


def test_bootstrap_is_a_95_percent_interval_over_whole_images():
    """The interval's width is the normal theory's 2 x 1.96 standard errors of the mean (a 90 %
    interval would be 2 x 1.645: 16 % narrower), and images are resampled whole: two pathologies
    with the same IoU on every image give an mIoU interval equal to each one's, which resampling
    each pathology's column on its own would narrow by about 1/sqrt(2)."""
    u = np.random.default_rng(1).uniform(0, 1, 400)
    table = localisation.summarise(pd.DataFrame({"Edema": u, "Cardiomegaly": u}), replicates=4000).set_index("name")
    width = table.loc["Edema", "upper"] - table.loc["Edema", "lower"]
    assert width == pytest.approx(2 * 1.96 * u.std() / np.sqrt(len(u)), rel=0.06)
    assert table.loc["mIoU", ["lower", "upper"]].tolist() == pytest.approx(table.loc["Edema", ["lower", "upper"]].tolist())
