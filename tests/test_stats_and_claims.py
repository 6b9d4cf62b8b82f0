"""fmbook.core.stats and fmbook.core.claims against hand-computed values and reference libraries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from fmbook.core import stats
from fmbook.core.claims import CONTRADICTED, HOLDS, NOT_RESOLVED, Claim, ClaimError, decide, interval_text


def test_wilson_matches_the_formula_and_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    iv = stats.wilson(7, 20)
    # by hand: p=0.35, z=1.959964; centre=(p+z^2/2n)/(1+z^2/n), half=z*sqrt(p(1-p)/n+z^2/4n^2)/(1+z^2/n)
    z = 1.959963984540054
    p, n = 0.35, 20
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert iv.low == pytest.approx(centre - half) and iv.high == pytest.approx(centre + half)
    low, high = proportion_confint(7, 20, method="wilson")
    assert (iv.low, iv.high) == pytest.approx((low, high))
    assert stats.wilson(0, 10).low == 0.0 and stats.wilson(10, 10).high == pytest.approx(1.0)


def test_t_interval_by_hand_and_unbounded_for_one_value():
    x = [1.0, 2.0, 3.0, 4.0]
    iv = stats.t_interval(x)
    se = np.std(x, ddof=1) / 2
    assert iv.estimate == 2.5
    assert iv.half_width == pytest.approx(st.t.ppf(0.975, 3) * se)
    one = stats.t_interval([0.4])
    assert one.low == -math.inf and one.high == math.inf


def test_bootstrap_intervals_are_seeded_and_cover_the_estimate():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, size=200)
    a = stats.bootstrap_interval(x, seed=3)
    b = stats.bootstrap_interval(x, seed=3)
    assert a == b and a.low < x.mean() < a.high
    # paired: a constant shift of 0.5 gives exactly 0.5 in every resample
    iv = stats.paired_bootstrap(x + 0.5, x, seed=1)
    assert iv.estimate == pytest.approx(0.5) and iv.low == pytest.approx(0.5) and iv.high == pytest.approx(0.5)


def test_mcnemar_counts_discordant_pairs_and_matches_binomtest():
    base = [True, True, False, False, False, True, False]
    treat = [True, False, True, True, True, True, False]
    out = stats.mcnemar(base, treat)
    assert (out["gained"], out["lost"]) == (3, 1)
    assert out["p_value"] == pytest.approx(st.binomtest(3, 4, 0.5).pvalue)
    assert stats.mcnemar([True], [True])["p_value"] == 1.0


def test_holm_and_bonferroni_level():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.adjust_level(0.95, 2) == pytest.approx(0.975)


def test_minimum_detectable_effects_by_hand():
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)
    assert stats.minimum_detectable_mean(2.0, 16) == pytest.approx(z * 2.0 / 4)
    assert stats.minimum_detectable_difference(0.5, 100) == pytest.approx(z * math.sqrt(0.5 / 100))
    assert stats.minimum_detectable_difference(0.5, 100, discordance=0.2) == pytest.approx(z * math.sqrt(0.002))


@pytest.mark.parametrize("bad", [lambda: stats.wilson(3, 0), lambda: stats.t_interval([]),
                                 lambda: stats.t_interval([1, 2], level=1.5), lambda: stats.adjust_level(0.95, 0)])
def test_bad_input_is_refused(bad):
    with pytest.raises(stats.StatsError):
        bad()


def test_verdicts_come_from_the_interval_only():
    assert decide(0.1, 0.5) == HOLDS
    assert decide(-0.5, -0.1) == CONTRADICTED
    assert decide(-0.1, 0.9) == NOT_RESOLVED  # a positive point estimate is not enough
    assert decide(-0.5, -0.1, "decrease") == HOLDS
    assert decide(0.1, 0.5, "decrease") == CONTRADICTED
    assert decide(-0.2, 0.2, "equivalent", margin=0.5) == HOLDS
    assert decide(0.6, 0.9, "equivalent", margin=0.5) == CONTRADICTED
    assert decide(0.2, 0.9, "equivalent", margin=0.5) == NOT_RESOLVED
    assert decide(float("nan"), 1.0) == NOT_RESOLVED
    assert decide(2.0, 3.0, null=2.5) == NOT_RESOLVED


def test_claim_rows_carry_the_verdict_and_refuse_bad_input():
    c = Claim.from_interval("X beats Y", stats.t_interval([2.0, 2.5, 3.0]), "X - Y over 3 seeds",
                            paper=2.5, paper_source="Table 1", unit="points")
    row = c.row()
    assert row["verdict"] == c.verdict == HOLDS and row["n"] == 3
    assert interval_text(row).startswith("+2.50 [")
    unbounded = Claim.from_interval("one seed", stats.t_interval([1.0]), "one seed").row()
    assert unbounded["low"] is None and unbounded["verdict"] == NOT_RESOLVED
    with pytest.raises(ClaimError):
        Claim("x", 0.0, -1.0, 1.0, "c", direction="sideways")
    with pytest.raises(ClaimError):
        Claim("x", 0.0, -1.0, 1.0, "c", direction="equivalent")  # no margin
