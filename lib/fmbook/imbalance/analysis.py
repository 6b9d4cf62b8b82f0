"""Results over seeds, and the paper's claims decided by intervals.

All intervals are Student-t intervals over seeds (the seed draws the long-tailed set, its class order
and the training randomness); differences are paired by seed. The claims use Bonferroni-adjusted
levels over every interval they compute (:func:`claims`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fmbook.core import stats
from fmbook.core.claims import Claim
from fmbook.imbalance import losses as L
from fmbook.imbalance.data import ImbalanceError
from fmbook.imbalance.train import METHOD_LABELS, METRICS

IMBALANCE_AWARE = tuple(loss for loss in L.LOSSES if loss != "ce")  # every stage-1 loss but plain CE


def summarise(rows: pd.DataFrame, level: float = 0.95, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Mean and t-interval half-width over seeds for every (dataset, method) and metric (in %)."""
    out = []
    for (ratio, method), group in rows.groupby(["ratio", "method"], sort=False):
        row = {"dataset": group["dataset"].iloc[0], "ratio": ratio, "method": method,
               "label": METHOD_LABELS.get(method, method), "seeds": int(group["seed"].nunique())}
        for m in metrics:
            values = group[m].to_numpy(dtype=float) * 100
            if np.all(np.isnan(values)):
                row[m], row[f"{m}_pm"] = np.nan, np.nan
                continue
            iv = stats.t_interval(values[~np.isnan(values)], level)
            row[m], row[f"{m}_pm"] = iv.estimate, iv.half_width if np.isfinite(iv.half_width) else np.nan
        out.append(row)
    return pd.DataFrame(out)


def _paired(rows: pd.DataFrame, ratio: float, treated: str | Sequence[str], baseline: str, metric: str) -> np.ndarray:
    """Per-seed difference (in points) ``mean(treated methods) - baseline`` on ``metric`` at ``ratio``."""
    treated = [treated] if isinstance(treated, str) else list(treated)
    sub = rows[rows["ratio"] == ratio]
    table = sub.pivot_table(index="seed", columns="method", values=metric, aggfunc="first")
    missing = [m for m in treated + [baseline] if m not in table.columns]
    if missing:
        raise ImbalanceError(f"results lack methods {missing} at ratio {ratio:g}; run them first")
    return 100 * (table[treated].mean(axis=1) - table[baseline]).to_numpy(dtype=float)


@dataclass(frozen=True)
class ClaimPlan:
    """The comparisons, fixed before the run.

    1. *The decoder beats zero-shot*: decoder + cross-entropy minus zero-shot, overall accuracy, at
       every ratio (the plain decoder, not the best variant: no selection after the fact).
    2. *Imbalance-aware losses help the few-shot classes*: the mean few-shot accuracy of the seven
       imbalance-aware stage-1 losses minus that of cross-entropy, at every ratio that has few-shot
       classes.
    3. *Which method is best differs by dataset*: for ``pair = (a, b)`` the differences
       ``d_A = a - b`` on the mildest and ``d_B`` on the steepest set. The statistic
       ``R = max(min(d_A, -d_B), min(-d_A, d_B))`` is positive exactly when the two sets order the
       methods oppositely; its interval follows from the simultaneous intervals of ``d_A`` and ``d_B``
       (``R`` is monotone in each). holds: ``R > 0`` resolved (a rank reversal); contradicted: both
       differences resolved with the same sign; not resolved otherwise.
    """

    pair: tuple[str, str] = ("balanced_softmax", "ce")
    aware: tuple[str, ...] = IMBALANCE_AWARE
    level: float = 0.95


def claims(rows: pd.DataFrame, plan: ClaimPlan | None = None) -> list[Claim]:
    """The paper's three qualitative claims, from per-seed results (see :class:`ClaimPlan`)."""
    plan = plan or ClaimPlan()
    ratios = sorted(rows["ratio"].unique())
    if not ratios:
        raise ImbalanceError("rows is empty")
    few_ratios = [r for r in ratios if rows[(rows["ratio"] == r) & (rows["method"] == "ce")]["few"].notna().all()
                  and rows[(rows["ratio"] == r) & (rows["method"] == "ce")]["few"].size > 0]
    k = len(ratios) + len(few_ratios) + 2
    level = stats.adjust_level(plan.level, k)
    out: list[Claim] = []
    for r in ratios:
        iv = stats.t_interval(_paired(rows, r, "ce", "zero_shot", "overall"), level)
        out.append(Claim.from_interval(
            f"The lightweight decoder beats zero-shot (ρ={r:g})", iv,
            "decoder + cross-entropy minus zero-shot, overall top-1, paired by seed; t interval, "
            f"Bonferroni over {k}", paper="+6.58 / +69.82 / +6.17 points", paper_source="Abstract (ImageNet-LT / iNat18 / Places-LT, best variants)",
            unit="points", resolvable=iv.half_width if np.isfinite(iv.half_width) else None))
    for r in few_ratios:
        iv = stats.t_interval(_paired(rows, r, plan.aware, "ce", "few"), level)
        out.append(Claim.from_interval(
            f"Imbalance-aware losses help the few-shot classes (ρ={r:g})", iv,
            f"mean few-shot accuracy of {len(plan.aware)} imbalance-aware losses minus cross-entropy, paired by seed; "
            f"t interval, Bonferroni over {k}", paper="qualitative", paper_source="Abstract, Section 4",
            unit="points", resolvable=iv.half_width if np.isfinite(iv.half_width) else None))
    a, b = plan.pair
    mild, steep = ratios[0], ratios[-1]
    d_a = stats.t_interval(_paired(rows, mild, a, b, "overall"), level)
    d_b = stats.t_interval(_paired(rows, steep, a, b, "overall"), level)
    est = max(min(d_a.estimate, -d_b.estimate), min(-d_a.estimate, d_b.estimate))
    low = max(min(d_a.low, -d_b.high), min(-d_a.high, d_b.low))
    high = max(min(d_a.high, -d_b.low), min(-d_a.low, d_b.high))
    out.append(Claim(
        f"Which method is best differs by dataset ({METHOD_LABELS[a]} vs {METHOD_LABELS[b]}, ρ={mild:g} vs ρ={steep:g})",
        est, low, high,
        f"rank reversal R = max(min(d_A, -d_B), min(-d_A, d_B)) of the paired differences d (overall top-1; "
        f"d_A = {d_a.estimate:+.2f}, d_B = {d_b.estimate:+.2f} points); t intervals, Bonferroni over {k}",
        paper="qualitative", paper_source="Section 4 (results tables out of reach; not verified)", unit="points",
        level=level, n=min(d_a.n, d_b.n),
        resolvable=min(d_a.half_width, d_b.half_width) if np.isfinite(d_a.half_width) else None,
        note="datasets here are long-tailed Fashion-MNIST sets at different imbalance ratios"))
    return out


def claim_sentence(rows: Sequence[Claim]) -> str:
    """One sentence per claim, generated from its verdict (for glue)."""
    return " ".join(f"{c.claim}: {c.verdict} ({c.estimate:+.1f} points, interval {c.low:+.1f} to {c.high:+.1f})."
                    for c in rows)
