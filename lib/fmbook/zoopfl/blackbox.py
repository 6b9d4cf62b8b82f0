"""A foundation model behind an API: forward queries only, every query counted.

ZooPFL's setting (arXiv 2310.05143, Sec. 1 and Figure 1(a)) is a model the clients can only *query*:
inputs in, outputs out, no weights and no gradients. :class:`BlackBox` enforces this by construction:

* the model lives in a closure, not in an attribute: ``BlackBox`` has no ``parameters()``, no
  ``state_dict()`` and no reference a client could follow to the weights;
* outputs are computed under ``torch.no_grad()`` and returned as NumPy arrays (``query``) or as a
  new tensor that does not require gradients (``query_tensor``): ``backward`` through the black box
  is impossible;
* every example passed through is one query (:attr:`BlackBox.queries`), broken down by phase
  (``"train"``, ``"eval"``...), and a training budget can be set: a query beyond it raises
  :class:`QueryBudgetExceeded` *before* the model runs.

Factories: :func:`image_classifier_blackbox` (the book's ``tiny-resnet`` with its linear head, or
any torch module standing in for an API), :func:`vlm_blackbox` (the book's vision-language model,
or a hub CLIP, as a zero-shot classifier), :func:`hub_image_classifier_blackbox` (a ViT-style
classifier by hub id) and, for text, :func:`fmbook.zoopfl.text.hub_text_blackbox`.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class ZooPFLError(ValueError):
    """A ZooPFL component was asked for something impossible (bad name, shape, budget, mu or q)."""


class QueryBudgetExceeded(ZooPFLError):
    """A query would pass the black box's budget; nothing was computed."""


class BlackBox:
    """Forward-only, query-counting access to a model ``(N, *input_shape) -> (N, num_outputs)``.

    ``forward`` is a callable on float tensors; it is kept in a closure. ``batch_size`` bounds how
    many examples go through the model at once (memory), it does not change the count.
    ``budget``: the most queries allowed in the phases listed in ``budget_phases`` (default: train).
    """

    __slots__ = ("_run", "input_shape", "num_outputs", "name", "info", "_counts", "_phase", "budget",
                 "budget_phases", "batch_size")

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int],
                 num_outputs: int, name: str, info: dict | None = None, budget: int | None = None,
                 budget_phases: Sequence[str] = ("train",), batch_size: int = 1024) -> None:
        if not callable(forward):
            raise ZooPFLError("forward must be callable")
        if num_outputs < 1:
            raise ZooPFLError(f"num_outputs must be >= 1, got {num_outputs}")
        if batch_size < 1:
            raise ZooPFLError(f"batch_size must be >= 1, got {batch_size}")

        def _run(x: torch.Tensor) -> torch.Tensor:  # the only path to the model
            with torch.no_grad():
                out = torch.cat([forward(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])
            return out.detach().clone()

        self._run = _run
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_outputs = int(num_outputs)
        self.name = name
        self.info = dict(info or {})
        self._counts: dict[str, int] = {}
        self._phase = "train"
        self.budget = None
        self.budget_phases = tuple(budget_phases)
        self.batch_size = int(batch_size)
        self.set_budget(budget)

    # --- counting -----------------------------------------------------------------------------
    def set_budget(self, budget: int | None) -> None:
        if budget is not None and (not isinstance(budget, (int, np.integer)) or budget < 1):
            raise ZooPFLError(f"budget must be a positive integer or None, got {budget!r}")
        self.budget = None if budget is None else int(budget)

    @property
    def queries(self) -> int:
        """Queries so far in the budgeted phases (the cost axis of the chapter's figures)."""
        return sum(v for k, v in self._counts.items() if k in self.budget_phases)

    @property
    def counts(self) -> dict[str, int]:
        """Queries so far, per phase."""
        return dict(self._counts)

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    def reset_counts(self) -> None:
        self._counts = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator["BlackBox"]:
        """Count the queries made inside under ``name`` (e.g. ``"eval"``: outside the budget)."""
        previous, self._phase = self._phase, str(name)
        try:
            yield self
        finally:
            self._phase = previous

    def can_afford(self, n: int) -> bool:
        return self.budget is None or self._phase not in self.budget_phases or self.queries + n <= self.budget

    # --- querying -----------------------------------------------------------------------------
    def query_tensor(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Outputs for a batch as a tensor that carries no graph (``requires_grad`` is False)."""
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float()
        if tuple(x.shape[1:]) != self.input_shape:
            raise ZooPFLError(f"{self.name} takes inputs of shape (N, {', '.join(map(str, self.input_shape))}); "
                              f"got {tuple(x.shape)}")
        n = int(x.shape[0])
        if not self.can_afford(n):
            raise QueryBudgetExceeded(f"{n} more queries would pass the budget of {self.budget} "
                                      f"({self.queries} used) of {self.name}")
        self._counts[self._phase] = self._counts.get(self._phase, 0) + n
        return self._run(x)

    def query(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Outputs for a batch as a NumPy array ``(N, num_outputs)``."""
        return self.query_tensor(x).numpy()

    __call__ = query

    def __repr__(self) -> str:
        return (f"BlackBox({self.name!r}, input {self.input_shape} -> {self.num_outputs} outputs, "
                f"queries={self.counts}, budget={self.budget})")

    def describe(self) -> dict:
        return {"id": self.name, "input_shape": list(self.input_shape), "num_outputs": self.num_outputs, **self.info}


# --------------------------------------------------------------------------- factories

def module_blackbox(module: nn.Module, input_shape: Sequence[int], num_outputs: int, name: str,
                    info: dict | None = None, **kwargs) -> BlackBox:
    """Any torch module as a black box (it is put in eval mode; the caller should drop its reference)."""
    module = module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return BlackBox(module, input_shape, num_outputs, name, info, **kwargs)


class _EncoderWithHead(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def image_classifier_blackbox(trained, name: str = "tiny-resnet", **kwargs) -> BlackBox:
    """A trained :class:`fmbook.core.vision.TrainedEncoder` (encoder + linear head) as a black box on
    ``(N, 1, 28, 28)`` images in [0, 1]; outputs are the head's logits."""
    model = _EncoderWithHead(trained.encoder, trained.classifier)
    info = {"kind": "image classifier", "key": trained.key, "feature_dim": trained.feature_dim}
    return module_blackbox(model, (1, 28, 28), trained.classifier.out_features, name, info, **kwargs)


class _ZeroShotHead(nn.Module):
    """``logit_scale * normalise(image_tower(x)) @ class_vectors.T`` (CLIP's zero-shot classifier)."""

    def __init__(self, image_features: Callable[[torch.Tensor], torch.Tensor], vectors: np.ndarray,
                 scale: float) -> None:
        super().__init__()
        self.image_features = image_features
        self.register_buffer("vectors", torch.as_tensor(vectors, dtype=torch.float32))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(self.image_features(x).float(), dim=-1) @ self.vectors.T


def vlm_blackbox(model, class_names: Sequence[str], image_size: int = 28, **kwargs) -> BlackBox:
    """A vision-language model as a zero-shot classifier over ``class_names`` (CLIP's prompt ensemble).

    ``model`` is a :class:`fmbook.core.vlm.LiTModel` (the book's own) or :class:`fmbook.core.vlm.HubCLIP`.
    Inputs are float images ``(N, 1, image_size, image_size)`` in [0, 1] (no uint8 rounding, so that
    small zeroth-order perturbations reach the model).
    """
    from fmbook.core import vlm as _vlm

    vectors, _ = _vlm.class_vectors(model, list(class_names))
    if hasattr(model, "tower"):
        tower = model.tower.eval()
        features = tower
    elif hasattr(model, "model") and hasattr(model.model, "get_image_features"):
        clip = model.model.eval()
        size = int(clip.config.vision_config.image_size)
        mean = torch.tensor((0.4815, 0.4578, 0.4082)).view(1, 3, 1, 1)
        std = torch.tensor((0.2686, 0.2613, 0.2758)).view(1, 3, 1, 1)

        def features(x: torch.Tensor) -> torch.Tensor:
            x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            out = clip.get_image_features(pixel_values=(x - mean) / std)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
    else:
        raise ZooPFLError(f"vlm_blackbox needs the book's LiTModel or a HubCLIP, got {type(model).__name__}")
    head = _ZeroShotHead(features, vectors, model.logit_scale)
    info = {"kind": "zero-shot classifier", **{k: v for k, v in model.describe().items() if k != "id"}}
    return module_blackbox(head, (1, image_size, image_size), len(class_names),
                           getattr(model, "name", "vlm"), info, **kwargs)


def hub_image_classifier_blackbox(hub_id: str, image_size: int = 28, **kwargs) -> BlackBox:
    """A ``transformers`` image classifier (a ViT by hub id, or a saved folder) on grey
    ``(N, 1, image_size, image_size)`` images in [0, 1]: repeated to RGB, resized, ImageNet-normalised
    with the model's processor statistics when present. Outputs: its logits (``full`` profile)."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(hub_id).eval()
    cfg = model.config
    size = int(getattr(cfg, "image_size", image_size))
    channels = int(getattr(cfg, "num_channels", 3))
    mean = torch.full((1, channels, 1, 1), 0.5)
    std = torch.full((1, channels, 1, 1), 0.5)

    class _Pixels(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.repeat(1, channels, 1, 1) if x.shape[1] == 1 and channels != 1 else x
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            return self.model(pixel_values=(x - mean) / std).logits

    info = {"kind": "hub image classifier", "model_type": cfg.model_type,
            "parameters": sum(p.numel() for p in model.parameters())}
    return module_blackbox(_Pixels(), (1, image_size, image_size), int(cfg.num_labels), hub_id, info, **kwargs)
