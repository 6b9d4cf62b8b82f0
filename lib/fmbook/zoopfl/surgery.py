"""Input surgery and semantic re-mapping: the two trainable parts around the black box.

Figure 1(d) of ZooPFL (arXiv 2310.05143): Input -> Surgery -> Model (locked) -> Logits -> Re-mapping.

* :class:`SurgeryAE` is the "input surgery": an auto-encoder whose bottleneck ``h = E(x)`` is
  *concatenated* with a low-dimensional client embedding ``e_c`` before the decoder,
  ``x_tilde = D([h, e_c])``; ``x_tilde`` is what the black box sees. The paper says the AE carries
  client-specific low-dimensional embeddings; the architecture (two-layer MLPs), the concatenation
  at the bottleneck and the sizes are **our choices** (the paper's were not available to us).
  The client embedding is not part of this module: each client holds its own
  (:class:`ClientEmbedding`), so what is shared and what stays local is decided by the caller.
* :class:`InputPrompt`: the "no auto-encoder" ablation, a learnable additive perturbation of the
  raw input, ``x_tilde = clamp(x + delta, 0, 1)`` (black-box reprogramming); zeroth-order
  estimates then live in the full input dimension.
* :class:`ReMap`: the per-client linear projection of the black box's outputs, initialised at the
  identity (so that at the start the prediction is the black box's), trained with ordinary gradients
  and cross-entropy on the client (the outputs are constants: no gradient flows into the model).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from fmbook.zoopfl.blackbox import ZooPFLError

OUTPUT_KINDS = ("sigmoid", "linear")


class SurgeryAE(nn.Module):
    """MLP auto-encoder ``x -> h (bottleneck) ; [h, e] -> x_tilde`` on inputs of ``input_shape``.

    ``output="sigmoid"`` keeps images in [0, 1]; ``"linear"`` for embeddings (the text variant).
    """

    def __init__(self, input_shape: Sequence[int], bottleneck: int = 16, embed_dim: int = 4, hidden: int = 128,
                 output: str = "sigmoid") -> None:
        super().__init__()
        if bottleneck < 1 or hidden < 1 or embed_dim < 0:
            raise ZooPFLError(f"need bottleneck >= 1, hidden >= 1, embed_dim >= 0; got {bottleneck}, {hidden}, {embed_dim}")
        if output not in OUTPUT_KINDS:
            raise ZooPFLError(f"unknown output {output!r}; allowed: {', '.join(OUTPUT_KINDS)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.input_dim = int(math.prod(self.input_shape))
        self.bottleneck, self.embed_dim, self.output = bottleneck, embed_dim, output
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(self.input_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, bottleneck))
        self.decoder = nn.Sequential(nn.Linear(bottleneck + embed_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, self.input_dim))

    @property
    def latent_dim(self) -> int:
        """Dimension of ``[h, e]``: where the zeroth-order estimates live."""
        return self.bottleneck + self.embed_dim

    def latent(self, x: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
        h = self.encoder(x)
        if self.embed_dim == 0:
            return h
        if embedding is None or embedding.shape[-1] != self.embed_dim:
            raise ZooPFLError(f"this surgery needs a client embedding of size {self.embed_dim}")
        return torch.cat([h, embedding.expand(h.shape[0], -1)], dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., latent_dim) -> (..., *input_shape)``."""
        out = self.decoder(z)
        if self.output == "sigmoid":
            out = torch.sigmoid(out)
        return out.reshape(*z.shape[:-1], *self.input_shape)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.latent(x, embedding))

    def reconstruction_loss(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        return torch.mean((self.forward(x, embedding) - x) ** 2)


class ClientEmbedding(nn.Module):
    """The low-dimensional embedding a client adds at the bottleneck (zeros at the start)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(1, dim))

    def forward(self) -> torch.Tensor:
        return self.vector


class InputPrompt(nn.Module):
    """``x_tilde = clamp(x + delta, lo, hi)`` with a learnable ``delta`` of the input's shape (zeros at start)."""

    def __init__(self, input_shape: Sequence[int], clamp: tuple[float, float] | None = (0.0, 1.0)) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.delta = nn.Parameter(torch.zeros(1, *self.input_shape))
        self.clamp = clamp

    @property
    def latent_dim(self) -> int:
        return int(math.prod(self.input_shape))

    def apply_delta(self, x: torch.Tensor, delta_flat: torch.Tensor) -> torch.Tensor:
        """``x`` (B, *shape) with perturbations ``delta_flat`` (..., D) broadcast: (..., B, *shape)."""
        out = x + delta_flat.reshape(*delta_flat.shape[:-1], 1, *self.input_shape)
        return out.clamp(*self.clamp) if self.clamp else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.delta
        return out.clamp(*self.clamp) if self.clamp else out


class ReMap(nn.Module):
    """Per-client linear re-mapping of the black box's outputs: ``W o + b``, ``W = I`` at the start
    (a square map; otherwise a default-initialised linear layer)."""

    def __init__(self, num_outputs: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_outputs, num_classes)
        if num_outputs == num_classes:
            with torch.no_grad():
                self.linear.weight.copy_(torch.eye(num_classes))
                self.linear.bias.zero_()

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.linear(outputs)
