"""Significance tests vs scipy.stats (permutation_test, ttest_rel) and Holm vs a loop + textbook example."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from multiteacher.errors import ConfigError, DataError
from multiteacher.stats import holm, paired_randomization_test, paired_t_test, paired_values


def _scipy_perm(a, b, alternative, n_resamples):
    return stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative=alternative,
        rng=0,
    )


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("n", [2, 6, 11])
def test_randomization_exact_matches_scipy(alternative, n):
    rng = np.random.default_rng(n)
    a = rng.uniform(size=n)
    b = a - 0.1 + rng.normal(scale=0.15, size=n)
    ours = paired_randomization_test(a, b, n_resamples=10_000, alternative=alternative)
    assert ours.method == "exact"
    ref = _scipy_perm(a, b, alternative, 10_000)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-12, abs=1e-15)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)


def test_randomization_exact_with_ties_and_zero_diffs():
    a = np.array([0.5, 0.5, 0.2, 0.7, 0.1, 0.3, 0.3, 0.9])
    b = np.array([0.5, 0.4, 0.3, 0.6, 0.1, 0.2, 0.3, 0.8])  # several zero diffs, tied |diffs|
    ours = paired_randomization_test(a, b)
    ref = _scipy_perm(a, b, "two-sided", 10_000)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    same = paired_randomization_test(a, a)
    assert same.p_value == 1.0 and same.statistic == 0.0
    one = paired_randomization_test([0.6], [0.2])  # n = 1: null is {+d, -d} -> two-sided p = 1
    assert one.p_value == 1.0 and paired_randomization_test([0.6], [0.2], alternative="greater").p_value == 0.5


def test_randomization_monte_carlo_seeded_and_close_to_exact():
    rng = np.random.default_rng(42)
    a = rng.uniform(size=16)
    b = a - 0.05 + rng.normal(scale=0.1, size=16)
    exact = paired_randomization_test(a, b, n_resamples=2**16)
    assert exact.method == "exact"
    mc1 = paired_randomization_test(a, b, n_resamples=20_000, seed=7)
    mc2 = paired_randomization_test(a, b, n_resamples=20_000, seed=7)
    assert mc1.method == "monte-carlo" and mc1 == mc2  # seeded: reproducible
    # binomial sd of a MC p near 0.1 with R=20000 is ~0.003
    assert abs(mc1.p_value - exact.p_value) < 0.015
    mc_big = paired_randomization_test(rng.uniform(size=43), rng.uniform(size=43), n_resamples=2000)
    ref = _scipy_perm(*np.random.default_rng(0).uniform(size=(2, 43)), "two-sided", 2000)
    assert 0 < mc_big.p_value <= 1 and 0 < ref.pvalue <= 1


def test_randomization_strong_effect_monte_carlo_floor():
    a = np.linspace(0.5, 0.9, 50)
    b = a - 0.2
    r = paired_randomization_test(a, b, n_resamples=999)
    assert r.p_value == pytest.approx(2 / 1000)  # (0 + 1) / (R + 1), doubled for two-sided


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_paired_t_matches_scipy(alternative):
    rng = np.random.default_rng(5)
    a = rng.normal(size=30)
    b = a + rng.normal(loc=0.2, size=30)
    ours = paired_t_test(a, b, alternative)
    ref = stats.ttest_rel(a, b, alternative=alternative)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-8)


def test_paired_t_degenerate():
    a = np.array([0.25, 0.5, 0.75])
    assert paired_t_test(a, a).p_value == 1.0
    r = paired_t_test(a + 0.125, a)  # exactly constant difference
    assert r.statistic == np.inf and r.p_value == 0.0
    assert paired_t_test(a + 0.125, a, "less").p_value == 1.0
    with pytest.raises(DataError):
        paired_t_test([1.0], [2.0])


def _holm_loop(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def test_holm_textbook_and_loop():
    # Wikipedia "Holm–Bonferroni method" example: p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05
    p = [0.01, 0.04, 0.03, 0.005]
    adj = holm(p)
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [x <= 0.05 for x in adj] == [True, False, False, True]
    rng = np.random.default_rng(6)
    for _ in range(20):
        q = list(rng.uniform(0, 0.2, size=rng.integers(1, 9)))
        assert holm(q) == pytest.approx(_holm_loop(q))
    assert holm({"a": 0.01, "b": 0.04}) == pytest.approx({"a": 0.02, "b": 0.04})
    assert holm([]) == []
    with pytest.raises(DataError):
        holm([0.1, 1.5])


def test_dict_inputs_and_errors():
    a = {"q1": 0.5, "q2": 0.7, "q3": 0.2}
    b = {"q3": 0.1, "q1": 0.4, "q2": 0.7}
    x, y = paired_values(a, b)
    assert x.tolist() == [0.5, 0.7, 0.2] and y.tolist() == [0.4, 0.7, 0.1]
    assert paired_randomization_test(a, b).statistic == pytest.approx(np.mean([0.1, 0.0, 0.1]))
    with pytest.raises(DataError, match="different keys"):
        paired_t_test(a, {"q1": 0.1, "q2": 0.2})
    with pytest.raises(DataError):
        paired_randomization_test([1.0, 2.0], [1.0])
    with pytest.raises(DataError):
        paired_randomization_test([], [])
    with pytest.raises(ConfigError):
        paired_t_test([1.0, 2.0], [1.0, 3.0], alternative="both")
