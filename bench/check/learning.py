"""Does an implementation learn like NumPy? A test whose false-alarm rate is measured.

The data: each backend's final test accuracy over its seeds (one seed fixes the initial
parameters, the data order and the backend's own dropout stream). ``compare(a, b)`` decides,
at ``ALPHA`` = 5 %:

- **differs**: Welch's t-test of the two means (unequal variances, Welch-Satterthwaite
  degrees of freedom), two-sided;
- **same within the margin**: two one-sided tests (TOST) against ``MARGIN`` (0.2 percentage
  points of test accuracy): the 90 % interval of the difference lies inside ``+-MARGIN``;
- neither: **not decidable** with these seeds. Fewer than ``MIN_SEEDS`` (5) on either side is
  never decided: one seed has no spread to judge a difference by, and three can underrate it
  badly (the committed 3-seed dnn runs' seeds spread 2-3x less than 10-20 seeds showed, and
  read as a difference that 10 seeds per backend did not find).

``mdd`` is the smallest true difference the test detects with 80 % power at those seeds and
that spread, ``(t_0.975 + t_0.80) x se``: the figure to quote beside "same".

The seed sets are treated as independent. For an implementation against NumPy on the same
seeds they are not quite (both start from the same parameters and see the same data order),
which makes the test conservative there; the A/A control is exactly independent:
``aa_control`` compares NumPy on one seed set with NumPy on another (the ``learning``
profile gives NumPy twice the seeds), and ``false_alarm_rate`` re-splits NumPy's seeds at
random many times and counts how often ``compare`` says "differs" (about ``ALPHA`` when the
test holds its level; a permutation estimate, the splits share seeds). No SciPy: Student's t
quantiles come from the Cornish-Fisher expansion below (within 4e-3 of the exact value for
``df >= 3``, 3e-2 at ``df = 2``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
MARGIN = 0.002  # 0.2 percentage points of test accuracy
POWER = 0.80
MIN_SEEDS = 5


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (Cornish-Fisher expansion in 1/df around the normal's)."""
    z = statistics.NormalDist().inv_cdf(p)
    if not math.isfinite(df) or df > 1e6:
        return z
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass(frozen=True)
class Comparison:
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    difference: float  # mean_a - mean_b
    se: float
    df: float
    ci90: tuple[float, float]
    mdd: float
    differs: bool
    equivalent: bool

    @property
    def verdict(self) -> str:
        pp = f"+-{100 * MARGIN:.1f} pp"
        n = min(self.n_a, self.n_b)
        if n < MIN_SEEDS:
            return f"not decidable ({n} seed{'s' if n != 1 else ''}; at least {MIN_SEEDS} needed)"
        if self.equivalent and not self.differs:
            return f"same (within {pp})"
        if self.equivalent:
            return f"same within {pp} (a {100 * self.difference:+.2f} pp difference detected)"
        if self.differs:
            return f"DIFFERS ({100 * self.difference:+.2f} pp)"
        return f"not decidable with {self.n_a}/{self.n_b} seeds"


def compare(a: list[float] | np.ndarray, b: list[float] | np.ndarray, margin: float = MARGIN) -> Comparison:
    """``a`` against ``b`` (final accuracies, one per seed): the tests above."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = len(a), len(b)
    d = float(a.mean() - b.mean()) if na and nb else math.nan
    if min(na, nb) < 2:
        return Comparison(
            na, nb, _mean(a), _mean(b), d, math.nan, math.nan, (math.nan, math.nan), math.nan, False, False
        )
    va, vb = float(a.var(ddof=1)) / na, float(b.var(ddof=1)) / nb
    se = math.sqrt(va + vb)
    if se == 0.0:  # identical results on every seed: nothing varies, the difference is exact
        enough = min(na, nb) >= MIN_SEEDS
        return Comparison(na, nb, _mean(a), _mean(b), d, 0.0, math.inf, (d, d), 0.0, enough and d != 0.0,
                          enough and abs(d) < margin)  # fmt: skip
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t2, t1 = t_quantile(1 - ALPHA / 2, df), t_quantile(1 - ALPHA, df)
    ci = (d - t1 * se, d + t1 * se)
    return Comparison(
        n_a=na,
        n_b=nb,
        mean_a=_mean(a),
        mean_b=_mean(b),
        difference=d,
        se=se,
        df=df,
        ci90=ci,
        mdd=(t2 + t_quantile(POWER, df)) * se,
        differs=abs(d) / se > t2 and min(na, nb) >= MIN_SEEDS,
        equivalent=-margin < ci[0] and ci[1] < margin and min(na, nb) >= MIN_SEEDS,
    )


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else math.nan


def false_alarm_rate(values: list[float] | np.ndarray, trials: int = 2000, seed: int = 0) -> float:
    """How often ``compare`` says "differs" between two random halves of one implementation's
    seeds (no true difference): the measured false-alarm rate."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 * MIN_SEEDS:
        return math.nan
    rng = np.random.default_rng(seed)
    half = len(v) // 2
    hits = 0
    for _ in range(trials):
        p = rng.permutation(len(v))
        hits += compare(v[p[:half]], v[p[half : 2 * half]]).differs
    return hits / trials
