"""The learning-equivalence test (``bench.check.learning``) calibrated on simulated seeds: its
false-alarm rate, its power at the difference it claims to detect, and its verdicts' edges."""

from __future__ import annotations

import numpy as np
import pytest

from bench.check import learning

SD = 0.0012  # a dnn's seed-to-seed sd of final accuracy, as measured (about 0.1 pp)


def _verdicts(shift: float, n: int = 10, trials: int = 2000) -> tuple[float, float, float]:
    """(rate of 'differs', rate of 'same', median mdd) over simulated pairs of seed sets."""
    rng = np.random.default_rng(1)
    diff = same = 0
    mdd = []
    for _ in range(trials):
        c = learning.compare(0.975 + shift + SD * rng.standard_normal(n), 0.975 + SD * rng.standard_normal(n))
        diff += c.differs
        same += c.equivalent
        mdd.append(c.mdd)
    return diff / trials, same / trials, float(np.median(mdd))


def test_false_alarm_rate_is_the_level():
    """A/A, no true difference: 'differs' about 5 % of the time (binomial sd 0.5 % at 2000)."""
    differs, same, _ = _verdicts(0.0)
    assert 0.035 < differs < 0.065
    assert same > 0.9  # with 10 seeds each and this spread, sameness within 0.2 pp is decided


def test_power_at_the_detectable_difference_and_a_real_difference():
    _, _, mdd = _verdicts(0.0)
    differs, _, _ = _verdicts(mdd)
    assert 0.75 < differs < 0.85  # mdd is the 80 %-power difference
    differs, same, _ = _verdicts(0.005)  # 0.5 pp: the negative control of 'same'
    assert differs > 0.99 and same == 0.0


def test_fewer_than_five_seeds_are_never_decided():
    c = learning.compare([0.97], [0.98, 0.97, 0.975])
    assert c.verdict == "not decidable (1 seed; at least 5 needed)" and not c.differs and not c.equivalent
    # three seeds a side, a 1 pp gap with a tiny spread: still not decided (three underrate the spread)
    c = learning.compare([0.985, 0.9851, 0.9852], [0.975, 0.9751, 0.9752])
    assert c.verdict == "not decidable (3 seeds; at least 5 needed)" and not c.differs


def test_too_few_seeds_for_the_margin_is_not_decidable():
    rng = np.random.default_rng(3)
    c = learning.compare(0.975 + 0.004 * rng.standard_normal(5), 0.975 + 0.004 * rng.standard_normal(5))
    assert c.verdict.startswith("not decidable with 5/5 seeds"), c


@pytest.mark.parametrize(("p", "df", "want"), [(0.975, 3, 3.182), (0.975, 9, 2.262), (0.95, 9, 1.833), (0.8, 9, 0.883)])
def test_t_quantiles(p, df, want):
    assert learning.t_quantile(p, df) == pytest.approx(want, abs=4e-3)


def test_false_alarm_rate_of_real_halves():
    rng = np.random.default_rng(5)
    assert learning.false_alarm_rate(0.975 + SD * rng.standard_normal(20)) < 0.15
    assert np.isnan(learning.false_alarm_rate([0.97, 0.98, 0.975, 0.976]))  # halves below 5 seeds
