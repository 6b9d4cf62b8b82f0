"""Training and evaluating the decoder (stage 1), the stage-2 heads, the linear probe and zero-shot.

The official recipe (``scripts/config_generator_imb_clip.py``): SGD, learning rate 0.03, momentum 0.9,
weight decay 5e-4, batch 256, 8,192 iterations of which 512 warm-up, then the USB cosine schedule
(factor ``cos(7 pi t / 16)``), gradient-norm clipping at 1.0. The backbone is always frozen, so
training here reads cached tokens. Stage 2 loads the stage-1 cross-entropy model, freezes it and
trains only the head (cRT and LWS with class-balanced sampling; DisAlign and MARC with GRW).
Unlike the official code we evaluate the *last* iterate (the official code keeps the best
checkpoint on its evaluation split).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from fmbook.core import vision
from fmbook.core.paths import atomic_folder, cache_dir
from fmbook.imbalance import losses as L
from fmbook.imbalance.data import GROUPS, ImbalanceError
from fmbook.imbalance.models import HEAD_LABELS, HEAD_TRAINING, HEADS, DecoderClassifier, DecoderConfig, make_head

STAGE1 = L.LOSSES
METHODS = ("zero_shot", "linear_probe") + L.LOSSES + HEADS
METHOD_LABELS = {"zero_shot": "zero-shot", "linear_probe": "linear probe",
                 **{k: f"decoder + {v}" for k, v in L.LOSS_LABELS.items()},
                 **{k: f"{v} (stage 2)" for k, v in HEAD_LABELS.items()}}
METHOD_STAGE = {"zero_shot": "none", "linear_probe": "linear probe", **{k: "stage 1" for k in L.LOSSES},
                **{k: "stage 2" for k in HEADS}}
METRICS = ("overall", "many", "medium", "few", "balanced_accuracy", "macro_f1")


def check_method(name: str) -> str:
    if name not in METHODS:
        raise ImbalanceError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return name


@dataclass(frozen=True)
class TrainConfig:
    """The official optimisation recipe; ``iterations``/``warmup`` are scaled down in the notebooks."""

    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    iterations: int = 8192
    warmup: int = 512
    grad_clip: float = 1.0
    num_cycles: float = 7 / 16

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1 or not 0 <= self.warmup < self.iterations or self.lr <= 0:
            raise ImbalanceError(f"TrainConfig needs iterations >= 1, batch_size >= 1, 0 <= warmup < iterations "
                                 f"and lr > 0; got {self}")


def lr_factor(step: int, config: TrainConfig) -> float:
    """USB's ``get_cosine_schedule_with_warmup``: linear warm-up, then ``max(0, cos(pi * 7/16 * t))``."""
    if step < config.warmup:
        return step / max(1, config.warmup)
    t = (step - config.warmup) / max(1, config.iterations - config.warmup)
    return max(0.0, math.cos(math.pi * config.num_cycles * t))


def _batches(labels: np.ndarray, config: TrainConfig, balanced: bool, generator: torch.Generator):
    """Index batches for ``config.iterations`` steps: reshuffled epochs, or class-balanced draws."""
    n = len(labels)
    if balanced:  # each class equally likely, images of a class uniformly (with replacement)
        weights = torch.from_numpy(1.0 / np.bincount(labels)[labels])
        for _ in range(config.iterations):
            yield torch.multinomial(weights, config.batch_size, replacement=True, generator=generator)
        return
    order, pos = torch.randperm(n, generator=generator), 0
    for _ in range(config.iterations):
        if pos + config.batch_size > n:
            order, pos = torch.randperm(n, generator=generator), 0
        yield order[pos:pos + config.batch_size]
        pos += config.batch_size


def _optimise(module: nn.Module, forward, targets: torch.Tensor, loss_fn, config: TrainConfig,
              balanced: bool, seed: int) -> list[float]:
    params = [p for p in module.parameters() if p.requires_grad]
    device = targets.device
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    generator = torch.Generator().manual_seed(seed)
    history = []
    module.train()
    for step, index in enumerate(_batches(targets.cpu().numpy(), config, balanced, generator)):
        index = index.to(device)
        loss = loss_fn(forward(index), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        if step % 25 == 0 or step == config.iterations - 1:
            history.append(loss.item())
    module.eval()
    return history


def train_stage1(tokens: np.ndarray, labels: np.ndarray, counts: Sequence[int], loss: str,
                 decoder: DecoderConfig, config: TrainConfig, seed: int,
                 loss_config: L.LossConfig | None = None, device: str = "cpu") -> tuple[DecoderClassifier, list[float]]:
    """Decoder (or, with ``decoder.depth == 0``, a linear probe) + classifier on frozen tokens.

    ``device="cuda"`` trains on the GPU (the ``full`` profile; tokens are moved there as float16)."""
    L.check_loss(loss)
    x = torch.from_numpy(np.ascontiguousarray(tokens)).to(device)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    with vision.deterministic(seed, strict=str(device) == "cpu"):
        model = DecoderClassifier(x.shape[-1], len(counts), decoder).to(device)
        history = _optimise(model, lambda i: model(x[i].float()), y, L.make_loss(loss, counts, loss_config),
                            config, L.uses_balanced_sampling(loss), seed)
    return model.cpu(), history


@torch.no_grad()
def decoder_outputs(model: DecoderClassifier, tokens: np.ndarray, batch_size: int = 2048,
                    device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Token-0 features and logits of a frozen decoder, ``(N, D)`` and ``(N, C)`` (on the CPU)."""
    model.eval().to(device)
    feats = []
    with vision.deterministic(0, strict=str(device) == "cpu"):
        for start in range(0, len(tokens), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(tokens[start:start + batch_size])).to(device).float()
            feats.append(model.features(chunk).cpu())
        model.cpu()
        f = torch.cat(feats)
        return f, model.classifier(f)


def train_stage2(stage1: DecoderClassifier, features: torch.Tensor, logits: torch.Tensor, labels: np.ndarray,
                 counts: Sequence[int], head: str, config: TrainConfig, seed: int,
                 loss_config: L.LossConfig | None = None) -> tuple[nn.Module, list[float]]:
    """A stage-2 head on the frozen stage-1 model's features/logits (loss per :data:`HEAD_TRAINING`)."""
    loss = HEAD_TRAINING[head]
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    with vision.deterministic(seed):
        module = make_head(head, stage1.classifier)
        history = _optimise(module, lambda i: module(features[i], logits[i]), y,
                            L.make_loss(loss, counts, loss_config), config, L.uses_balanced_sampling(loss), seed)
    return module, history


# --------------------------------------------------------------------------- evaluation

def evaluate(predictions: np.ndarray, labels: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Top-1 accuracy overall and per shot group (mean per-class accuracy of the group's classes;
    NaN for an empty group), scikit-learn's balanced accuracy and macro-F1."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    predictions, labels = np.asarray(predictions), np.asarray(labels)
    groups = np.asarray(groups)
    num_classes = len(groups)
    per_class = np.array([np.mean(predictions[labels == c] == c) if np.any(labels == c) else np.nan
                          for c in range(num_classes)])
    out = {"overall": float(np.mean(predictions == labels))}
    for g in GROUPS:
        members = per_class[groups == g]
        members = members[~np.isnan(members)]
        out[g] = float(members.mean()) if len(members) else float("nan")
    out["balanced_accuracy"] = float(balanced_accuracy_score(labels, predictions))
    out["macro_f1"] = float(f1_score(labels, predictions, average="macro", labels=np.arange(num_classes),
                                     zero_division=0))
    return out


@torch.no_grad()
def predict_decoder(model: DecoderClassifier, tokens: np.ndarray, device: str = "cpu") -> np.ndarray:
    return decoder_outputs(model, tokens, device=device)[1].argmax(1).numpy()


@torch.no_grad()
def predict_head(stage1: DecoderClassifier, head: nn.Module, tokens: np.ndarray) -> np.ndarray:
    f, z = decoder_outputs(stage1, tokens)
    head.eval()
    return head(f, z).argmax(1).numpy()


# --------------------------------------------------------------------------- cached runs

def code_version() -> str:
    folder = Path(__file__).parent
    digest = hashlib.sha256(torch.__version__.encode())
    for name in ("losses.py", "models.py", "train.py"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:12]


def run_key(**parts) -> str:
    return hashlib.sha256(json.dumps({**parts, "code": code_version()}, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _load_run(folder: Path) -> tuple[dict, dict, np.ndarray | None] | None:
    if not (folder / "meta.json").is_file():
        return None
    pred = folder / "test_predictions.npy"
    return (json.loads((folder / "meta.json").read_text()), torch.load(folder / "state.pt", weights_only=True),
            np.load(pred) if pred.is_file() else None)


def _save_run(folder: Path, meta: dict, state: dict, predictions: np.ndarray | None) -> None:
    with atomic_folder(folder) as staging:
        torch.save(state, staging / "state.pt")
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        if predictions is not None:
            np.save(staging / "test_predictions.npy", predictions)


def cached_stage1(key_parts: dict, tokens: np.ndarray, labels: np.ndarray, counts: Sequence[int], loss: str,
                  decoder: DecoderConfig, config: TrainConfig, seed: int,
                  loss_config: L.LossConfig | None = None, use_cache: bool = True,
                  test_tokens: np.ndarray | None = None, device: str = "cpu") -> tuple[DecoderClassifier, dict, np.ndarray | None]:
    """:func:`train_stage1`, cached under ``cache_dir()/imbalance/runs/<key>`` with its predictions on
    ``test_tokens`` (``key_parts`` must identify the test set). Returns the model, its meta (seconds,
    loss history, ``from_cache``) and the test predictions (None without ``test_tokens``)."""
    key = run_key(stage=1, loss=loss, decoder=asdict(decoder), config=asdict(config), seed=seed,
                  loss_config=asdict(loss_config or L.LossConfig()), **key_parts)
    folder = cache_dir() / "imbalance" / "runs" / key
    loaded = _load_run(folder) if use_cache else None
    if loaded is not None:
        meta, state, pred = loaded
        model = DecoderClassifier(tokens.shape[-1], len(counts), decoder)
        model.load_state_dict(state)
        model.eval()
        if pred is None and test_tokens is not None:
            pred = predict_decoder(model, test_tokens, device)
        return model, {**meta, "from_cache": True}, pred
    start = time.perf_counter()
    model, history = train_stage1(tokens, labels, counts, loss, decoder, config, seed, loss_config, device)
    meta = {"key": key, "seconds": time.perf_counter() - start, "history": history}
    pred = predict_decoder(model, test_tokens, device) if test_tokens is not None else None
    if use_cache:
        _save_run(folder, meta, model.state_dict(), pred)
    return model, {**meta, "from_cache": False}, pred


def cached_stage2(key_parts: dict, stage1: DecoderClassifier, stage1_key: str, train_outputs, test_outputs,
                  labels: np.ndarray, counts: Sequence[int], head: str, config: TrainConfig, seed: int,
                  loss_config: L.LossConfig | None = None, use_cache: bool = True) -> tuple[nn.Module, dict, np.ndarray]:
    """:func:`train_stage2`, cached like :func:`cached_stage1`. ``train_outputs`` / ``test_outputs`` are
    callables returning the frozen stage-1 ``(features, logits)``; they are called only when needed."""
    key = run_key(stage=2, head=head, stage1=stage1_key, config=asdict(config), seed=seed,
                  loss_config=asdict(loss_config or L.LossConfig()), **key_parts)
    folder = cache_dir() / "imbalance" / "runs" / key
    loaded = _load_run(folder) if use_cache else None

    def predict(module: nn.Module) -> np.ndarray:
        f, z = test_outputs()
        with torch.no_grad():
            return module(f, z).argmax(1).numpy()

    if loaded is not None:
        meta, state, pred = loaded
        module = make_head(head, stage1.classifier)
        module.load_state_dict(state)
        module.eval()
        return module, {**meta, "from_cache": True}, pred if pred is not None else predict(module)
    start = time.perf_counter()
    f, z = train_outputs()
    module, history = train_stage2(stage1, f, z, labels, counts, head, config, seed, loss_config)
    meta = {"key": key, "seconds": time.perf_counter() - start, "history": history}
    pred = predict(module)
    if use_cache:
        _save_run(folder, meta, module.state_dict(), pred)
    return module, {**meta, "from_cache": False}, pred
