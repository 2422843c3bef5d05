"""Paired comparison of two configs scored on the same k folds."""

from __future__ import annotations

import math

import numpy as np

TEST_NAME = "Nadeau-Bengio corrected resampled t-test (paired, same folds)"


def corrected_resampled_ttest(a, b, test_train_ratio: float) -> tuple[float, float]:
    """(t, two-sided p) for mean(a - b) = 0, from per-fold scores of two configs on the same folds.

    Nadeau & Bengio (2003): the folds' training sets overlap, so the plain paired t-test underestimates the
    variance. The corrected variance is (1/k + n_test/n_train) * s^2 instead of s^2 / k; df = k - 1.
    With test_train_ratio = 0 this is the ordinary paired t-test.
    """
    from scipy import stats  # 0.7 s of import: not at start-up, where Hydra loads the sweep callback

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    k = len(d)
    if k < 2:
        return math.nan, math.nan
    mean, var = float(d.mean()), float(d.var(ddof=1))
    if var == 0:
        return (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / math.sqrt((1 / k + test_train_ratio) * var)
    return t, float(2 * stats.t.sf(abs(t), df=k - 1))
