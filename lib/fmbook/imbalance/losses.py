"""Stage-1 losses of the paper (Section 3.3; the official code's ``imblearn/algorithms/supervised/utils.py``).

``counts`` are the training images per class ``n_c``; ``prior = n_c / N``. All losses take raw logits
``z`` of shape ``(B, C)`` and integer targets ``y``, and return the batch mean.

========================  ===============================================================  ===========
name                      loss                                                             reference
========================  ===============================================================  ===========
``ce``                    cross-entropy                                                    --
``cbs``                   cross-entropy, batches drawn with class-balanced sampling         Kang 2020
``cbw``                   cross-entropy with weights ``w_c = N / (C n_c)``                 --
``focal``                 ``-(1 - p_y)^gamma log p_y``, gamma 2                             Lin 2017
``balanced_softmax``      cross-entropy on ``z + log prior``                               Ren 2020
``grw``                   cross-entropy with ``w_c ∝ n_c^-1.2``, ``sum_c w_c = C``           Zhang 2021
``lade``                  ``CE(z + log prior) + 0.1 * LADE(z)`` (ReMINE lambda 0.1)         Hong 2021
``ldam``                  cross-entropy with the target logit lowered by ``m_c ∝ n_c^-1/4``  Cao 2019
========================  ===============================================================  ===========
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fmbook.imbalance.data import ImbalanceError

LOSSES = ("ce", "cbs", "cbw", "focal", "balanced_softmax", "grw", "lade", "ldam")
LOSS_LABELS = {"ce": "cross-entropy", "cbs": "class-balanced sampling", "cbw": "class-balanced weights",
               "focal": "Focal", "balanced_softmax": "Balanced Softmax", "grw": "GRW", "lade": "LADE",
               "ldam": "LDAM"}


@dataclass(frozen=True)
class LossConfig:
    """The paper's (official code's) loss hyperparameters.

    ``ldam_scale`` multiplies the margin-adjusted logits: the LDAM paper uses ``s = 30`` on cosine
    logits; the official code accepts ``s`` but never applies it, so the default here is 1 (as run).
    """

    focal_gamma: float = 2.0
    grw_exponent: float = 1.2
    lade_weight: float = 0.1
    lade_remine_lambda: float = 0.1
    ldam_max_margin: float = 0.5
    ldam_scale: float = 1.0


def check_loss(name: str) -> str:
    if name not in LOSSES:
        raise ImbalanceError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    return name


def _counts(counts) -> torch.Tensor:
    c = torch.as_tensor(np.asarray(counts, dtype=np.float64), dtype=torch.float64)
    if c.ndim != 1 or len(c) < 2 or bool((c <= 0).any()):
        raise ImbalanceError(f"counts must be a 1-d sequence of positive class sizes, got {counts!r}")
    return c


def class_balanced_weights(counts) -> torch.Tensor:
    """``w_c = N / (C n_c)``: every class carries the same total weight; 1 for a balanced set."""
    c = _counts(counts)
    return (c.sum() / (len(c) * c)).float()


def grw_weights(counts, exponent: float = 1.2) -> torch.Tensor:
    """Generalised re-weighting: ``w_c ∝ n_c^-exponent``, normalised so that ``sum_c w_c = C``."""
    c = _counts(counts)
    w = c ** (-exponent)
    return (w / w.sum() * len(c)).float()


def ldam_margins(counts, max_margin: float = 0.5) -> torch.Tensor:
    """``m_c ∝ n_c^-1/4``, scaled so the largest margin (the smallest class) equals ``max_margin``."""
    c = _counts(counts)
    m = c ** -0.25
    return (m * (max_margin / m.max())).float()


def log_prior(counts) -> torch.Tensor:
    c = _counts(counts)
    return torch.log(c / c.sum()).float()


def balanced_softmax_loss(logits: torch.Tensor, targets: torch.Tensor, counts) -> torch.Tensor:
    """Balanced Softmax: cross-entropy on ``z + log prior`` (the training prior is added back)."""
    return F.cross_entropy(logits + log_prior(counts).to(logits), targets)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """``mean(-(1 - p_y)^gamma log p_y)``; gamma 0 is cross-entropy."""
    logp = F.log_softmax(logits, dim=-1).gather(1, targets.view(-1, 1)).squeeze(1)
    return (-(1 - logp.exp()).pow(gamma) * logp).mean()


def ldam_loss(logits: torch.Tensor, targets: torch.Tensor, counts, max_margin: float = 0.5,
              scale: float = 1.0) -> torch.Tensor:
    """LDAM: subtract ``m_y`` from the target logit, then cross-entropy (on ``scale *`` logits)."""
    margins = ldam_margins(counts, max_margin).to(logits)
    adjusted = logits - F.one_hot(targets, logits.shape[1]).to(logits) * margins[targets].view(-1, 1)
    return F.cross_entropy(scale * adjusted, targets)


def lade_loss(logits: torch.Tensor, targets: torch.Tensor, counts, weight: float = 0.1,
              remine_lambda: float = 0.1) -> torch.Tensor:
    """LADE (Hong et al., 2021): ``CE(z + log prior) + weight * L_LADE``.

    ``L_LADE = -sum_c prior_c [ mean_{i: y_i = c} z_ic - (logsumexp_i (z_ic - log prior_c + log 1/C)
    - log B) - lambda (...)^2 ]`` over the batch, as in the LADE authors' code: the raw logits ``z``
    estimate the target-distribution log-likelihood ratio, regularised by ReMINE. (The Imbalance-VLM
    code feeds the prior-adjusted logits to this term; we follow the LADE paper.)
    """
    prior = torch.exp(log_prior(counts)).to(logits)
    num_classes = logits.shape[1]
    prior_ce = F.cross_entropy(logits + torch.log(prior), targets)
    onehot = F.one_hot(targets, num_classes).to(logits)  # (B, C)
    per_class = onehot.sum(0)  # images of each class in the batch
    first = (logits * onehot).sum(0) / (per_class + 1e-8)
    spread = logits - torch.log(prior + 1e-9) + math.log(1.0 / num_classes + 1e-9)  # (B, C)
    second = torch.logsumexp(spread, dim=0) - math.log(logits.shape[0])
    bound = first - second - remine_lambda * second.pow(2)
    return prior_ce + weight * (-(bound * prior).sum())


def make_loss(name: str, counts, config: LossConfig | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function ``f(logits, targets)`` of ``name`` for a training set with ``counts``.

    ``cbs`` returns plain cross-entropy: its difference lies in the sampler (:func:`uses_balanced_sampling`).
    """
    check_loss(name)
    config = config or LossConfig()
    _counts(counts)
    if name in ("ce", "cbs"):
        return lambda z, y: F.cross_entropy(z, y)
    if name == "cbw":
        w = class_balanced_weights(counts)
        return lambda z, y: F.cross_entropy(z, y, weight=w.to(z))
    if name == "grw":
        w = grw_weights(counts, config.grw_exponent)
        return lambda z, y: F.cross_entropy(z, y, weight=w.to(z))
    if name == "focal":
        return lambda z, y: focal_loss(z, y, config.focal_gamma)
    if name == "balanced_softmax":
        return lambda z, y: balanced_softmax_loss(z, y, counts)
    if name == "lade":
        return lambda z, y: lade_loss(z, y, counts, config.lade_weight, config.lade_remine_lambda)
    return lambda z, y: ldam_loss(z, y, counts, config.ldam_max_margin, config.ldam_scale)


def uses_balanced_sampling(name: str) -> bool:
    return check_loss(name) == "cbs"
