"""Metrics on crafted masks and labels, checked by hand and against scipy/sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from multimix import metrics


def square(top, left, size=10, shape=(64, 64)):
    mask = np.zeros(shape, bool)
    mask[top:top + size, left:left + size] = True
    return mask


def test_perfect_prediction():
    ref = square(10, 10)
    s = metrics.segmentation_scores(ref, ref)
    assert s == {"dice": 1.0, "jaccard": 1.0, "ssim": pytest.approx(1.0), "hausdorff": 0.0,
                 "precision": 1.0, "recall": 1.0, "sensitivity": 1.0, "specificity": 1.0, "f1": 1.0}


def test_both_empty_is_perfect_and_one_empty_is_zero():
    empty = np.zeros((32, 32), bool)
    assert metrics.segmentation_scores(empty, empty)["dice"] == 1.0
    assert metrics.segmentation_scores(empty, empty)["hausdorff"] == 0.0
    s = metrics.segmentation_scores(empty, square(5, 5, shape=(32, 32)))
    assert s["dice"] == 0.0 and s["jaccard"] == 0.0 and s["recall"] == 0.0 and s["precision"] == 0.0
    assert math.isnan(s["hausdorff"])


def test_disjoint_masks():
    s = metrics.segmentation_scores(square(0, 0), square(40, 40))
    assert s["dice"] == 0.0 and s["jaccard"] == 0.0 and s["precision"] == 0.0 and s["recall"] == 0.0
    assert s["ssim"] < 0.9


@pytest.mark.parametrize("k", [1, 2, 5])
def test_square_shifted_by_k_pixels(k):
    ref, pred = square(20, 20), square(20, 20 + k)
    overlap = 10 * (10 - k)
    s = metrics.segmentation_scores(pred, ref)
    assert s["dice"] == pytest.approx(2 * overlap / 200)
    assert s["jaccard"] == pytest.approx(overlap / (200 - overlap))
    assert s["precision"] == pytest.approx(overlap / 100) and s["recall"] == pytest.approx(overlap / 100)
    # Boundary pixels of a 10x10 square: 36. Shifting by k moves every left/right edge by k
    # and the top/bottom edges share all but k columns: the modified Hausdorff distance is
    # the mean distance of the boundary pixels to the other boundary, below k and above 0.
    assert 0 < s["hausdorff"] <= k
    # pixel counts on the 64x64 grid: TP = overlap, FP = FN = 100 - overlap, TN = the rest
    fp = fn = 100 - overlap
    tn = 64 * 64 - overlap - fp - fn
    assert s["sensitivity"] == s["recall"]
    assert s["specificity"] == pytest.approx(tn / (tn + fp))
    assert s["f1"] == pytest.approx((2 * overlap / (2 * overlap + fp + fn) + 2 * tn / (2 * tn + fp + fn)) / 2)


def test_pixel_rates_by_hand_with_unequal_errors():
    """TP 32, FP 8, FN 32, TN 184 on a 16x16 grid: sensitivity, precision and specificity each have
    another value than the quantity they are easily confused with (precision, recall, TN / (TN + FN))."""
    ref, pred = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    ref[2:10, 2:10] = True                        # 64 lung pixels
    pred[2:10, 2:6] = True                        # half of them found: TP 32, FN 32
    pred[12:14, 0:4] = True                       # and 8 outside: FP 8
    s = metrics.segmentation_scores(pred, ref)
    assert s["sensitivity"] == s["recall"] == pytest.approx(32 / 64)
    assert s["precision"] == pytest.approx(32 / 40)
    assert s["specificity"] == pytest.approx(184 / (184 + 8))      # over the reference's background
    assert s["f1"] == pytest.approx((2 * 32 / (2 * 32 + 8 + 32) + 2 * 184 / (2 * 184 + 8 + 32)) / 2)


def test_specificity_and_f1_at_the_empty_mask_rule():
    empty, full = np.zeros((8, 8), bool), np.ones((8, 8), bool)
    s = metrics.segmentation_scores(empty, empty)
    assert s["specificity"] == s["sensitivity"] == s["f1"] == 1.0
    # predicting lung everywhere on an empty reference: every background pixel is a false positive
    s = metrics.segmentation_scores(full, empty)
    assert s["specificity"] == 0.0 and s["sensitivity"] == 0.0 and s["f1"] == 0.0
    # a reference that is lung everywhere has no background: specificity 1 when nothing is missed there
    s = metrics.segmentation_scores(full, full)
    assert s["specificity"] == 1.0 and s["f1"] == 1.0


def test_hausdorff_of_a_pure_shift_of_an_edge():
    a = np.zeros((20, 20), bool)
    a[5:15, 5:6] = True  # a 1-pixel wide vertical line: its own boundary
    b = np.zeros((20, 20), bool)
    b[5:15, 8:9] = True
    assert metrics.segmentation_scores(a, b)["hausdorff"] == pytest.approx(3.0)


def test_classification_scores_by_hand():
    labels = [0, 0, 1, 1, 1]
    probs = [0.1, 0.6, 0.8, 0.4, 0.9]  # predictions 0 1 1 0 1
    s = metrics.classification_scores(labels, probs)
    assert s["accuracy"] == pytest.approx(3 / 5)
    # normal: TP 1, FP 1, FN 1 -> F1 0.5 ; pneumonia: TP 2, FP 1, FN 1 -> F1 2/3
    assert s["f1_normal"] == pytest.approx(0.5)
    assert s["f1_pneumonia"] == pytest.approx(2 / 3)
    # AUC: pairs (pos, neg) ranked correctly: 0.8>0.1,0.8>0.6, 0.4>0.1, 0.9>0.1, 0.9>0.6 -> 5 of 6
    assert s["auc"] == pytest.approx(5 / 6)


def test_roc_known_case():
    fpr, tpr = metrics.roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    # the classic scikit-learn example
    assert np.allclose(fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    assert np.allclose(tpr, [0.0, 0.5, 0.5, 1.0, 1.0])


def test_auc_undefined_with_one_class():
    assert math.isnan(metrics.classification_scores([1, 1], [0.2, 0.9])["auc"])


def test_paired_t_test_against_scipy():
    from multimix.methods.multimix.report import _paired_p
    import pandas as pd

    a = [0.91, 0.88, 0.95, 0.90, 0.93]
    b = [0.85, 0.86, 0.90, 0.84, 0.91]
    rows = [{"dataset": "jsrt", "preset": "multimix", "cls_labels": "100", "seg_labels": "10", "id": f"i{k}",
             "dice": v} for k, v in enumerate(a)]
    rows += [{"dataset": "jsrt", "preset": "unet", "cls_labels": "", "seg_labels": "10", "id": f"i{k}",
              "dice": v} for k, v in enumerate(b)]
    model = pd.Series({"preset": "unet", "cls_labels": "", "seg_labels": "10"})
    p = _paired_p(pd.DataFrame(rows), "jsrt", "dice", model, "seg_labels")
    assert p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # by hand: differences mean 0.042, sd 0.0205, t = 4.58 with 4 degrees of freedom -> p ≈ 0.0102
    assert p == pytest.approx(0.0102, abs=3e-4)


def test_ssim_of_shifted_masks_falls_with_the_shift_and_matches_its_definition():
    """SSIM of binary masks: 1 for identical, lower for every further pixel of shift, and equal to
    the mean over 7x7 windows of the SSIM formula (data range 1, K1 = 0.01, K2 = 0.03)."""
    from scipy.ndimage import uniform_filter

    ref = square(20, 20)
    scores = [metrics.segmentation_scores(square(20, 20 + k), ref)["ssim"] for k in range(0, 6)]
    assert scores[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    x, y = square(20, 22).astype(float), ref.astype(float)
    filt = lambda a: uniform_filter(a, size=7)  # noqa: E731
    n = 49
    ux, uy = filt(x), filt(y)
    vx = (filt(x * x) - ux * ux) * n / (n - 1)
    vy = (filt(y * y) - uy * uy) * n / (n - 1)
    cxy = (filt(x * y) - ux * uy) * n / (n - 1)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * cxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    expected = ssim_map[3:-3, 3:-3].mean()  # scikit-image drops the borders the window overhangs
    assert scores[2] == pytest.approx(expected, abs=1e-6)


def test_multiclass_scores_by_hand():
    labels = [0, 0, 1, 1, 2, 2]
    probabilities = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.1, .6, .3], [.2, .2, .6], [.5, .2, .3]])
    s = metrics.multiclass_scores(labels, probabilities)
    # predictions 0, 1, 1, 1, 2, 0: class 0 P 1/2 R 1/2; class 1 P 2/3 R 1; class 2 P 1 R 1/2
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert s["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert s["f1_1"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    # one-vs-rest AUCs by pair counting: class 0 6.5/8, class 1 7/8, class 2 7.5/8; their mean
    assert s["auc"] == pytest.approx((0.8125 + 0.875 + 0.9375) / 3) == pytest.approx(0.875)
    assert math.isnan(metrics.multiclass_scores([0, 1, 1], probabilities[:3])["auc"])  # class 2 absent


def test_multiclass_auc_is_the_unweighted_mean_of_one_vs_rest():
    """Imbalanced classes (4, 1, 1), where the averages differ: one-vs-rest AUCs 6/8, 5/5 and 3.5/5
    by pair counting; the unweighted (macro) mean 0.8167, not the prevalence-weighted 0.7833 nor
    one-vs-one's 0.8542."""
    labels = [0, 0, 0, 0, 1, 2]
    probabilities = np.array([[.7, .2, .1], [.6, .3, .1], [.3, .5, .2], [.2, .2, .6], [.1, .8, .1], [.4, .4, .2]])
    assert metrics.multiclass_scores(labels, probabilities)["auc"] == pytest.approx((0.75 + 1.0 + 0.7) / 3)


def test_binary_precision_and_recall_are_macro_means():
    s = metrics.classification_scores([0, 0, 1, 1], [0.2, 0.7, 0.9, 0.8])  # predictions 0, 1, 1, 1
    assert s["precision"] == pytest.approx((1 + 2 / 3) / 2) and s["recall"] == pytest.approx((1 / 2 + 1) / 2)
