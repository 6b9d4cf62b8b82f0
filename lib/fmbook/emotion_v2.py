"""The Good, the Bad, and Why (Li et al., arXiv 2312.11111, ICML 2024): the chapter's claims.

A facade over :mod:`fmbook.emotion_attack` (the good and the bad on the same items) and
:mod:`fmbook.emotion_decode` (the why). :func:`claims` turns their results into paper-vs-ours rows
(:class:`fmbook.core.claims.Claim`), each decided by an interval fixed before the run:

1. textual sentence-level EmotionAttack lowers accuracy (paper, abstract);
2. the word-level attack lowers accuracy (the paper's kind of attack, our insertion rule);
3. positive stimuli (EmotionPrompt's EP01-EP11 and Maslow's) raise accuracy on the same items;
4. the meta stimulus acts like the stimuli it averages: a claim of *no difference*, with the
   margin :data:`EQUIVALENCE_MARGIN` fixed here, before any run.

The four intervals are widened together (Bonferroni, :func:`fmbook.core.stats.adjust_level`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fmbook import emotion_attack as ea
from fmbook import emotion_decode as ed
from fmbook import emotion_prompt as ep
from fmbook.core import stats
from fmbook.core.claims import Claim

#: The largest accuracy difference (0-1 scale) between the meta soft prompt and the mean of the real
#: stimuli that we still call "acts like": 10 points, fixed before the run.
EQUIVALENCE_MARGIN = 0.10
N_CLAIMS = 4

#: What the paper says (abstract and overview figure; its tables were out of reach).
PAPER = {
    "attack": "EmotionAttack impairs the performance of AI models",
    "positive": "EmotionPrompt improves the performance of AI models",
    "meta": "the mean embedding of the stimuli (the 'meta' prompt) fed back changes performance like the stimuli",
    "source": "arXiv 2312.11111, abstract and overview figure",
}


def _resolvable(iv: stats.Interval, per_item: np.ndarray | None = None, p0: float = 0.5) -> float | None:
    """The larger of the interval's half-width and the smallest paired difference a sample of this
    size detects (:func:`fmbook.core.stats.minimum_detectable_difference`, at the observed share of
    items that changed, at least one item): an interval of width zero does not mean that any effect
    would have been seen."""
    half = float(iv.half_width) if np.isfinite(iv.half_width) else math.inf
    if per_item is None or len(per_item) == 0:
        return None if math.isinf(half) else half
    n = len(per_item)
    disc = max(float(np.mean(per_item != 0)), 1 / n)
    mdd = 100 * stats.minimum_detectable_difference(min(max(p0, 0.0), 1.0), n, iv.level, discordance=disc)
    best = max(half, mdd)
    return None if math.isinf(best) else best


def _per_item(results: pd.DataFrame, kind: str) -> tuple[np.ndarray, float]:
    sel = results[results.kind == kind]
    if sel.empty:
        return np.array([]), math.nan
    d = ea.paired_differences(results, list(dict.fromkeys(sel.condition))).mean(axis=1).dropna()
    base = results[results.condition == ep.BASELINE].set_index(["model", "mode", "task", "item"])["correct"]
    return d.to_numpy(), float(base.reindex(d.index).astype(float).mean())


def claims(results: pd.DataFrame, soft: pd.DataFrame | None = None, real: pd.DataFrame | None = None,
           meta: str = "meta (positive)", averaged: tuple[str, ...] = tuple(f"EP{i:02d}" for i in range(1, 12)),
           level: float = 0.95, margin: float = EQUIVALENCE_MARGIN) -> list[Claim]:
    """The chapter's claims from labelled attack results (:func:`fmbook.emotion_attack.evaluate`),
    and, when given, the soft-prompt results (:func:`fmbook.emotion_decode.evaluate_soft`) with the
    real stimuli's results on the same items (``real``, EmotionPrompt's evaluation).

    Units: accuracy points (0-100). Intervals: t over items (model x mode x item), each item's value
    the mean over the conditions of its kind minus the original prompt, at the Bonferroni-adjusted
    level for :data:`N_CLAIMS` comparisons.
    """
    per = stats.adjust_level(level, N_CLAIMS)
    out: list[Claim] = []

    def scaled(iv: stats.Interval) -> stats.Interval:
        return stats.Interval(100 * iv.estimate, 100 * iv.low, 100 * iv.high, iv.level, iv.method, iv.n)

    rows = [("attack", ea.KIND_ATTACK, "decrease", "Textual EmotionAttack (sentence level) lowers accuracy",
             "mean over attack sentences and placements minus the original prompt, per item"),
            ("word", ea.KIND_WORD, "decrease", "Word-level EmotionAttack lowers accuracy",
             "word-level attack (our insertion rule) minus the original prompt, per item"),
            ("positive", ea.KIND_POSITIVE, "increase", "Positive stimuli raise accuracy on the same items",
             "mean over EmotionPrompt and Maslow stimuli minus the original prompt, per item")]
    for key, kind, direction, text, comparison in rows:
        iv = scaled(ea.pooled_effect(results, kind, per))
        per_item, p0 = _per_item(results, kind)
        paper = PAPER["positive"] if kind == ea.KIND_POSITIVE else PAPER["attack"]
        out.append(Claim.from_interval(text, iv, comparison + f"; paired t interval over {iv.n} items, "
                                       f"level {per:.4f} (Bonferroni, {N_CLAIMS} claims)",
                                       paper=None, paper_source=f"{paper} ({PAPER['source']})",
                                       unit="points", direction=direction,
                                       resolvable=_resolvable(iv, per_item, p0), note=key))
    if soft is not None and real is not None:
        d = ed.equivalence(soft, real, meta, averaged)
        if len(d) >= 2:
            iv = scaled(stats.t_interval(d, per))
            iv = stats.Interval(iv.estimate, max(-100.0, iv.low), min(100.0, iv.high), iv.level, iv.method, iv.n)
        else:
            iv = stats.Interval(math.nan, math.nan, math.nan, per, "t", len(d))
        out.append(Claim.from_interval(
            "The meta stimulus acts like the stimuli it averages", iv,
            f"meta soft prompt minus the mean of the real stimuli {averaged[0]}-{averaged[-1]}, per item; "
            f"equivalence margin ±{100 * margin:.0f} points fixed before the run; paired t interval over "
            f"{iv.n} items, level {per:.4f}", paper=None, paper_source=f"{PAPER['meta']} ({PAPER['source']})",
            unit="points", direction="equivalent", margin=100 * margin,
            resolvable=_resolvable(iv, d, 0.5), note="meta"))
    return out
