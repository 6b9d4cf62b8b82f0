"""A paper's claim beside our measurement, decided by an interval.

Every chapter's library module has a ``claims(...)`` function that returns a list of :class:`Claim`.
The paper-vs-ours notebook shows them (``run.claims(rows)``), the results file stores them, and the
book's *Reproduction status* page lists them. The verdict is one of three and comes from the
interval only, never from the sign of the point estimate:

* ``holds``: the whole interval lies on the paper's side of "no effect";
* ``contradicted``: the whole interval lies on the other side;
* ``not resolved``: the interval contains "no effect".

For a claim of *no difference* ("stays close to zero-shot") the paper's side is a band
``null ± margin`` fixed before the run: ``holds`` when the interval lies inside the band,
``contradicted`` when it lies wholly outside, ``not resolved`` otherwise.

``resolvable`` states how large an effect the sample could have seen (for example the half-width
of the interval, or a minimum detectable effect from :mod:`fmbook.core.stats`), in the claim's unit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fmbook.core.stats import Interval

HOLDS = "holds"
CONTRADICTED = "contradicted"
NOT_RESOLVED = "not resolved"
VERDICTS = (HOLDS, CONTRADICTED, NOT_RESOLVED)
DIRECTIONS = ("increase", "decrease", "equivalent")

Direction = Literal["increase", "decrease", "equivalent"]


class ClaimError(ValueError):
    """A claim was built with an impossible direction, interval or margin."""


def decide(low: float, high: float, direction: str = "increase", null: float = 0.0,
           margin: float = 0.0) -> str:
    """The three-way verdict from an interval ``[low, high]`` (see the module docstring)."""
    if direction not in DIRECTIONS:
        raise ClaimError(f"unknown direction {direction!r}; allowed: {', '.join(DIRECTIONS)}")
    if any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return NOT_RESOLVED
    if low > high:
        raise ClaimError(f"interval is reversed: low {low} > high {high}")
    if direction == "increase":
        return HOLDS if low > null else CONTRADICTED if high < null else NOT_RESOLVED
    if direction == "decrease":
        return HOLDS if high < null else CONTRADICTED if low > null else NOT_RESOLVED
    if margin <= 0:
        raise ClaimError("a claim of no difference needs a margin > 0, fixed before the run")
    if null - margin <= low and high <= null + margin:
        return HOLDS
    if low > null + margin or high < null - margin:
        return CONTRADICTED
    return NOT_RESOLVED


@dataclass(frozen=True)
class Claim:
    """One paper-vs-ours row.

    ``claim`` is the paper's statement in words; ``paper`` its number as printed (``None`` for a
    qualitative statement) and ``paper_source`` where it is printed ("Table 1", "Figure 2, read from
    the figure's vector data"). ``estimate``/``low``/``high`` are ours, in ``unit``; ``comparison``
    says what was compared and how the interval was made.
    """

    claim: str
    estimate: float
    low: float
    high: float
    comparison: str
    paper: float | str | None = None
    paper_source: str = ""
    unit: str = ""
    direction: Direction = "increase"
    null: float = 0.0
    margin: float = 0.0
    level: float = 0.95
    n: int = 0
    resolvable: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        decide(self.low, self.high, self.direction, self.null, self.margin)  # validates

    @property
    def verdict(self) -> str:
        return decide(self.low, self.high, self.direction, self.null, self.margin)

    @classmethod
    def from_interval(cls, claim: str, interval: Interval, comparison: str, **kwargs: Any) -> "Claim":
        kwargs.setdefault("level", interval.level)
        kwargs.setdefault("n", interval.n)
        return cls(claim=claim, estimate=interval.estimate, low=interval.low, high=interval.high,
                   comparison=comparison, **kwargs)

    def row(self) -> dict[str, Any]:
        """A JSON-ready dict (results files, status page) with the verdict included."""
        out = asdict(self)
        out["verdict"] = self.verdict
        for key in ("estimate", "low", "high", "resolvable"):
            v = out[key]
            if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
                out[key] = None
        return out


def interval_text(row: dict[str, Any] | Claim, digits: int = 2) -> str:
    """``"+3.46 [+1.20, +5.71] points"``; an unbounded side is written as ``∞``."""
    r = row.row() if isinstance(row, Claim) else row

    def f(v: Any) -> str:
        if v is None:
            return "∞"
        return f"{v:+.{digits}f}"

    unit = f" {r.get('unit')}" if r.get("unit") else ""
    return f"{f(r['estimate'])} [{f(r['low']) if r['low'] is not None else '−∞'}, {f(r['high'])}]{unit}"
