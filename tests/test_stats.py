import math

import pytest
from scipy import stats

from digitnet.report.stats import corrected_resampled_ttest


def test_worked_example_by_hand():
    # d = a - b = [2, 1, 3, 0, 4] points; mean 2, s^2 = (0+1+1+4+4)/4 = 2.5 (in points^2)
    # 5-fold CV: n_test/n_train = 1/4.  t = 2 / sqrt((1/5 + 1/4) * 2.5) = 2 / sqrt(1.125) = 1.885618
    a = [0.99, 0.98, 0.97, 0.96, 0.99]
    b = [0.97, 0.97, 0.94, 0.96, 0.95]
    t, p = corrected_resampled_ttest(a, b, 0.25)
    assert t == pytest.approx(2 / math.sqrt(1.125), rel=1e-9)
    # Two-sided p of Student's t with 4 df at 1.8856: 0.1325 (tables: t_0.90,4 = 1.533, t_0.95,4 = 2.132).
    assert p == pytest.approx(0.13247, abs=2e-4)
    assert 0.1 < p < 0.2


def test_without_the_correction_it_is_the_paired_t_test():
    a = [0.991, 0.989, 0.990, 0.993, 0.988]
    b = [0.985, 0.987, 0.984, 0.990, 0.986]
    t, p = corrected_resampled_ttest(a, b, 0.0)
    ref = stats.ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # The correction only ever makes the test more cautious.
    t_nb, p_nb = corrected_resampled_ttest(a, b, 0.25)
    assert abs(t_nb) < abs(t) and p_nb > p


def test_identical_and_constant_differences():
    assert corrected_resampled_ttest([0.9, 0.8], [0.9, 0.8], 0.25) == (0.0, 1.0)
    t, p = corrected_resampled_ttest([0.5, 0.75], [0.25, 0.5], 0.25)
    assert t == math.inf and p == 0.0
