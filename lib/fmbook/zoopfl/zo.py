"""Zeroth-order (gradient-free) gradient estimates: what a client can compute through a black box.

Two estimators, as in the ZO literature ZooPFL builds on (arXiv 2310.05143, Sec. 3; the formulas
are the standard ones, the paper's exact choice of q and mu was not available to us):

* **random directions** (:func:`random_direction_gradient`), forward differences along ``q``
  directions ``u_j``::

      g = (s / (q mu)) * sum_j [l(z + mu u_j) - l(z)] u_j

  with ``u_j`` uniform on the unit sphere and ``s = d`` (``distribution="sphere"``), or ``u_j``
  standard Gaussian and ``s = 1`` (``distribution="gaussian"``). Both are unbiased estimates of the
  gradient of a *smoothed* loss; on a quadratic they are unbiased for the true gradient (the
  second-order term ``mu/2 u'Au u`` has zero mean by symmetry). Cost: ``q + 1`` evaluations.
* **coordinate-wise central differences** (:func:`coordinate_gradient`)::

      g_i = [l(z + mu e_i) - l(z - mu e_i)] / (2 mu)

  exact on a quadratic; cost ``2 d`` evaluations.

Everything is batched: ``z`` is ``(B, d)`` (one point per example; ``(d,)`` for a single point) and
``loss`` maps a stack of points ``(M, B, d)`` to losses ``(M, B)``; each row of ``M`` is one pass
of ``B`` examples through the black box, so an estimate costs ``B * (q + 1)`` or ``B * 2d`` queries
(:func:`queries_per_estimate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from fmbook.zoopfl.blackbox import QueryBudgetExceeded, ZooPFLError

ESTIMATORS = ("sphere", "gaussian", "coordinate")

LossFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ZOConfig:
    """Which estimator, how many directions ``q`` and which smoothing ``mu`` (our defaults)."""

    estimator: str = "sphere"  # sphere | gaussian | coordinate
    q: int = 5  # random directions per estimate (ignored by "coordinate")
    mu: float = 0.01  # smoothing radius / finite-difference step

    def __post_init__(self) -> None:
        check_estimator(self.estimator)
        check_q(self.q)
        check_mu(self.mu)

    def queries(self, dim: int, batch: int = 1) -> int:
        return queries_per_estimate(self.estimator, dim, self.q, batch)


def check_estimator(name: str) -> str:
    if name not in ESTIMATORS:
        raise ZooPFLError(f"unknown zeroth-order estimator {name!r}; allowed: {', '.join(ESTIMATORS)}")
    return name


def check_q(q: int) -> int:
    if isinstance(q, bool) or not isinstance(q, int) or q < 1:
        raise ZooPFLError(f"q (number of random directions) must be an integer >= 1, got {q!r}")
    return q


def check_mu(mu: float) -> float:
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu <= 0:
        raise ZooPFLError(f"mu (smoothing radius) must be a finite number > 0, got {mu!r}")
    return float(mu)


def queries_per_estimate(estimator: str, dim: int, q: int = 1, batch: int = 1) -> int:
    """Black-box queries one estimate costs for ``batch`` examples in ``dim`` dimensions.

    With a precomputed base loss (``f0``) the random-direction estimators cost ``batch * q``.
    """
    check_estimator(estimator)
    if dim < 1 or batch < 1:
        raise ZooPFLError(f"dim and batch must be >= 1, got dim={dim}, batch={batch}")
    if estimator == "coordinate":
        return 2 * dim * batch
    return (check_q(q) + 1) * batch


def check_budget(budget: int, estimator: str, dim: int, q: int = 1, batch: int = 1) -> int:
    """Refuse a query budget that cannot pay for a single estimate; returns the cost of one."""
    cost = queries_per_estimate(estimator, dim, q, batch)
    if budget < cost:
        raise QueryBudgetExceeded(f"query budget {budget} is smaller than one {estimator} estimate needs "
                                  f"({cost} queries: dim={dim}, q={q}, batch={batch}); raise the budget "
                                  "or lower q, the batch or the dimension")
    return cost


def _batched(loss: LossFn, z: torch.Tensor) -> tuple[LossFn, torch.Tensor, bool]:
    if z.ndim == 1:
        return (lambda points: loss(points[:, 0, :])[:, None]), z[None, :], True
    if z.ndim != 2:
        raise ZooPFLError(f"z must have shape (d,) or (B, d), got {tuple(z.shape)}")
    return loss, z, False


def sample_directions(q: int, batch: int, dim: int, distribution: str, generator: torch.Generator | None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(q, batch, dim)`` directions: unit-sphere or standard Gaussian."""
    u = torch.randn(q, batch, dim, generator=generator, dtype=dtype)
    if distribution == "sphere":
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    elif distribution != "gaussian":
        raise ZooPFLError(f"unknown direction distribution {distribution!r}; allowed: sphere, gaussian")
    return u


@torch.no_grad()
def random_direction_gradient(loss: LossFn, z: torch.Tensor, q: int, mu: float, distribution: str = "sphere",
                              generator: torch.Generator | None = None, f0: torch.Tensor | None = None
                              ) -> torch.Tensor:
    """Random-direction estimate of ``d loss / d z`` (module docstring), one per row of ``z``.

    ``f0``: the losses at ``z`` if already known (saves ``B`` queries).
    """
    check_q(q)
    mu = check_mu(mu)
    if distribution not in ("sphere", "gaussian"):
        raise ZooPFLError(f"unknown direction distribution {distribution!r}; allowed: sphere, gaussian")
    fn, zb, single = _batched(loss, torch.as_tensor(z))
    batch, dim = zb.shape
    u = sample_directions(q, batch, dim, distribution, generator, zb.dtype)
    base = fn(zb[None]).reshape(1, batch) if f0 is None else torch.as_tensor(f0, dtype=zb.dtype).reshape(1, batch)
    values = fn(zb[None] + mu * u).reshape(q, batch)
    scale = dim if distribution == "sphere" else 1.0
    grad = scale / (q * mu) * ((values - base)[..., None] * u).sum(0)
    return grad[0] if single else grad


@torch.no_grad()
def coordinate_gradient(loss: LossFn, z: torch.Tensor, mu: float) -> torch.Tensor:
    """Coordinate-wise central differences, ``2 d`` evaluations; exact on quadratics."""
    mu = check_mu(mu)
    fn, zb, single = _batched(loss, torch.as_tensor(z))
    batch, dim = zb.shape
    eye = torch.eye(dim, dtype=zb.dtype)[:, None, :]  # (d, 1, d)
    points = torch.cat([zb[None] + mu * eye, zb[None] - mu * eye])  # (2d, B, d)
    values = fn(points).reshape(2 * dim, batch)
    grad = ((values[:dim] - values[dim:]) / (2 * mu)).T
    return grad[0] if single else grad


def estimate(loss: LossFn, z: torch.Tensor, config: ZOConfig, generator: torch.Generator | None = None,
             f0: torch.Tensor | None = None) -> torch.Tensor:
    """The estimate ``config`` names (see :class:`ZOConfig`)."""
    if config.estimator == "coordinate":
        return coordinate_gradient(loss, z, config.mu)
    return random_direction_gradient(loss, z, config.q, config.mu, config.estimator, generator, f0)


def relative_error(estimate_: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``||g_hat - g|| / ||g||`` per row (or for one vector)."""
    return (estimate_ - truth).norm(dim=-1) / truth.norm(dim=-1).clamp_min(1e-12)


def cosine(estimate_: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(estimate_, truth, dim=-1)
