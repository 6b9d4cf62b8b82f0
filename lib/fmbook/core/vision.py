"""Vision encoders: a small ResNet for 28x28 images, its cached training, hub backbones, features.

* :class:`TinyResNet` is the encoder the book pre-trains itself (no pretrained image model installs
  offline): a 3x3 stem, three residual stages (w, 2w, 4w channels), global average pooling; with the
  default width 16 the features are 64-dimensional and the network has about 75k parameters.
* :func:`train_encoder` trains an encoder plus a linear classifier with cross-entropy on the labels
  it is given (clean or noisy), bit-for-bit reproducibly on CPU, and caches the weights under
  ``cache_dir()/encoders/<key>`` where the key hashes the config, the training data, the code of
  this module and the torch version. A second call with the same inputs loads instead of training.
* :func:`load_image_encoder` takes ``"tiny-resnet"`` or a Hugging Face hub id / local folder, which
  goes through ``transformers.AutoModel.from_pretrained`` (the ``full`` profile's backbones).
* :func:`extract_features` / :func:`cached_features`: batched, frozen feature extraction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fmbook.core.datasets import ImageSet, fingerprint_arrays
from fmbook.core.paths import atomic_folder, cache_dir
from fmbook.core.progress import logger

LOCAL_ARCHITECTURES = ("tiny-resnet",)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CLIP_MEAN, _CLIP_STD = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)


def code_version() -> str:
    """Hash of this module's source and the torch version: part of every cache key."""
    source = Path(__file__).read_bytes()
    return hashlib.sha256(source + torch.__version__.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- architectures

class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyResNet(nn.Module):
    """ResNet-style encoder for 28x28 grey images: stem, 3 residual stages, global average pool.

    28x28 -> stem (w ch) -> max-pool 14x14 -> block (w) -> block (2w, 7x7) -> block (4w, 4x4) -> pool.
    RGB inputs are turned grey by averaging the channels.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.MaxPool2d(2))
        self.stages = nn.Sequential(_BasicBlock(width, width, 1), _BasicBlock(width, 2 * width, 2),
                                    _BasicBlock(2 * width, 4 * width, 2))
        self.feature_dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        x = (x - 0.5) / 0.5
        return self.stages(self.stem(x)).mean(dim=(2, 3))


class HubImageEncoder(nn.Module):
    """A ``transformers`` vision backbone as a feature extractor taking ``(N, C, H, W)`` in [0, 1].

    Grey inputs are repeated to 3 channels, resized to the model's ``image_size`` when its config has
    one (ViT, CLIP), and normalised with CLIP's or ImageNet's mean and std. Features: CLIP's
    ``get_image_features``; otherwise the flattened ``pooler_output``, else the mean of
    ``last_hidden_state`` over tokens.
    """

    def __init__(self, model: nn.Module, source: str) -> None:
        super().__init__()
        self.model = model
        self.source = source
        config = model.config
        vision_config = getattr(config, "vision_config", config)
        self.image_size = getattr(vision_config, "image_size", None)
        self.num_channels = getattr(vision_config, "num_channels", 3)
        is_clip = "clip" in str(getattr(config, "model_type", "")).lower()
        mean, std = (_CLIP_MEAN, _CLIP_STD) if is_clip else (_IMAGENET_MEAN, _IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean[: self.num_channels]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std[: self.num_channels]).view(1, -1, 1, 1), persistent=False)
        with torch.no_grad():
            was_training = model.training
            model.eval()
            size = self.image_size or 32
            self.feature_dim = int(self.forward(torch.zeros(2, self.num_channels, size, size)).shape[1])
            model.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.num_channels == 3:
            x = x.repeat(1, 3, 1, 1)
        if self.image_size and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=x)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        return out.last_hidden_state.mean(dim=1)


def is_hub_reference(name: str) -> bool:
    """True for an ``owner/name`` hub id or an existing local folder holding a ``config.json``."""
    return ("/" in name and not name.startswith("/") and name.count("/") == 1) or (Path(name) / "config.json").is_file()


def load_image_encoder(name_or_hub_id: str, width: int = 16) -> nn.Module:
    """``"tiny-resnet"`` (a fresh :class:`TinyResNet` to pre-train) or a hub id / local folder.

    A hub id (``microsoft/resnet-50``, ``openai/clip-vit-base-patch32``) or a folder saved with
    ``save_pretrained`` is loaded with ``transformers.AutoModel.from_pretrained`` and wrapped in a
    :class:`HubImageEncoder`. Every encoder has a ``feature_dim`` attribute.
    """
    if name_or_hub_id == "tiny-resnet":
        return TinyResNet(width)
    if is_hub_reference(name_or_hub_id):
        from transformers import AutoModel

        model = AutoModel.from_pretrained(name_or_hub_id)
        return HubImageEncoder(model, name_or_hub_id)
    raise ValueError(f"unknown image encoder {name_or_hub_id!r}; allowed: {', '.join(LOCAL_ARCHITECTURES)}, "
                     "a Hugging Face hub id 'owner/name', or a local folder with config.json")


# --------------------------------------------------------------------------- training

@dataclass(frozen=True)
class EncoderConfig:
    """Supervised (pre-)training of an encoder + linear classifier with cross-entropy.

    The paper pre-trains ResNet-50 on ImageNet-1K with the standard SGD recipe; here the same recipe
    at small scale: SGD with momentum 0.9 and Nesterov, weight decay 5e-4, cosine learning-rate
    decay, random horizontal flips.
    """

    backbone: str = "tiny-resnet"  # "tiny-resnet" or a hub id / local folder (full profile)
    width: int = 16  # tiny-resnet channels of the first stage (features: 4 * width)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    hflip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"EncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"EncoderConfig.lr must be > 0, got {self.lr}")


@dataclass
class TrainedEncoder:
    """A trained (frozen) encoder, its cache key and what happened while it trained."""

    encoder: nn.Module
    classifier: nn.Linear
    config: EncoderConfig
    key: str
    history: dict[str, list[float]]
    seconds: float
    from_cache: bool
    info: dict = field(default_factory=dict)

    @property
    def feature_dim(self) -> int:
        return int(self.encoder.feature_dim)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` -> float ``(N, C, H, W)`` in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2).contiguous()


@contextlib.contextmanager
def deterministic(seed: int, threads: int = 1, strict: bool = True) -> Iterator[None]:
    """Deterministic algorithms, ``threads`` CPU threads and a seeded torch RNG inside; the caller's
    settings are restored after.

    One thread by default: CPU results then do not depend on the machine's core count (reductions
    are summed in one order), and small models run faster than with threads that compete for cores.
    ``strict=False`` only warns where an operation has no deterministic kernel (some CUDA backward
    passes, e.g. adaptive average pooling), so GPU runs of the ``full`` profile do not stop there.
    """
    previous, previous_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=not strict)
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)
        torch.set_num_threads(previous_threads)


def encoder_cache_key(config: EncoderConfig, train: ImageSet, train_labels: np.ndarray,
                      eval_set: ImageSet | None) -> str:
    """Hash of everything that determines the trained weights."""
    payload = {
        "config": asdict(config),
        "train_images": train.fingerprint,
        "train_labels": fingerprint_arrays(np.asarray(train_labels, dtype=np.int64)),
        "num_classes": train.num_classes,
        "eval": eval_set.fingerprint if eval_set is not None else None,
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _accuracy(encoder: nn.Module, classifier: nn.Linear, images: torch.Tensor, labels: torch.Tensor,
              batch_size: int = 1024) -> float:
    encoder.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = classifier(encoder(images[start:start + batch_size]))
            correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / max(1, len(images))


def train_encoder(train: ImageSet, config: EncoderConfig, train_labels: np.ndarray | None = None,
                  eval_set: ImageSet | None = None, use_cache: bool = True, device: str = "cpu",
                  verbose: bool = False) -> TrainedEncoder:
    """Train ``config.backbone`` + a linear classifier on ``train`` with ``train_labels`` (default: its own).

    Pass noisy labels as ``train_labels``; ``eval_set`` (clean labels) gives the clean accuracy per
    epoch. History per epoch: ``train_loss``, ``train_acc`` (against the labels trained on) and
    ``eval_acc`` (None without ``eval_set``). Cached under ``cache_dir()/encoders/<key>`` (see :func:`encoder_cache_key`).
    """
    labels = train.labels if train_labels is None else np.asarray(train_labels, dtype=np.int64)
    if labels.shape != train.labels.shape:
        raise ValueError(f"train_labels must have shape {train.labels.shape}, got {labels.shape}")
    key = encoder_cache_key(config, train, labels, eval_set)
    folder = cache_dir() / "encoders" / key
    if use_cache and (folder / "meta.json").is_file():
        return _load_trained(folder, config, key, device)

    start = time.perf_counter()
    with deterministic(config.seed, strict=str(device) == "cpu"):
        encoder = load_image_encoder(config.backbone, config.width).to(device)
        classifier = nn.Linear(encoder.feature_dim, train.num_classes).to(device)
        params = list(encoder.parameters()) + list(classifier.parameters())
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=True,
                                    weight_decay=config.weight_decay)
        steps_per_epoch = -(-len(train) // config.batch_size)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        images = images_to_tensor(train.images).to(device)
        targets = torch.from_numpy(labels).to(device)
        if eval_set is not None:
            eval_images = images_to_tensor(eval_set.images).to(device)
            eval_targets = torch.from_numpy(eval_set.labels).to(device)
        generator = torch.Generator().manual_seed(config.seed)
        history: dict[str, list] = {"epoch": [], "train_loss": [], "train_acc": [], "eval_acc": []}
        for epoch in range(config.epochs):
            encoder.train()
            order = torch.randperm(len(train), generator=generator)
            flips = torch.rand(len(train), generator=generator) < 0.5
            total_loss, total_correct = 0.0, 0
            for begin in range(0, len(train), config.batch_size):
                index = order[begin:begin + config.batch_size]
                x, y = images[index], targets[index]
                if config.hflip:
                    x = torch.where(flips[index].view(-1, 1, 1, 1).to(device), x.flip(-1), x)
                logits = classifier(encoder(x))
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total_loss += loss.item() * len(index)
                total_correct += int((logits.argmax(1) == y).sum())
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(total_loss / len(train))
            history["train_acc"].append(total_correct / len(train))
            history["eval_acc"].append(_accuracy(encoder, classifier, eval_images, eval_targets)
                                       if eval_set is not None else None)
            if verbose:
                logger.info(f"epoch {epoch + 1}/{config.epochs}: loss {history['train_loss'][-1]:.3f} "
                            f"train acc {history['train_acc'][-1]:.3f} eval acc {history['eval_acc'][-1]}")
    encoder.eval()
    seconds = time.perf_counter() - start
    info = {"train": train.name, "train_fingerprint": train.fingerprint, "n_train": len(train),
            "eval": eval_set.name if eval_set is not None else None, "code": code_version(),
            "torch": torch.__version__}
    trained = TrainedEncoder(encoder, classifier, config, key, history, seconds, False, info)
    if use_cache:
        _save_trained(folder, trained)
    return trained


def _save_trained(folder: Path, trained: TrainedEncoder) -> None:
    with atomic_folder(folder) as staging:
        torch.save({"encoder": trained.encoder.state_dict(), "classifier": trained.classifier.state_dict()},
                   staging / "weights.pt")
        meta = {"config": asdict(trained.config), "key": trained.key, "history": trained.history,
                "seconds": trained.seconds, "info": trained.info,
                "num_classes": trained.classifier.out_features}
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))


def _load_trained(folder: Path, config: EncoderConfig, key: str, device: str) -> TrainedEncoder:
    meta = json.loads((folder / "meta.json").read_text())
    state = torch.load(folder / "weights.pt", map_location=device, weights_only=True)
    encoder = load_image_encoder(config.backbone, config.width).to(device)
    encoder.load_state_dict(state["encoder"])
    classifier = nn.Linear(encoder.feature_dim, meta["num_classes"]).to(device)
    classifier.load_state_dict(state["classifier"])
    encoder.eval()
    return TrainedEncoder(encoder, classifier, config, key, meta["history"], meta["seconds"], True, meta["info"])


# --------------------------------------------------------------------------- features

def extract_features(encoder: nn.Module, images: np.ndarray, batch_size: int = 1024,
                     device: str = "cpu") -> np.ndarray:
    """Frozen features of uint8 images, in batches: ``(N, feature_dim)`` float32."""
    encoder.eval()
    chunks = []
    with torch.no_grad(), deterministic(0, strict=str(device) == "cpu"):
        for start in range(0, len(images), batch_size):
            x = images_to_tensor(images[start:start + batch_size]).to(device)
            chunks.append(encoder(x).float().cpu())
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, encoder.feature_dim), np.float32)


def cached_features(trained: TrainedEncoder, data: ImageSet, batch_size: int = 1024,
                    device: str = "cpu") -> np.ndarray:
    """:func:`extract_features`, cached under ``cache_dir()/features/<encoder key>/<data fingerprint>.npy``."""
    path = cache_dir() / "features" / trained.key / f"{data.fingerprint}.npy"
    if path.is_file():
        return np.load(path)
    features = extract_features(trained.encoder, data.images, batch_size, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{time.time_ns()}.npy")
    np.save(tmp, features)
    tmp.replace(path)
    return features
