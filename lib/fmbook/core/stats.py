"""Intervals, tests and effect sizes shared by every chapter.

Each function returns plain numbers, so that the claims of a chapter (:mod:`fmbook.core.claims`)
can be decided from an interval. Where scipy or statsmodels has the procedure, it is used; the unit
tests compare with hand-computed values.

* proportions: :func:`wilson` (Wilson score interval), :func:`mcnemar` (exact, on discordant pairs);
* means: :func:`t_interval` (one sample, or paired differences), :func:`bootstrap_interval`
  (percentile bootstrap of any statistic), :func:`paired_bootstrap` (resampling paired units);
* several comparisons: :func:`adjust_level` (the per-comparison confidence level under Bonferroni)
  and :func:`holm` (Holm-adjusted p-values);
* what a sample could see: :func:`minimum_detectable_difference` (paired or two proportions) and
  :func:`minimum_detectable_mean` (paired means over units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _st


class StatsError(ValueError):
    """An interval or test was asked for with an impossible input (empty sample, level outside (0,1))."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided interval at ``level`` (e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    method: str = ""
    n: int = 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}]"


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise StatsError(f"level must lie strictly between 0 and 1, got {level}")
    return float(level)


def _as_array(values: Sequence[float], name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise StatsError(f"{name} is empty")
    return arr


def wilson(successes: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval of a proportion ``successes / n``."""
    _check_level(level)
    if n <= 0 or not 0 <= successes <= n:
        raise StatsError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = _st.norm.ppf(0.5 + level / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, float(max(0.0, centre - half)), float(min(1.0, centre + half)), level, "Wilson", n)


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean with a Student-t interval. Pass paired differences for a paired interval.

    With a single value the interval is unbounded (``-inf, inf``): one seed resolves nothing.
    """
    _check_level(level)
    x = _as_array(values)
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, -np.inf, np.inf, level, "t (n=1: unbounded)", 1)
    se = float(x.std(ddof=1) / np.sqrt(x.size))
    half = float(_st.t.ppf(0.5 + level / 2, df=x.size - 1)) * se
    return Interval(mean, mean - half, mean + half, level, "t", int(x.size))


def bootstrap_interval(values: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean,
                       level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over the units in ``values`` (axis 0)."""
    _check_level(level)
    x = np.asarray(values, dtype=float)
    if x.shape[0] == 0:
        raise StatsError("values is empty")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=(n_boot, x.shape[0]))
    boot = np.array([statistic(x[i]) for i in idx])
    alpha = 1 - level
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Interval(float(statistic(x)), float(low), float(high), level, f"bootstrap ({n_boot})", int(x.shape[0]))


def paired_bootstrap(treated: Sequence[float], baseline: Sequence[float],
                     statistic: Callable[[np.ndarray, np.ndarray], float] | None = None,
                     level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Bootstrap interval of ``statistic(treated, baseline)`` resampling *pairs* (default: mean difference)."""
    a, b = np.asarray(treated, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise StatsError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    if a.shape[0] == 0:
        raise StatsError("paired samples are empty")
    stat = statistic or (lambda x, y: float(np.mean(x) - np.mean(y)))
    _check_level(level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.shape[0], size=(n_boot, a.shape[0]))
    boot = np.array([stat(a[i], b[i]) for i in idx])
    alpha = 1 - level
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Interval(float(stat(a, b)), float(low), float(high), level, f"paired bootstrap ({n_boot})", int(a.shape[0]))


def mcnemar(baseline_correct: Sequence[bool], treated_correct: Sequence[bool]) -> dict:
    """Exact McNemar test on paired right/wrong outcomes (two-sided binomial on the discordant pairs)."""
    a = np.asarray(baseline_correct, dtype=bool)
    b = np.asarray(treated_correct, dtype=bool)
    if a.shape != b.shape:
        raise StatsError(f"paired outcomes differ in shape: {a.shape} vs {b.shape}")
    gained = int(np.sum(~a & b))
    lost = int(np.sum(a & ~b))
    n = gained + lost
    p = 1.0 if n == 0 else float(_st.binomtest(gained, n, 0.5).pvalue)
    return {"gained": gained, "lost": lost, "p_value": p}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels' ``multipletests(method="holm")``)."""
    from statsmodels.stats.multitest import multipletests

    p = _as_array(p_values, "p_values")
    return multipletests(p, method="holm")[1]


def adjust_level(level: float, comparisons: int) -> float:
    """Per-comparison confidence level that keeps ``level`` family-wide (Bonferroni)."""
    _check_level(level)
    if comparisons < 1:
        raise StatsError(f"comparisons must be at least 1, got {comparisons}")
    return 1 - (1 - level) / comparisons


def minimum_detectable_mean(sd: float, n: int, level: float = 0.95, power: float = 0.8) -> float:
    """Smallest true mean difference a two-sided paired t-test of ``n`` units detects with ``power``.

    Normal approximation: ``(z_{1-a/2} + z_{power}) * sd / sqrt(n)``.
    """
    _check_level(level)
    _check_level(power)
    if n < 1:
        raise StatsError(f"n must be at least 1, got {n}")
    return float((_st.norm.ppf(0.5 + level / 2) + _st.norm.ppf(power)) * sd / np.sqrt(n))


def minimum_detectable_difference(p: float, n: int, level: float = 0.95, power: float = 0.8,
                                  discordance: float | None = None) -> float:
    """Smallest difference in accuracy a comparison of ``n`` items at baseline accuracy ``p`` detects.

    Unpaired (two independent proportions, ``n`` each) by default; with ``discordance`` (the share of
    items on which the two conditions disagree), the paired McNemar approximation
    ``(z_a + z_b) * sqrt(discordance / n)``.
    """
    _check_level(level)
    _check_level(power)
    if n < 1 or not 0 <= p <= 1:
        raise StatsError(f"need n >= 1 and 0 <= p <= 1, got n={n}, p={p}")
    z = _st.norm.ppf(0.5 + level / 2) + _st.norm.ppf(power)
    if discordance is not None:
        return float(z * np.sqrt(discordance / n))
    return float(z * np.sqrt(2 * p * (1 - p) / n))
