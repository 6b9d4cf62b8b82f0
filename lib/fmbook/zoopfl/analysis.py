"""Intervals, per-client gains and the chapter's claims, from the final evaluation of every run.

Input everywhere: a frame with one row per (method, seed, client) and its final ``accuracy``
(:meth:`fmbook.zoopfl.federated.Results.final`). A *unit* is one (seed, client) pair: comparisons
are paired on it (the same client, the same images, the same query budget), and intervals are
Student-t intervals over the paired differences (clients of one run share a server, so these
intervals treat clients as the population of interest, as personalised FL does).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from fmbook.core import stats
from fmbook.core.claims import Claim
from fmbook.zoopfl.blackbox import ZooPFLError
from fmbook.zoopfl.method import METHOD_LABELS

#: The three comparisons fixed before any run: (claim, treated method, baseline method).
CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("Black-box personalisation works: ZooPFL beats the black box alone", "zoopfl", "zero_shot"),
    ("Input surgery helps: ZooPFL beats ZooPFL without the auto-encoder (ZO on the raw input)",
     "zoopfl", "zoopfl_no_ae"),
    ("Re-mapping helps: ZooPFL beats ZooPFL without re-mapping", "zoopfl", "zoopfl_no_remap"),
)


def _finite(value: float) -> float:
    """An unbounded interval end (one seed) as NaN, which tables show as a dash."""
    return float(value) if np.isfinite(value) else float("nan")


def _check(final: pd.DataFrame, methods: Sequence[str]) -> None:
    missing = {"method", "seed", "client", "accuracy"} - set(final.columns)
    if missing:
        raise ZooPFLError(f"final results need columns method, seed, client, accuracy; missing {sorted(missing)}")
    absent = [m for m in methods if m not in set(final["method"])]
    if absent:
        raise ZooPFLError(f"no results for method(s) {absent}; present: {sorted(set(final['method']))}")


def paired_differences(final: pd.DataFrame, treated: str, baseline: str) -> pd.DataFrame:
    """Per (seed, client): accuracy of ``treated`` minus ``baseline``, in percentage points."""
    _check(final, [treated, baseline])
    a = final[final["method"] == treated].set_index(["seed", "client"])["accuracy"]
    b = final[final["method"] == baseline].set_index(["seed", "client"])["accuracy"]
    joined = pd.concat({"treated": a, "baseline": b}, axis=1).dropna()
    if joined.empty:
        raise ZooPFLError(f"{treated} and {baseline} share no (seed, client) pair")
    joined["gain"] = 100 * (joined["treated"] - joined["baseline"])
    return joined.reset_index()


def gain_interval(final: pd.DataFrame, treated: str, baseline: str, level: float = 0.95) -> stats.Interval:
    return stats.t_interval(paired_differences(final, treated, baseline)["gain"].to_numpy(), level)


def method_summary(final: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per method: mean accuracy over clients (in %), its t-interval over seeds, and the queries used."""
    rows = []
    for m, part in final.groupby("method", sort=False):
        per_seed = part.groupby("seed")["accuracy"].mean().to_numpy() * 100
        iv = stats.t_interval(per_seed, level)
        rows.append({"method": m, "label": METHOD_LABELS.get(m, m), "accuracy %": iv.estimate,
                     "low": _finite(iv.low), "high": _finite(iv.high), "seeds": len(per_seed),
                     "queries per client": float(part["queries"].mean()) if "queries" in part else np.nan})
    return pd.DataFrame(rows)


def per_client_table(final: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (method, client name): mean accuracy (in %) over seeds with its t-interval."""
    key = "client_name" if "client_name" in final else "client"
    rows = []
    for (m, c), part in final.groupby(["method", key], sort=False):
        iv = stats.t_interval(part["accuracy"].to_numpy() * 100, level)
        rows.append({"method": m, "client": c, "accuracy %": iv.estimate, "low": _finite(iv.low),
                     "high": _finite(iv.high)})
    return pd.DataFrame(rows)


def per_client_gains(final: pd.DataFrame, treated: str, baseline: str, level: float = 0.95) -> pd.DataFrame:
    """Per client name: gain of ``treated`` over ``baseline`` (points), mean and t-interval over seeds."""
    diffs = paired_differences(final, treated, baseline)
    if "client_name" in final:
        names = final.drop_duplicates(["seed", "client"]).set_index(["seed", "client"])["client_name"]
        diffs["client_name"] = [names[(s, c)] for s, c in zip(diffs["seed"], diffs["client"])]
    else:
        diffs["client_name"] = diffs["client"].astype(str)
    rows = []
    for name, part in diffs.groupby("client_name", sort=False):
        iv = stats.t_interval(part["gain"].to_numpy(), level)
        rows.append({"client": name, "gain": iv.estimate, "low": _finite(iv.low), "high": _finite(iv.high),
                     "n": iv.n})
    return pd.DataFrame(rows)


def claims(final: pd.DataFrame, level: float = 0.95) -> list[Claim]:
    """The chapter's three claims (:data:`CLAIMS`), each decided by a paired t-interval over
    (seed, client) units at the Bonferroni-adjusted level ``adjust_level(level, 3)``."""
    each = stats.adjust_level(level, len(CLAIMS))
    rows = []
    for text, treated, baseline in CLAIMS:
        iv = gain_interval(final, treated, baseline, each)
        rows.append(Claim.from_interval(
            text, iv, comparison=(f"{METHOD_LABELS[treated]} minus {METHOD_LABELS[baseline]}: final test accuracy, "
                                  f"paired over (seed, client), t-interval at {each:.3f} (Bonferroni, 3 claims), "
                                  "same clients and query budget"),
            paper=None, paper_source="abstract (qualitative)", unit="points", direction="increase",
            resolvable=iv.half_width if np.isfinite(iv.half_width) else None))
    return rows


def accuracy_at_budget(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy (over seeds) against mean queries per client, per method and round (figure data)."""
    return curves.groupby(["method", "round"], as_index=False)[["accuracy", "queries", "bytes_total"]].mean()
