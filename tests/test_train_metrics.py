"""Metrics against hand-computed values and sklearn."""
import numpy as np
import pytest

from mer.train.metrics import classification_metrics, regression_metrics, summarize


def test_classification_by_hand():
    y = [0, 0, 0, 0, 1, 1, 2, 2]
    p = [0, 0, 0, 1, 1, 0, 2, 1]
    m = classification_metrics(y, p, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(5 / 8)
    # recall a 3/4, b 1/2, c 1/2; class d has no test rows and does not enter UA
    assert m["ua"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert m["confusion"][0] == [3, 1, 0, 0] and m["confusion"][2] == [0, 1, 1, 0]
    assert m["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
    from sklearn.metrics import balanced_accuracy_score, f1_score

    assert m["ua"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, p, average="weighted"))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))


def test_regression_by_hand():
    y = np.array([-2.2, -0.4, 0.0, 1.6, 2.9])
    p = np.array([-1.8, 0.3, -0.2, 1.4, 2.0])
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(np.mean(np.abs(y - p)))
    assert m["corr"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    assert m["acc2"] == pytest.approx(3 / 5)          # >= 0 vs < 0: -0.4/0.3 and 0.0/-0.2 wrong
    assert m["acc2_nonzero"] == pytest.approx(3 / 4)  # y == 0 left out
    assert m["acc7"] == pytest.approx(3 / 5)          # rounded: -2/-2, 0/0, 0/0 right; 2/1, 3/2 wrong
    assert np.isnan(regression_metrics([1.0, 1.0], [0.5, 0.7])["corr"])


def test_summarize_folds_and_seeds():
    folds = [{"seed": 0, "ua": 0.5}, {"seed": 0, "ua": 0.7}]
    mean, std, over = summarize(folds, ["ua"])
    assert over == "folds" and mean["ua"] == pytest.approx(0.6) and std["ua"] == pytest.approx(0.1)
    folds += [{"seed": 1, "ua": 0.8}, {"seed": 1, "ua": 0.8}]
    mean, std, over = summarize(folds, ["ua"])
    assert over == "seeds" and mean["ua"] == pytest.approx(0.7) and std["ua"] == pytest.approx(0.1)
