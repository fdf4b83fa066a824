"""Classification metrics against scikit-learn, the oracle."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from tlcore import _core


@pytest.mark.parametrize("seed,n,k", [(0, 500, 5), (1, 37, 10), (2, 1000, 3)])
def test_report_matches_sklearn(seed, n, k):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    # Biased predictions so scores differ between classes; some classes never predicted.
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, max(k - 1, 1), n))
    r = _core.classification_report(y_true.tolist(), y_pred.tolist(), k)
    labels = list(range(k))
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    np.testing.assert_array_equal(r["confusion"].numpy(), skm.confusion_matrix(y_true, y_pred, labels=labels))
    p, rc, f1, sup = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    np.testing.assert_allclose([c["precision"] for c in r["per_class"]], p)
    np.testing.assert_allclose([c["recall"] for c in r["per_class"]], rc)
    np.testing.assert_allclose([c["f1"] for c in r["per_class"]], f1)
    np.testing.assert_array_equal([c["support"] for c in r["per_class"]], sup)
    for avg in ("macro", "weighted"):
        p, rc, f1, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=avg, zero_division=0)
        assert r[avg]["precision"] == pytest.approx(p)
        assert r[avg]["recall"] == pytest.approx(rc)
        assert r[avg]["f1"] == pytest.approx(f1)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_matches_sklearn(k):
    rng = np.random.default_rng(k)
    scores = rng.random((300, 7)).astype(np.float32)
    y_true = rng.integers(0, 7, 300)
    expected = skm.top_k_accuracy_score(y_true, scores, k=k, labels=list(range(7)))
    assert _core.top_k_accuracy(torch.from_numpy(scores), y_true.tolist(), k) == pytest.approx(expected)


def test_bad_labels_raise_value_error():
    with pytest.raises(ValueError, match="outside"):
        _core.classification_report([0, 5], [0, 1], 3)
    with pytest.raises(ValueError, match="predictions"):
        _core.classification_report([0, 1], [0], 3)
