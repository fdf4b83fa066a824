"""Temperature scaling, calibration error and the "unknown" threshold against their definitions."""
import math

import numpy as np
import pytest
import torch

from tlcore import calibration


def _overconfident(n: int = 4000, classes: int = 5, seed: int = 0):
    """Logits of a model that is right ~70% of the time but ~99% sure: scaled-up true scores."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    clean = torch.randn(n, classes, generator=g)
    clean[torch.arange(n), labels] += 1.5
    return clean * 6.0, labels


def _nll(logits, labels, t):
    return float(torch.nn.functional.cross_entropy(logits / t, labels))


def test_temperature_lowers_nll_of_an_overconfident_model():
    logits, labels = _overconfident()
    t = calibration.fit_temperature(logits, labels)
    assert t > 2.0  # the logits were inflated six-fold
    assert _nll(logits, labels, t) < 0.8 * _nll(logits, labels, 1.0)
    # A minimum: a grid around it does no better.
    for other in np.linspace(0.5 * t, 1.5 * t, 21):
        assert _nll(logits, labels, t) <= _nll(logits, labels, float(other)) + 1e-6


def test_temperature_keeps_the_predictions():
    logits, labels = _overconfident()
    t = calibration.fit_temperature(logits, labels)
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))


def _ece_by_definition(probs, labels, bins=15):
    conf, pred = probs.max(1)
    conf, correct = conf.numpy().astype(np.float64), (pred == labels).numpy()
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = (conf > lo) & (conf <= hi) if b else (conf >= 0) & (conf <= hi)
        if members.any():
            total += members.mean() * abs(correct[members].mean() - conf[members].mean())
    return total


def test_expected_calibration_error_matches_its_definition():
    logits, labels = _overconfident()
    for t in (1.0, 3.0, 6.0):
        probs = torch.softmax(logits / t, 1)
        assert calibration.expected_calibration_error(probs, labels) == pytest.approx(
            _ece_by_definition(probs, labels), abs=1e-9)


def test_ece_falls_after_temperature_scaling():
    logits, labels = _overconfident()
    result = calibration.calibrate(logits, labels)
    assert result["ece_after"] <= 0.5 * result["ece_before"]


def test_ece_of_a_perfectly_calibrated_model_is_small():
    g = torch.Generator().manual_seed(1)
    conf = torch.rand(20000, generator=g) * 0.5 + 0.5
    correct = torch.rand(20000, generator=g) < conf
    labels = torch.where(correct, torch.zeros(20000, dtype=torch.long), torch.ones(20000, dtype=torch.long))
    probs = torch.stack([conf, 1 - conf], 1)
    assert calibration.expected_calibration_error(probs, labels) < 0.02


def test_floor_keeps_the_share_of_correct_images_it_promises():
    logits, labels = _overconfident(n=997)
    probs = torch.softmax(logits / 4, 1)
    energy = torch.logsumexp(logits, 1)
    is_correct = probs.argmax(1) == labels
    for score in (probs.max(1).values, energy):
        correct = score[is_correct]
        for keep in (0.5, 0.9, 0.95, 0.98, 1.0):
            t = calibration.keep_floor(score, is_correct, keep)
            kept = float((correct >= t).double().mean())
            assert kept >= keep
            # The highest such floor: any higher candidate keeps too few.
            higher = correct[correct > t]
            if higher.numel():
                assert float((correct >= higher.min()).double().mean()) < keep
        assert calibration.keep_floor(score, is_correct, 1.0) == pytest.approx(float(correct.min()))


def test_scores_are_the_tempered_softmax_and_the_logsumexp():
    logits, _ = _overconfident(n=50)
    probs, energy = calibration.scores(logits, 2.5)
    torch.testing.assert_close(probs, torch.softmax(logits / 2.5, 1))
    torch.testing.assert_close(energy, torch.logsumexp(logits, 1))  # the raw logits'


def test_unknown_scores_follow_the_rule_by_definition():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    energy = torch.tensor([5.0, 1.0, 3.0, 4.0])
    labels = torch.tensor([0, 1, 1, 0])
    s = calibration.unknown_scores(probs, energy, labels, 0.65, None)
    assert s["unknown_share"] == pytest.approx(0.5)  # 0.6 and 0.55 fall below
    assert s["accuracy_answered"] == pytest.approx(1.0)  # 0.9 -> 0 and 0.7 -> 1 are right
    assert math.isnan(calibration.unknown_scores(probs, energy, labels, 1.0, None)["accuracy_answered"])
    # The energy floor alone: below 3.5 is unknown (energies 1 and 3), whatever the confidence.
    e = calibration.unknown_scores(probs, energy, labels, 0.0, 3.5)
    assert e["unknown_share"] == pytest.approx(0.5) and e["accuracy_answered"] == pytest.approx(0.5)
    assert e["unknown_rule"] == "energy < 3.500"
    # Either floor is enough: 0.6 (conf), 0.55 (conf) and energy 3 fall.
    assert calibration.unknown_scores(probs, energy, labels, 0.65, 3.5)["unknown_share"] == pytest.approx(0.75)
    assert calibration.unknown_scores(probs, energy, labels, 0.0, None)["unknown_share"] == 0.0


def test_calibrate_sets_an_energy_floor_keeping_its_share():
    logits, labels = _overconfident(n=997)
    result = calibration.calibrate(logits, labels, keep=0.9)
    assert result["threshold"] == 0.0
    energy = torch.logsumexp(logits, 1)[logits.argmax(1) == labels]
    assert float((energy >= result["min_energy"]).double().mean()) >= 0.9


def test_keep_out_of_range():
    with pytest.raises(ValueError, match="keep"):
        calibration.keep_floor(torch.ones(2), torch.ones(2, dtype=torch.bool), 0.0)
