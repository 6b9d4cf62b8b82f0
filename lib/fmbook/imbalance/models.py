"""The paper's lightweight decoder and the stage-2 heads (Section 3.2-3.3; official ``clip.py``, ``utils.py``).

**Decoder.** The frozen image tower's output tokens ``(B, T, D)`` go through ``depth`` pre-norm
transformer blocks (timm's ``Block``: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))`` with a GELU MLP of
width ``mlp_ratio * D``, bias on q, k, v); token 0 (CLIP's class token) goes to ``Linear(D, C)``.
The official setting for CLIP ViT-L/14 is 3 blocks of width 1024 with 4 heads and MLP ratio 0.5; the
width is always the tower's token width. ``depth = 0`` is the linear probe.

**Stage-2 heads** re-balance a frozen stage-1 model (decoder and classifier trained with
cross-entropy); ``f`` is the decoder's token-0 feature and ``z = W f + b`` the stage-1 logits:

* ``crt`` (classifier re-training, Kang et al. 2020): a fresh ``Linear(D, C)`` on ``f``;
* ``lws`` (learnable weight scaling): ``s_c * z_c`` with per-class scales ``s`` (init 1);
* ``disalign`` (Zhang et al. 2021): ``(1 + sigma(v.f + u) * alpha) * z + sigma(v.f + u) * beta``;
* ``marc`` (Wang et al. 2021): ``a_c * z_c + b_c * ||w_c||`` with ``||w_c||`` the norm of the stage-1
  classifier's row ``c`` (init ``a = 1, b = 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from fmbook.imbalance.data import ImbalanceError

HEADS = ("crt", "lws", "disalign", "marc")
HEAD_LABELS = {"crt": "cRT", "lws": "LWS", "disalign": "DisAlign", "marc": "MARC"}


def check_head(name: str) -> str:
    if name not in HEADS:
        raise ImbalanceError(f"unknown stage-2 head {name!r}; allowed: {', '.join(HEADS)}")
    return name


@dataclass(frozen=True)
class DecoderConfig:
    """The official decoder: 3 blocks, 4 heads, MLP ratio 0.5, q/k/v bias (width = the tower's)."""

    depth: int = 3
    num_heads: int = 4
    mlp_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.depth < 0 or self.num_heads < 1 or self.mlp_ratio <= 0:
            raise ImbalanceError(f"DecoderConfig needs depth >= 0, num_heads >= 1, mlp_ratio > 0; got {self}")


class Block(nn.Module):
    """A pre-norm transformer block, as timm's ``vision_transformer.Block`` with ``qkv_bias=True``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ImbalanceError(f"token width {dim} is not divisible by num_heads={num_heads}")
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, num_heads, bias=True, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class DecoderClassifier(nn.Module):
    """Decoder blocks over the tokens, then ``Linear(D, C)`` on token 0 (``depth=0``: linear probe)."""

    def __init__(self, dim: int, num_classes: int, config: DecoderConfig | None = None) -> None:
        super().__init__()
        config = config or DecoderConfig()
        self.config = config
        self.blocks = nn.Sequential(*[Block(dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth)])
        self.classifier = nn.Linear(dim, num_classes)
        self.num_features = dim

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` tokens -> ``(B, D)``: token 0 after the blocks."""
        if tokens.ndim != 3:
            raise ImbalanceError(f"tokens must be (batch, tokens, width), got {tuple(tokens.shape)}")
        return self.blocks(tokens)[:, 0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(tokens))


class CRTHead(nn.Module):
    """cRT: a new linear classifier on the frozen features."""

    def __init__(self, classifier: nn.Linear) -> None:
        super().__init__()
        self.fc = nn.Linear(classifier.in_features, classifier.out_features)

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


class LWSHead(nn.Module):
    """LWS: ``s_c * z_c`` with learnable per-class scales (init 1)."""

    def __init__(self, classifier: nn.Linear) -> None:
        super().__init__()
        self.scales = nn.Parameter(torch.ones(classifier.out_features))

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.scales * logits


class DisAlignHead(nn.Module):
    """DisAlign: ``(1 + c(f) alpha) z + c(f) beta`` with confidence ``c(f) = sigmoid(v.f + u)``."""

    def __init__(self, classifier: nn.Linear) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, classifier.out_features))
        self.beta = nn.Parameter(torch.zeros(1, classifier.out_features))
        self.confidence = nn.Linear(classifier.in_features, 1)

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        c = torch.sigmoid(self.confidence(features))
        return (1 + c * self.alpha) * logits + c * self.beta


class MARCHead(nn.Module):
    """MARC: ``a_c z_c + b_c ||w_c||`` (margin calibration with the stage-1 weight norms)."""

    def __init__(self, classifier: nn.Linear) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(1, classifier.out_features))
        self.b = nn.Parameter(torch.zeros(1, classifier.out_features))
        self.register_buffer("w_norm", classifier.weight.detach().norm(dim=1).clone())

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.a * logits + self.b * self.w_norm


def make_head(name: str, classifier: nn.Linear) -> nn.Module:
    """A stage-2 head for the frozen stage-1 ``classifier`` (see the module docstring)."""
    return {"crt": CRTHead, "lws": LWSHead, "disalign": DisAlignHead, "marc": MARCHead}[check_head(name)](classifier)


#: Stage-2 training as in the official configurations: cRT and LWS with cross-entropy and
#: class-balanced sampling; DisAlign and MARC with the GRW loss.
HEAD_TRAINING = {"crt": "cbs", "lws": "cbs", "disalign": "grw", "marc": "grw"}
