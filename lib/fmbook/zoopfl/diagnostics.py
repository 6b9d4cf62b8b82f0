"""How good is a zeroth-order estimate, and what does it cost? Checked against a white-box twin.

The black box's network is ours (:func:`fmbook.zoopfl.setup.pretrain_blackbox_encoder`), so for
*checking only* we can open a twin of it and get the exact gradient by autograd. :func:`zo_error_table`
compares each estimator's estimate of ``d CE(BB(x + P z), y) / d z`` at ``z = 0`` with the twin's,
in two spaces: the raw input (``P = I``, 784 dimensions) and a ``latent_dim``-dimensional subspace
(``P`` a fixed random orthonormal basis: the size of ZooPFL's bottleneck plus embedding). Every
estimate's queries are counted by the black box itself.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from fmbook.zoopfl.blackbox import BlackBox
from fmbook.zoopfl.zo import coordinate_gradient, cosine, random_direction_gradient, relative_error


def true_gradients(twin: nn.Module, x: torch.Tensor, y: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Autograd gradient of the per-example cross-entropy w.r.t. ``z`` at 0, ``(B, d)``."""
    twin.eval()
    dim = basis.shape[1] if basis is not None else x[0].numel()
    z = torch.zeros(len(x), dim, requires_grad=True)
    shift = z @ basis.T if basis is not None else z
    loss = F.cross_entropy(twin(x + shift.reshape(x.shape)), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, z)
    return grad


def zo_error_table(blackbox: BlackBox, twin: nn.Module, x: np.ndarray, y: np.ndarray, latent_dim: int = 20,
                   qs: Sequence[int] = (1, 4, 16, 64), mu: float = 0.01, repeats: int = 3,
                   seed: int = 0) -> pd.DataFrame:
    """One row per (space, estimator, q, example, repeat): relative error, cosine, queries per example."""
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    full = xt[0].numel()
    q_basis, _ = torch.linalg.qr(torch.randn(full, latent_dim, generator=gen))
    rows = []
    for space, basis in (("raw input", None), (f"{latent_dim}-d latent", q_basis)):
        dim = full if basis is None else latent_dim
        truth = true_gradients(twin, xt, yt, basis)

        def loss(points: torch.Tensor) -> torch.Tensor:  # (M, B, d) -> (M, B)
            m = points.shape[0]
            shift = points @ basis.T if basis is not None else points
            inputs = (xt[None] + shift.reshape(m, *xt.shape)).reshape(m * len(xt), *xt.shape[1:])
            logits = blackbox.query_tensor(inputs)
            return F.cross_entropy(logits, yt.repeat(m), reduction="none").reshape(m, len(xt))

        z0 = torch.zeros(len(xt), dim)
        settings = [("sphere", q) for q in qs] + [("gaussian", q) for q in qs] + [("coordinate", 2 * dim)]
        for estimator, q in settings:
            for r in range(repeats if estimator != "coordinate" else 1):
                before = blackbox.queries
                if estimator == "coordinate":
                    g = coordinate_gradient(loss, z0, mu)
                else:
                    g = random_direction_gradient(loss, z0, q, mu, estimator, gen)
                spent = (blackbox.queries - before) / len(xt)
                err, cos = relative_error(g, truth), cosine(g, truth)
                for i in range(len(xt)):
                    rows.append({"space": space, "dim": dim, "estimator": estimator, "q": q, "repeat": r,
                                 "example": i, "queries per example": spent, "relative error": float(err[i]),
                                 "cosine": float(cos[i])})
    return pd.DataFrame(rows)
