"""NMTune: label noise in pre-training and its black-box mitigation (Chen et al., ICLR 2024,
arXiv 2309.17002).

Three parts, in the order of the paper:

1. **Noisy pre-training** (paper section 2.1): :func:`inject_symmetric_noise` flips a share of the
   pre-training labels; :func:`pretrain_noisy_encoder` trains a :mod:`fmbook.core.vision` encoder on them.
2. **Feature spectrum** (section 2.3): :func:`spectrum_metrics` -- singular value entropy (SVE) and
   largest singular value ratio (LSVR) of the frozen features.
3. **NMTune** (section 3): :class:`NMTuneHead` and :func:`train_head`, which also trains the two
   baselines, a linear probe and a plain MLP head, on precomputed (cached) features.

The chapter's downstream protocol (which data is in-domain, which is out-of-domain) is at the end:
:class:`TransferSetup`, :func:`downstream_tasks`, :func:`evaluate_heads`.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fmbook.core import datasets as ds
from fmbook.core.claims import Claim
from fmbook.core.stats import Interval, adjust_level, paired_bootstrap, t_interval
from fmbook.core.vision import EncoderConfig, TrainedEncoder, cached_features, deterministic, train_encoder

# =========================================================================== 1. label noise


@dataclass(frozen=True)
class NoisyLabels:
    """Labels after symmetric noise injection.

    ``requested_rate``: the noise ratio asked for. ``resampled``: which labels were redrawn
    (exactly ``round(requested_rate * N)`` of them). ``realised_rate``: the share that actually
    differs from the truth, expected ``requested_rate * (K - 1) / K`` because a redrawn label can
    land on the true class.
    """

    labels: np.ndarray
    true_labels: np.ndarray
    resampled: np.ndarray
    requested_rate: float
    num_classes: int
    seed: int

    @property
    def resampled_rate(self) -> float:
        return float(self.resampled.mean()) if len(self.labels) else 0.0

    @property
    def realised_rate(self) -> float:
        return float((self.labels != self.true_labels).mean()) if len(self.labels) else 0.0

    @property
    def expected_realised_rate(self) -> float:
        return self.requested_rate * (self.num_classes - 1) / self.num_classes


def inject_symmetric_noise(labels: np.ndarray, noise_rate: float, num_classes: int, seed: int) -> NoisyLabels:
    """Symmetric label noise as in the paper's noisy ImageNet-1K (section 2.1).

    A seeded permutation picks exactly ``round(noise_rate * N)`` samples; each gets a label drawn
    uniformly from all ``num_classes`` classes, so it may equal the true label (the realised flip
    rate is ``noise_rate * (K-1)/K``; both rates are exposed on the result).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    rng = np.random.default_rng(seed)
    count = int(round(noise_rate * len(labels)))
    chosen = rng.permutation(len(labels))[:count]
    noisy = labels.copy()
    noisy[chosen] = rng.integers(0, num_classes, size=count)
    resampled = np.zeros(len(labels), dtype=bool)
    resampled[chosen] = True
    return NoisyLabels(noisy, labels, resampled, float(noise_rate), num_classes, seed)


def noise_confusion(true_labels: np.ndarray, noisy_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised matrix ``P[i, j]`` = share of true class ``i`` carrying label ``j``."""
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (true_labels, noisy_labels), 1)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


# =========================================================================== 2. spectrum


def prepare_features(features: np.ndarray) -> np.ndarray:
    """The official code's preprocessing before the SVD: L2-normalise each feature vector, then
    subtract each vector's own mean (over its dimensions, ``features.mean(dim=1)``)."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x - x.mean(axis=1, keepdims=True)


def singular_values(features: np.ndarray, prepare: bool = True) -> np.ndarray:
    """Singular values (descending) of the ``(N, D)`` feature matrix (after :func:`prepare_features`)."""
    x = prepare_features(features) if prepare else np.asarray(features, dtype=np.float64)
    return np.linalg.svd(x, compute_uv=False)


def singular_value_entropy(sigma: np.ndarray) -> float:
    """SVE = -sum_i p_i log p_i, p_i = sigma_i / sum_j sigma_j (section 2.3). Higher: flatter spectrum."""
    sigma = np.asarray(sigma, dtype=np.float64)
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def largest_singular_value_ratio(sigma: np.ndarray) -> float:
    """LSVR = -log(sigma_1 / sum_j sigma_j) (section 2.3). Lower: the top direction dominates more."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return float(-np.log(sigma.max() / sigma.sum()))


@dataclass(frozen=True)
class SpectrumMetrics:
    singular_values: np.ndarray
    sve: float
    lsvr: float

    @property
    def normalised(self) -> np.ndarray:
        return self.singular_values / self.singular_values.sum()


def spectrum_metrics(features: np.ndarray) -> SpectrumMetrics:
    """Spectrum, SVE and LSVR of features, preprocessed as in the official code."""
    sigma = singular_values(features)
    return SpectrumMetrics(sigma, singular_value_entropy(sigma), largest_singular_value_ratio(sigma))


# =========================================================================== 3. NMTune

#: The two named presets of the heads. ``paper``: the text of the paper (Eq. 6, Section 3,
#: Figure 17, Appendix B); ``official code``: the authors' README command and model code.
PRESETS: tuple[str, ...] = ("paper", "official code")
#: The chapter's default: the paper's own setting, the one its Tables 15-16 report ("MSE, COV, SVD
#: weights 0.01 each" is the row equal to the headline NMTune numbers). The claims under test are the
#: paper's, so they are tested first in the paper's setting; the official code is run beside it.
DEFAULT_PRESET = "paper"


class PresetError(ValueError):
    """An unknown preset name."""


def _check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise PresetError(f"unknown preset {preset!r}; allowed: {', '.join(repr(p) for p in PRESETS)}")
    return preset


@dataclass(frozen=True)
class NMTuneConfig:
    """NMTune on frozen features (Section 3). Defaults: the paper's setting (preset ``paper``).

    Loss (Eq. 6): CE + consistency_weight * MSE(normalize(z), normalize(f)) +
    covariance_weight * (1/D) sum_{i != j} Cov(z)_ij^2 - spectral_weight * mean_{k<=top_k} sigma_k(z)/sum sigma(z).

    * paper: lambda = 0.01 on each term, the SVD term on sigma_1 / sum sigma (``top_k=1``), and
      z = MLP(f) with a 2-layer MLP D -> 4D -> D and ReLU (Figure 17), no normalisation layer;
    * official code (:data:`OFFICIAL_CODE`): weights 1.0 / 0.04 / 0.001, mean of the top-5 normalised
      singular values, z = s * MLP(f) + f with MLP = Linear-BatchNorm-ReLU-Linear and a learnable
      per-dimension scale s (``residual=True``, ``batch_norm=True``).

    Optimiser (both): AdamW lr 1e-3, weight decay 1e-4, 30 epochs, cosine schedule; batch 64 (the
    official README's; the paper does not state it).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 30
    mlp_ratio: int = 4
    residual: bool = False
    batch_norm: bool = False
    scale_init: float = 1.0
    consistency_weight: float = 0.01
    covariance_weight: float = 0.01
    spectral_weight: float = 0.01
    top_k: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "mlp_ratio", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"NMTuneConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"NMTuneConfig.lr must be > 0, got {self.lr}")
        if self.batch_size < 2:
            raise ValueError("NMTuneConfig.batch_size must be >= 2 (BatchNorm and the covariance need 2 rows)")

    @property
    def regularised(self) -> bool:
        return bool(self.consistency_weight or self.covariance_weight or self.spectral_weight)


#: The official code's NMTune (README command; ``src/models/nml_tune.py``, ``modeling.py``).
OFFICIAL_CODE = NMTuneConfig(residual=True, batch_norm=True, consistency_weight=1.0, covariance_weight=0.04,
                             spectral_weight=0.001, top_k=5)


def mlp_head_config(config: NMTuneConfig | None = None) -> NMTuneConfig:
    """The plain MLP-head baseline: NMTune's architecture with all three regularizer weights at 0."""
    return replace(config or NMTuneConfig(), consistency_weight=0.0, covariance_weight=0.0, spectral_weight=0.0)


@dataclass(frozen=True)
class LinearProbeConfig:
    """Linear probe (Section 2.2, Appendix B). Defaults: the paper's (AdamW lr 0.1, no weight decay,
    batch 64, 30 epochs, cosine); the official README uses lr 0.01 (and weight decay 1e-4)."""

    lr: float = 0.1
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 30
    seed: int = 0


OFFICIAL_CODE_PROBE = LinearProbeConfig(lr=1e-2, weight_decay=1e-4)


class NMTuneHead(nn.Module):
    """The MLP on frozen features f and a linear classifier on its output z.

    ``residual=False`` (paper): z = MLP(f), MLP = Linear(D, rD)-ReLU-Linear(rD, D).
    ``residual=True`` (official code): z = s * MLP(f) + f, with s per dimension (init ``scale_init``);
    ``batch_norm=True`` puts a BatchNorm after the first layer. Classifier: kaiming-uniform, zero bias.
    """

    def __init__(self, dim: int, num_classes: int, mlp_ratio: int = 4, scale_init: float = 1.0,
                 residual: bool = False, batch_norm: bool = False) -> None:
        super().__init__()
        hidden = dim * mlp_ratio
        layers: list[nn.Module] = [nn.Linear(dim, hidden)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(), nn.Linear(hidden, dim)]
        self.mlp = nn.Sequential(*layers)
        self.residual = residual
        if residual:
            self.scale = nn.Parameter(torch.full((1, dim), float(scale_init)))
        self.classifier = _classifier(dim, num_classes)

    @classmethod
    def from_config(cls, dim: int, num_classes: int, config: NMTuneConfig) -> "NMTuneHead":
        return cls(dim, num_classes, config.mlp_ratio, config.scale_init, config.residual, config.batch_norm)

    def transform(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * self.mlp(f) + f if self.residual else self.mlp(f)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.transform(f)
        return z, self.classifier(z)


class LinearHead(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = _classifier(dim, num_classes)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return f, self.classifier(f)


def _classifier(dim: int, num_classes: int) -> nn.Linear:
    layer = nn.Linear(dim, num_classes)
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight)
        layer.bias.zero_()
    return layer


def consistency_loss(z: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """MSE between L2-normalised z and the detached, L2-normalised pre-trained features f (eq. 3)."""
    return F.mse_loss(F.normalize(z, dim=1), F.normalize(f.detach(), dim=1))


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """(1/D) * sum of squared off-diagonal entries of the (unbiased) covariance of z (eq. 4)."""
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (z.shape[0] - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / z.shape[1]


def dominant_singular_values(z: torch.Tensor, top_k: int = 5) -> torch.Tensor:
    """Mean of the top-k singular values of z divided by their sum (the loss subtracts it).

    ``top_k=1`` is the paper's L_SVD = -sigma_1 / sum_j sigma_j (Section 3); the official code uses
    the mean of the top 5."""
    sigma = torch.linalg.svdvals(z)
    return (sigma / sigma.sum())[:top_k].mean()


def nmtune_loss(z: torch.Tensor, f: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                config: NMTuneConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Total NMTune loss and its terms (unweighted). A term with weight 0 is not computed."""
    ce = F.cross_entropy(logits, labels)
    total, terms = ce, {"ce": ce.item()}
    if config.consistency_weight:
        mse = consistency_loss(z, f)
        total = total + config.consistency_weight * mse
        terms["consistency"] = mse.item()
    if config.covariance_weight:
        cov = covariance_loss(z)
        total = total + config.covariance_weight * cov
        terms["covariance"] = cov.item()
    if config.spectral_weight:
        dom = dominant_singular_values(z, config.top_k)
        total = total - config.spectral_weight * dom
        terms["dominant_sv"] = dom.item()
    return total, terms


HEAD_METHODS = ("linear", "mlp", "nmtune")


@dataclass
class TrainedHead:
    method: str
    module: nn.Module
    config: NMTuneConfig | LinearProbeConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def predict(self, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        self.module.eval()
        out = []
        with torch.no_grad(), deterministic(0):
            for start in range(0, len(features), batch_size):
                _, logits = self.module(torch.from_numpy(np.asarray(features[start:start + batch_size], np.float32)))
                out.append(logits.argmax(1))
        return torch.cat(out).numpy() if out else np.zeros(0, np.int64)

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict(features) == np.asarray(labels)).mean())

    def transform(self, features: np.ndarray) -> np.ndarray:
        """z for features (the identity for a linear probe)."""
        self.module.eval()
        with torch.no_grad(), deterministic(0):
            z, _ = self.module(torch.from_numpy(np.asarray(features, np.float32)))
        return z.numpy()


def default_head_config(method: str, seed: int = 0, epochs: int | None = None,
                        preset: str = DEFAULT_PRESET) -> NMTuneConfig | LinearProbeConfig:
    """The configuration of a head method (``linear``, ``mlp`` or ``nmtune``) under ``preset``
    (``paper`` or ``official code``, see :data:`PRESETS`)."""
    if method not in HEAD_METHODS:
        raise ValueError(f"unknown head method {method!r}; allowed: {', '.join(HEAD_METHODS)}")
    official = _check_preset(preset) == "official code"
    config: NMTuneConfig | LinearProbeConfig
    if method == "linear":
        config = OFFICIAL_CODE_PROBE if official else LinearProbeConfig()
    else:
        config = OFFICIAL_CODE if official else NMTuneConfig()
        if method == "mlp":
            config = mlp_head_config(config)
    config = replace(config, seed=seed)
    return replace(config, epochs=epochs) if epochs is not None else config


#: The names of the three heads in tables and figures, and their methods.
HEAD_NAMES: dict[str, str] = {"linear probe": "linear", "MLP": "mlp", "NMTune": "nmtune"}


def preset_heads(preset: str = DEFAULT_PRESET, seed: int = 0,
                 epochs: int | None = None) -> dict[str, NMTuneConfig | LinearProbeConfig]:
    """Linear probe, MLP head and NMTune of one preset (name -> config), as the paper compares them."""
    return {name: default_head_config(method, seed, epochs, preset) for name, method in HEAD_NAMES.items()}


def train_head(features: np.ndarray, labels: np.ndarray, num_classes: int,
               config: NMTuneConfig | LinearProbeConfig, method: str | None = None) -> TrainedHead:
    """Train a head on frozen features with AdamW and a per-step cosine schedule (no warm-up).

    ``method``: ``linear`` for a :class:`LinearProbeConfig`; ``nmtune`` (or ``mlp`` when all
    regularizer weights are 0) for an :class:`NMTuneConfig`. Deterministic given ``config.seed``.
    A final batch of one sample is skipped (BatchNorm needs two).
    """
    if method is None:
        method = "linear" if isinstance(config, LinearProbeConfig) else ("nmtune" if config.regularised else "mlp")
    if method not in HEAD_METHODS:
        raise ValueError(f"unknown head method {method!r}; allowed: {', '.join(HEAD_METHODS)}")
    if (method == "linear") != isinstance(config, LinearProbeConfig):
        raise TypeError(f"method {method!r} needs a {'LinearProbeConfig' if method == 'linear' else 'NMTuneConfig'}")
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features must be (N, D) with N = len(labels); got {features.shape} and {labels.shape}")
    start = time.perf_counter()
    with deterministic(config.seed):
        dim = features.shape[1]
        if method == "linear":
            module: nn.Module = LinearHead(dim, num_classes)
        else:
            module = NMTuneHead.from_config(dim, num_classes, config)
        optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = max(1, len(features) // config.batch_size + (len(features) % config.batch_size > 1))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        x_all, y_all = torch.from_numpy(features), torch.from_numpy(labels)
        generator = torch.Generator().manual_seed(config.seed)
        history: dict[str, list[float]] = {}
        for _ in range(config.epochs):
            module.train()
            order = torch.randperm(len(features), generator=generator)
            sums: dict[str, float] = {}
            batches = 0
            for begin in range(0, len(features), config.batch_size):
                index = order[begin:begin + config.batch_size]
                if len(index) < 2:
                    continue
                f, y = x_all[index], y_all[index]
                z, logits = module(f)
                if method == "linear":
                    loss = F.cross_entropy(logits, y)
                    terms = {"ce": loss.item()}
                else:
                    loss, terms = nmtune_loss(z, f, logits, y, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                batches += 1
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + value
            for name, value in sums.items():
                history.setdefault(name, []).append(value / max(1, batches))
    module.eval()
    return TrainedHead(method, module, config, history, time.perf_counter() - start)


# =========================================================================== chapter protocol

#: Pre-training sees 6 Fashion-MNIST classes; the other 4 are new to every encoder (ID transfer).
PRETRAIN_CLASSES: tuple[int, ...] = (0, 1, 2, 5, 8, 9)  # T-shirt, Trouser, Pullover, Sandal, Bag, Ankle boot
HELDOUT_CLASSES: tuple[int, ...] = (3, 4, 6, 7)  # Dress, Coat, Shirt, Sneaker
DOWNSTREAM_SPLIT_SEED = 2024  # fixed: the probe/eval halves of the test split never change


@dataclass(frozen=True)
class PretrainSetup:
    """What the encoders are pre-trained on.

    Local: ``pretrain_per_class`` images of each of :data:`PRETRAIN_CLASSES` from the Fashion-MNIST
    *train* split (the downstream tasks use only the *test* split, so no image is shared), and a
    clean held-out check set of ``eval_per_class`` images per class from the remaining train images.
    Full: ``dataset`` is a hub id (e.g. ``uoft-cs/cifar100``) and all of its classes are used.
    """

    dataset: str = "fashion-mnist"
    pretrain_per_class: int = 400
    eval_per_class: int = 100
    data_seed: int = 0

    def data(self) -> tuple[ds.ImageSet, ds.ImageSet]:
        """(pre-training set, clean check set); computed once per process for each setup."""
        return _pretrain_data(self)


@functools.lru_cache(maxsize=4)
def _pretrain_data(setup: PretrainSetup) -> tuple[ds.ImageSet, ds.ImageSet]:
    train = ds.load_image_dataset(setup.dataset, "train")
    if setup.dataset == "fashion-mnist":
        train = ds.select_classes(train, PRETRAIN_CLASSES)
    total = setup.pretrain_per_class + setup.eval_per_class
    picked = ds.stratified_subsample(train, total, setup.data_seed)
    return ds.stratified_split(picked, setup.eval_per_class / total, setup.data_seed)


@dataclass
class NoisyEncoder:
    noise_rate: float
    seed: int
    trained: TrainedEncoder
    noisy: NoisyLabels


#: A backbone named ``scratch:<hub id or folder>`` is that architecture, randomly initialised and
#: pre-trained here on the noisy labels (the paper's setting); a plain hub id starts from its
#: pretrained weights (noisy *fine-tuning* of a cleanly pre-trained model, a different question).
SCRATCH_PREFIX = "scratch:"


def is_from_scratch(backbone: str) -> bool:
    return backbone.startswith(SCRATCH_PREFIX)


def random_init_folder(reference: str, seed: int) -> Path:
    """A ``transformers`` model with the architecture of ``reference`` (a hub id, whose
    ``config.json`` only is read, or a local folder) and random weights drawn with ``seed``, saved
    with ``save_pretrained`` under ``cache_dir()/random_init/`` so that :func:`fmbook.core.vision.
    train_encoder` can load it like any hub backbone. Same reference and seed: same folder and weights."""
    import hashlib
    import json

    import transformers
    from transformers import AutoConfig, AutoModel

    from fmbook.core.paths import atomic_folder, cache_dir

    if not reference:
        raise ValueError("backbone 'scratch:' needs an architecture: 'scratch:<hub id>' or 'scratch:<local folder>'")
    model_config = AutoConfig.from_pretrained(reference)
    payload = {"config": model_config.to_dict(), "seed": int(seed), "transformers": transformers.__version__,
               "torch": torch.__version__}
    payload["config"].pop("transformers_version", None)
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = cache_dir() / "random_init" / f"{getattr(model_config, 'model_type', 'model')}-seed{seed}-{key}"
    if (folder / "config.json").is_file():
        return folder
    with atomic_folder(folder) as staging:
        with deterministic(int(seed)):
            model = AutoModel.from_config(model_config)
        model.save_pretrained(staging)
    return folder


def resolve_backbone(config: EncoderConfig) -> EncoderConfig:
    """``scratch:<ref>`` -> a random-init folder for ``config.seed`` (see :func:`random_init_folder`);
    any other backbone is returned unchanged."""
    if not is_from_scratch(config.backbone):
        return config
    return replace(config, backbone=str(random_init_folder(config.backbone[len(SCRATCH_PREFIX):], config.seed)))


def pretrain_noisy_encoder(noise_rate: float, seed: int, setup: PretrainSetup, config: EncoderConfig,
                           device: str = "cpu") -> NoisyEncoder:
    """Inject symmetric noise (seeded by ``seed``) into the pre-training labels and train (or load
    from the cache) an encoder with ``config`` (its seed replaced by ``seed``). A ``scratch:``
    backbone starts from random weights drawn with ``seed``."""
    pretrain, check = setup.data()
    noisy = inject_symmetric_noise(pretrain.labels, noise_rate, pretrain.num_classes, seed=10_000 + seed)
    config = resolve_backbone(replace(config, seed=seed))
    trained = train_encoder(pretrain, config, train_labels=noisy.labels, eval_set=check, device=device)
    return NoisyEncoder(float(noise_rate), int(seed), trained, noisy)


def pretrain_grid(noise_rates: list[float], seeds: list[int], setup: PretrainSetup, config: EncoderConfig,
                  device: str = "cpu") -> list[NoisyEncoder]:
    """One encoder per (noise rate, seed), in that order; cached ones are loaded."""
    for rate in noise_rates:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"noise_ratios must lie in [0, 1), got {rate}")
    if not seeds:
        raise ValueError("seeds must name at least one pre-training seed")
    return [pretrain_noisy_encoder(rate, seed, setup, config, device) for rate in noise_rates for seed in seeds]


def encoder_description(config: EncoderConfig, setup: PretrainSetup) -> tuple[str, dict]:
    """A short model id for provenance (``run.uses_model``) and the facts that identify it."""
    if config.backbone == "tiny-resnet":
        name = f"tiny-resnet-w{config.width} (pre-trained in this chapter)"
        start = "random initialisation"
    elif is_from_scratch(config.backbone):
        name = f"{config.backbone[len(SCRATCH_PREFIX):]} architecture (pre-trained from scratch in this chapter)"
        start = "random initialisation"
    else:
        name = f"{config.backbone} (pretrained weights, fine-tuned on noisy labels in this chapter)"
        start = "pretrained weights"
    return name, {"pretrain_data": setup.dataset, "per_class": setup.pretrain_per_class,
                  "epochs": config.epochs, "lr": config.lr, "starts_from": start}


def parameter_count(module: nn.Module) -> int:
    """Number of parameters of a module (trainable or not)."""
    return int(sum(p.numel() for p in module.parameters()))


@dataclass(frozen=True)
class Task:
    """A downstream task: a probe set to train a head on and evaluation sets (name -> (set, domain))."""

    name: str
    probe: ds.ImageSet
    evals: dict[str, tuple[ds.ImageSet, str]]


@dataclass(frozen=True)
class TransferSetup:
    """The downstream tasks of the chapter.

    In-domain (ID) -- a new label space on images from the pre-training distribution:
      ``heldout-4``: the 4 Fashion-MNIST classes no encoder saw in pre-training;
      ``fmnist-10``: all 10 classes (4 of them new), clean test images.
    Out-of-domain (OOD) -- shifted inputs:
      ``digits``: scikit-learn's handwritten digits (a head trained and tested on digits);
      ``invert``, ``sketch``, ``blur``, ``rotate``: the ``fmnist-10`` head evaluated on style-shifted
      test images (:data:`fmbook.core.datasets.STYLE_SHIFTS`), as ImageNet-R/-Sketch are used in the paper.
    The Fashion-MNIST *test* split is halved once (seed :data:`DOWNSTREAM_SPLIT_SEED`): heads train on
    one half and are evaluated on the other. Full profile: ``id_dataset`` is a hub id (e.g.
    ``uoft-cs/cifar10``; its train split feeds the head, its test split the evaluation) and the
    held-out-classes task is dropped.
    """

    id_dataset: str = "fashion-mnist"
    probe_per_class: int = 100
    eval_per_class: int = 200
    shifts: tuple[str, ...] = ("invert", "sketch", "blur", "rotate")
    include_digits: bool = True
    seed: int = 0


def downstream_tasks(setup: TransferSetup) -> list[Task]:
    """Build the tasks of :class:`TransferSetup` (deterministic given the setup)."""
    for shift in setup.shifts:
        if shift not in ds.STYLE_SHIFTS:
            raise ValueError(f"unknown shift {shift!r} in TransferSetup.shifts; allowed: {', '.join(ds.STYLE_SHIFTS)}")
    tasks = []
    if setup.id_dataset == "fashion-mnist":
        probe_pool, eval_pool = ds.stratified_split(ds.load_fashion_mnist("test"), 0.5, DOWNSTREAM_SPLIT_SEED)
        held_probe = ds.stratified_subsample(ds.select_classes(probe_pool, HELDOUT_CLASSES), setup.probe_per_class, setup.seed)
        held_eval = ds.stratified_subsample(ds.select_classes(eval_pool, HELDOUT_CLASSES), setup.eval_per_class, setup.seed)
        tasks.append(Task("heldout-4", held_probe, {"heldout-4": (held_eval, "ID")}))
        main_name = "fmnist-10"
    else:
        probe_pool = ds.load_image_dataset(setup.id_dataset, "train")
        eval_pool = ds.load_image_dataset(setup.id_dataset, "test")
        main_name = setup.id_dataset.split("/")[-1]
    probe = ds.stratified_subsample(probe_pool, setup.probe_per_class, setup.seed)
    clean_eval = ds.stratified_subsample(eval_pool, setup.eval_per_class, setup.seed)
    evals = {main_name: (clean_eval, "ID")}
    for shift in setup.shifts:
        evals[shift] = (ds.style_shift(clean_eval, shift), "OOD")
    tasks.append(Task(main_name, probe, evals))
    if setup.include_digits:
        digits_probe_pool, digits_eval_pool = ds.stratified_split(ds.load_digits_28(), 0.5, DOWNSTREAM_SPLIT_SEED)
        per_class = min(setup.probe_per_class, int(np.bincount(digits_probe_pool.labels).min()))
        eval_per_class = min(setup.eval_per_class, int(np.bincount(digits_eval_pool.labels).min()))
        tasks.append(Task("digits", ds.stratified_subsample(digits_probe_pool, per_class, setup.seed),
                          {"digits": (ds.stratified_subsample(digits_eval_pool, eval_per_class, setup.seed), "OOD")}))
    return tasks


def evaluate_heads(encoder: TrainedEncoder, tasks: list[Task], config: NMTuneConfig | LinearProbeConfig,
                   method: str | None = None, device: str = "cpu") -> dict[str, float]:
    """Train one head per task on the encoder's cached features; accuracy on every evaluation set,
    plus ``ID`` and ``OOD`` (unweighted means over the evaluation sets of each domain)."""
    scores: dict[str, float] = {}
    domains: dict[str, list[float]] = {"ID": [], "OOD": []}
    for task in tasks:
        probe_features = cached_features(encoder, task.probe, device=device)
        head = train_head(probe_features, task.probe.labels, task.probe.num_classes, config, method)
        for name, (data, domain) in task.evals.items():
            accuracy = head.accuracy(cached_features(encoder, data, device=device), data.labels)
            scores[name] = accuracy
            domains[domain].append(accuracy)
    for domain, values in domains.items():
        scores[domain] = float(np.mean(values)) if values else float("nan")
    return scores


def config_dict(config: object) -> dict:
    """A dataclass config as a plain dict (for ``run.log`` and the results file)."""
    return asdict(config)  # type: ignore[arg-type]


# =========================================================================== grids (what the notebooks call)


def _tasks_identity(tasks: list[Task]) -> list:
    return [[t.name, t.probe.fingerprint, sorted((n, d.fingerprint, dom) for n, (d, dom) in t.evals.items())]
            for t in tasks]


#: What decides a trained head's numbers: the cache key of :func:`cached_head_scores` hashes the
#: source of exactly these, so that editing the analysis code below does not retrain any head.
_HEAD_CODE = ("NMTuneHead", "LinearHead", "_classifier", "consistency_loss", "covariance_loss",
              "dominant_singular_values", "nmtune_loss", "TrainedHead", "train_head", "evaluate_heads")


def head_code_version() -> str:
    """Hash of the head-training code (:data:`_HEAD_CODE`), the torch version and the vision module."""
    import hashlib
    import inspect

    from fmbook.core.vision import code_version

    source = "".join(inspect.getsource(globals()[name]) for name in _HEAD_CODE)
    return hashlib.sha256((source + torch.__version__ + code_version()).encode()).hexdigest()[:12]


def cached_head_scores(encoder: TrainedEncoder, tasks: list[Task], config: NMTuneConfig | LinearProbeConfig,
                       method: str | None = None, device: str = "cpu") -> dict[str, float]:
    """:func:`evaluate_heads`, cached as JSON under ``cache_dir()/heads/`` keyed by the encoder, the
    tasks' data, the head config and method, and :func:`head_code_version`."""
    import hashlib
    import json

    from fmbook.core.paths import cache_dir

    payload = {"encoder": encoder.key, "tasks": _tasks_identity(tasks), "config": asdict(config),
               "config_type": type(config).__name__, "method": method, "code": head_code_version()}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "heads" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    scores = evaluate_heads(encoder, tasks, config, method, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{key}.{time.time_ns()}.json")
    tmp.write_text(json.dumps(scores))
    tmp.replace(path)
    return scores


def transfer_grid(encoders: list[NoisyEncoder], tasks: list[Task],
                  heads: dict[str, NMTuneConfig | LinearProbeConfig], device: str = "cpu"):
    """Accuracy of every head (name -> config) on every encoder: a long ``pandas.DataFrame`` with
    columns noise_rate, seed, head, eval_set, domain, accuracy (eval_set ``ID``/``OOD``: the means)."""
    import pandas as pd

    domain_of = {name: dom for t in tasks for name, (_, dom) in t.evals.items()}
    rows = []
    for item in encoders:
        for head_name, config in heads.items():
            scores = cached_head_scores(item.trained, tasks, config, device=device)
            for eval_set, accuracy in scores.items():
                rows.append({"noise_rate": item.noise_rate, "seed": item.seed, "head": head_name,
                             "eval_set": eval_set, "domain": domain_of.get(eval_set, eval_set),
                             "accuracy": accuracy})
    return pd.DataFrame(rows)


def preset_grid(encoders: list[NoisyEncoder], tasks: list[Task], presets: tuple[str, ...] = PRESETS,
                seed: int = 0, epochs: int | None = None, device: str = "cpu"):
    """:func:`transfer_grid` of the three heads of every preset, with a ``preset`` column."""
    import pandas as pd

    frames = [transfer_grid(encoders, tasks, preset_heads(p, seed, epochs), device).assign(preset=p)
              for p in map(_check_preset, presets)]
    return pd.concat(frames, ignore_index=True)


def spectrum_grid(encoders: list[NoisyEncoder], data: ds.ImageSet, device: str = "cpu"):
    """SVE, LSVR and the normalised spectrum of each encoder's features on ``data``.

    Returns a ``pandas.DataFrame`` (noise_rate, seed, sve, lsvr, spectrum) with one row per encoder.
    """
    import pandas as pd

    rows = []
    for item in encoders:
        metrics = spectrum_metrics(cached_features(item.trained, data, device=device))
        rows.append({"noise_rate": item.noise_rate, "seed": item.seed, "sve": metrics.sve,
                     "lsvr": metrics.lsvr, "spectrum": metrics.normalised})
    return pd.DataFrame(rows)


def pretraining_frame(encoders: list[NoisyEncoder]):
    """One row per encoder: noise ratio, seed, share of labels changed (and expected), final training
    accuracy on its noisy labels, final clean check accuracy, training seconds, from cache."""
    import pandas as pd

    return pd.DataFrame([{
        "noise_rate": e.noise_rate, "seed": e.seed, "labels_changed": e.noisy.realised_rate,
        "expected_changed": e.noisy.expected_realised_rate, "train_acc": e.trained.history["train_acc"][-1],
        "check_acc": e.trained.history["eval_acc"][-1], "seconds": e.trained.seconds,
        "from_cache": e.trained.from_cache} for e in encoders])


def ablation_configs(base: NMTuneConfig | None = None) -> dict[str, NMTuneConfig]:
    """NMTune and NMTune without each regularizer (and without all three: the MLP head)."""
    base = base or NMTuneConfig()
    return {
        "NMTune": base,
        "w/o consistency": replace(base, consistency_weight=0.0),
        "w/o covariance": replace(base, covariance_weight=0.0),
        "w/o dominant SV": replace(base, spectral_weight=0.0),
        "w/o all (MLP)": mlp_head_config(base),
    }


# =========================================================================== intervals over seeds


def summarise_over_seeds(frame, value: str = "accuracy", by: tuple[str, ...] = ("head", "eval_set", "noise_rate"),
                         level: float = 0.95):
    """Mean, t interval (``low``, ``high``, half-width ``ci``; NaN for one seed) and seed count of
    ``value`` per group (:func:`fmbook.core.stats.t_interval`)."""
    import pandas as pd

    rows = []
    for keys, group in frame.groupby(list(by), sort=True):
        interval = t_interval(group[value].to_numpy(), level)
        bounded = np.isfinite(interval.half_width)
        rows.append({**dict(zip(by, keys if isinstance(keys, tuple) else (keys,))), "mean": interval.estimate,
                     "low": interval.low if bounded else np.nan, "high": interval.high if bounded else np.nan,
                     "ci": interval.half_width if bounded else np.nan, "n_seeds": len(group)})
    return pd.DataFrame(rows)


def paired_by_seed(frame, rate: float, value: str = "accuracy", clean: float = 0.0) -> np.ndarray:
    """Per pre-training seed: ``value`` at noise ``rate`` minus ``value`` at ``clean`` (same seed).

    ``frame`` holds one row per (noise_rate, seed) with a ``value`` column. Seeds present at only
    one of the two rates are dropped. Returned in seed order."""
    by_seed = frame.set_index(["noise_rate", "seed"])[value]
    if by_seed.index.duplicated().any():
        raise ValueError("paired_by_seed needs one row per (noise_rate, seed); filter the frame first")
    treated, base = by_seed.xs(rate, level="noise_rate"), by_seed.xs(clean, level="noise_rate")
    common = sorted(set(treated.index) & set(base.index))
    return (treated.loc[common] - base.loc[common]).to_numpy(dtype=float)


def head_gap_by_seed(frame, head: str, other: str, value: str = "accuracy") -> np.ndarray:
    """Per pre-training seed: the mean over noise ratios of ``head`` minus ``other`` on the same encoder.

    ``frame`` has columns head, noise_rate, seed and ``value`` (one domain, one preset)."""
    wide = frame.pivot_table(index=["seed", "noise_rate"], columns="head", values=value)
    return (wide[head] - wide[other]).groupby(level="seed").mean().to_numpy(dtype=float)


def change_from_clean(frame, value: str = "accuracy", level: float = 0.95, scale: float = 1.0,
                      clean: float = 0.0):
    """Per noise ratio: the mean over seeds of (``value`` at that ratio minus the clean encoder of the
    same seed), times ``scale``, with a paired t interval. The clean row is 0 with no interval."""
    import pandas as pd

    rows = []
    for rate in sorted(frame["noise_rate"].unique()):
        if rate == clean:
            rows.append({"noise_rate": rate, "change": 0.0, "low": np.nan, "high": np.nan, "n": 0})
            continue
        interval = t_interval(scale * paired_by_seed(frame, rate, value, clean), level)
        bounded = np.isfinite(interval.half_width)
        rows.append({"noise_rate": rate, "change": interval.estimate, "low": interval.low if bounded else np.nan,
                     "high": interval.high if bounded else np.nan, "n": interval.n})
    return pd.DataFrame(rows)


def rank_correlation(x, y, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Spearman's rank correlation of paired units with a percentile bootstrap interval over the units."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return Interval(float("nan"), float("nan"), float("nan"), level, "Spearman (fewer than 3 units)", len(x))

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resample may hold one value only
            value = spearmanr(a, b)[0]
        return 0.0 if np.isnan(value) else float(value)  # a resample with a constant column

    return paired_bootstrap(x, y, statistic=rho, level=level, n_boot=n_boot, seed=seed)


# =========================================================================== the paper's numbers

#: Rows (quantity, backbone, head, values at noise 0/5/10/20/30%, unit, source) read from the paper
#: (arXiv 2309.17002v2) as collected in the book's fact sheet. "plot values": read from the figure's
#: vector data (exact to plotting precision, not printed). ``None``: not reported at that noise ratio.
_PAPER_ROWS: tuple[tuple, ...] = (
    ("ID accuracy", "ResNet-50, IN-1K", "linear probe", (73.54, 74.12, 73.23, 72.61, 71.43), "%", "Figure 2(a), 100% data, plot values"),
    ("OOD accuracy", "ResNet-50, IN-1K", "linear probe", (34.07, 33.64, 32.70, 32.05, 31.88), "%", "Figure 2(b), 100% data, plot values"),
    ("ID accuracy", "CLIP, YFCC15M", "linear probe", (65.24, 66.08, 65.44, 64.59, 63.73), "%", "Figure 2(c), 100% data, plot values"),
    ("OOD accuracy", "CLIP, YFCC15M", "linear probe", (26.47, 25.68, 24.63, 23.84, 23.07), "%", "Figure 2(d), 100% data, plot values"),
    ("pre-training accuracy", "ResNet-50, IN-1K", "", (79.96, 79.18, 78.61, 76.27, 73.11), "%", "Table 3 (IN-1K validation accuracy)"),
    ("pre-training accuracy", "CLIP, YFCC15M", "", (32.64, 30.86, 29.54, 27.72, 26.53), "%", "Table 3 (zero-shot accuracy on ImageNet)"),
    ("ID accuracy", "ResNet-50, IN-1K", "NMTune", (75.06, 74.87, 74.27, None, None), "%", "Table 16"),
    ("ID accuracy", "ResNet-50, IN-1K", "MLP", (73.96, 73.97, 73.13, None, None), "%", "Table 16"),
    ("ID accuracy", "CLIP, YFCC15M", "NMTune", (67.34, 67.44, 66.95, None, None), "%", "Table 16"),
    ("ID accuracy", "CLIP, YFCC15M", "MLP", (66.11, 66.19, 65.93, None, None), "%", "Table 16"),
    ("ID F1", "ResNet-50, IN-1K", "linear probe", (.3639, .3650, .3611, .3598, .3525), "", "Figure 5, plot values"),
    ("ID F1", "ResNet-50, IN-1K", "MLP", (.3691, .3692, .3649, .3620, .3547), "", "Figure 5, plot values"),
    ("ID F1", "ResNet-50, IN-1K", "NMTune", (.3747, .3730, .3703, .3668, .3609), "", "Figure 5, plot values"),
    ("ID F1", "CLIP, YFCC15M", "linear probe", (.3203, .3221, .3188, .3144, .3104), "", "Figure 5, plot values"),
    ("ID F1", "CLIP, YFCC15M", "MLP", (.3263, .3262, .3244, .3216, .3155), "", "Figure 5, plot values"),
    ("ID F1", "CLIP, YFCC15M", "NMTune", (.3344, .3326, .3300, .3272, .3204), "", "Figure 5, plot values"),
    ("OOD F1", "ResNet-50, IN-1K", "linear probe", (.3220, .3200, .3171, .3153, .3158), "", "Figure 5, plot values"),
    ("OOD F1", "ResNet-50, IN-1K", "MLP", (.3306, .3302, .3277, .3255, .3236), "", "Figure 5, plot values"),
    ("OOD F1", "ResNet-50, IN-1K", "NMTune", (.3401, .3392, .3363, .3343, .3328), "", "Figure 5, plot values"),
    ("OOD F1", "CLIP, YFCC15M", "linear probe", (.2506, .2453, .2394, .2337, .2291), "", "Figure 5, plot values"),
    ("OOD F1", "CLIP, YFCC15M", "MLP", (.2757, .2710, .2639, .2589, .2530), "", "Figure 5, plot values"),
    ("OOD F1", "CLIP, YFCC15M", "NMTune", (.3005, .2961, .2897, .2849, .2786), "", "Figure 5, plot values"),
    ("ID SVE", "ResNet-50, IN-1K", "linear probe", (6.92, 6.92, 6.93, 6.95, 6.96), "nats", "Figure 5, plot values"),
    ("ID SVE", "ResNet-50, IN-1K", "MLP", (5.24, 5.20, 5.19, 5.24, 5.22), "nats", "Figure 5, plot values"),
    ("ID SVE", "ResNet-50, IN-1K", "NMTune", (7.00, 7.01, 6.99, 7.02, 6.97), "nats", "Figure 5, plot values"),
    ("OOD LSVR", "ResNet-50, IN-1K", "linear probe", (3.99, 4.20, 4.34, 4.38, 4.45), "nats", "Figure 5, plot values"),
    ("OOD LSVR", "ResNet-50, IN-1K", "MLP", (4.06, 4.07, 4.08, 4.07, 4.08), "nats", "Figure 5, plot values"),
    ("OOD LSVR", "ResNet-50, IN-1K", "NMTune", (3.95, 3.97, 3.94, 3.94, 3.95), "nats", "Figure 5, plot values"),
)
PAPER_NOISE_RATES: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
PAPER_CITATION = "Chen et al., ICLR 2024, arXiv 2309.17002v2"


def paper_numbers():
    """The paper's numbers as a long ``pandas.DataFrame``: quantity, backbone, head, noise_rate,
    value, unit, source (one row per reported value; see :data:`_PAPER_ROWS`)."""
    import pandas as pd

    rows = [{"quantity": q, "backbone": b, "head": h, "noise_rate": rate, "value": v, "unit": u, "source": src}
            for q, b, h, values, u, src in _PAPER_ROWS for rate, v in zip(PAPER_NOISE_RATES, values) if v is not None]
    return pd.DataFrame(rows)


def paper_value(quantity: str, backbone: str, head: str, noise_rate: float) -> float:
    """One number of :func:`paper_numbers` (KeyError if the paper does not report it)."""
    frame = paper_numbers()
    hit = frame[(frame.quantity == quantity) & (frame.backbone == backbone) & (frame["head"] == head)
                & np.isclose(frame.noise_rate, noise_rate)]
    if hit.empty:
        raise KeyError(f"the paper reports no {quantity!r} for {backbone!r}, {head!r} at noise {noise_rate}")
    return float(hit["value"].iloc[0])


def paper_change_from_clean(quantity: str, backbone: str, head: str = "linear probe"):
    """The paper's curve as change from its clean model: noise_rate, change (same unit as the value)."""
    frame = paper_numbers()
    part = frame[(frame.quantity == quantity) & (frame.backbone == backbone) & (frame["head"] == head)]
    clean = float(part.loc[np.isclose(part.noise_rate, 0.0), "value"].iloc[0])
    return part.assign(change=part["value"] - clean)[["noise_rate", "change"]].reset_index(drop=True)


def paper_gap(quantity: str, backbone: str, head: str, other: str) -> float:
    """Mean over the paper's reported noise ratios of ``head`` minus ``other`` (same quantity)."""
    frame = paper_numbers()
    part = frame[(frame.quantity == quantity) & (frame.backbone == backbone)]
    wide = part.pivot_table(index="noise_rate", columns="head", values="value").dropna(subset=[head, other])
    return float((wide[head] - wide[other]).mean())


# =========================================================================== claims

RESNET, CLIP = "ResNet-50, IN-1K", "CLIP, YFCC15M"
#: The comparisons fixed before the run (see :func:`claims`).
SLIGHT_NOISE: tuple[float, ...] = (0.05, 0.1)
OOD_NOISE: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)


def _pct(rate: float) -> str:
    return f"{100 * rate:g}%"


def _level(level: float) -> str:
    """A confidence level as written in the book: ``0.975`` -> ``97.5%``, ``0.9875`` -> ``98.75%``."""
    return f"{round(100 * level, 4):g}%"


def _claim(text: str, diffs: np.ndarray, level: float, comparison: str, **kwargs) -> Claim:
    interval = t_interval(diffs, level)
    half = interval.half_width
    return Claim.from_interval(text, interval, comparison, resolvable=float(half) if np.isfinite(half) else None,
                               **kwargs)


def claims(transfer, spectrum_id, spectrum_ood, presets: tuple[str, ...] = PRESETS,
           sweep_preset: str = DEFAULT_PRESET, level: float = 0.95) -> list[Claim]:
    """The paper's claims against our runs, each decided by a paired t interval over pre-training seeds.

    ``transfer``: :func:`preset_grid` (columns preset, head, noise_rate, seed, eval_set, accuracy);
    ``spectrum_id`` / ``spectrum_ood``: :func:`spectrum_grid` of the frozen features on ID and OOD
    images. Comparisons, fixed before the run (ratios absent from the run are left out):

    1. slight noise helps ID (linear probe of ``sweep_preset``): 5% minus clean and 10% minus clean,
       each at :func:`~fmbook.core.stats.adjust_level` (``level``, 2), both reported;
    2. any noise hurts OOD (same probe): 5, 10, 20 and 30% minus clean, each adjusted for 4;
    3. noise raises SVE on ID images, and LSVR on OOD images: the noisiest ratio minus clean
       (Figure 5 reports SVE on ID data and LSVR on OOD data);
    4. NMTune beats the linear probe and the MLP head, ID and OOD: per seed, the mean over noise
       ratios of NMTune minus the baseline on the same encoder; one row per preset, each adjusted
       for the number of presets.

    Accuracy differences are in points (x 100). ``resolvable``: the half-width of the interval.
    """
    rates = sorted(set(transfer["noise_rate"]))
    if 0.0 not in rates:
        raise ValueError("claims need the clean encoders (noise ratio 0) in the run")
    out: list[Claim] = []
    seeds = sorted(set(transfer["seed"]))
    n_text = f"{len(seeds)} pre-training seed{'s' if len(seeds) != 1 else ''}"
    lp = transfer[(transfer["preset"] == sweep_preset) & (transfer["head"] == "linear probe")]

    def domain_frame(frame, domain):
        return frame[frame["eval_set"] == domain]

    slight = [r for r in SLIGHT_NOISE if r in rates]
    for rate in slight:
        adjusted = adjust_level(level, len(slight))
        paper = paper_value("ID accuracy", RESNET, "linear probe", rate) - paper_value("ID accuracy", RESNET, "linear probe", 0.0)
        clip = paper_value("ID accuracy", CLIP, "linear probe", rate) - paper_value("ID accuracy", CLIP, "linear probe", 0.0)
        out.append(_claim(
            f"Slight pre-training noise improves ID transfer (linear probe): {_pct(rate)} noise",
            100 * paired_by_seed(domain_frame(lp, "ID"), rate), adjusted,
            f"{_pct(rate)} minus clean encoder, same seed; {n_text}; {_level(adjusted)} interval "
            f"({len(slight)} comparisons); linear probe of preset '{sweep_preset}'",
            paper=round(paper, 2), paper_source=f"Figure 2(a), ResNet-50 IN-1K, plot values (CLIP: {clip:+.2f})",
            unit="points", direction="increase"))
    hurt = [r for r in OOD_NOISE if r in rates]
    for rate in hurt:
        adjusted = adjust_level(level, len(hurt))
        paper = paper_value("OOD accuracy", RESNET, "linear probe", rate) - paper_value("OOD accuracy", RESNET, "linear probe", 0.0)
        clip = paper_value("OOD accuracy", CLIP, "linear probe", rate) - paper_value("OOD accuracy", CLIP, "linear probe", 0.0)
        out.append(_claim(
            f"Any pre-training noise hurts OOD transfer (linear probe): {_pct(rate)} noise",
            100 * paired_by_seed(domain_frame(lp, "OOD"), rate), adjusted,
            f"{_pct(rate)} minus clean encoder, same seed; {n_text}; {_level(adjusted)} interval "
            f"({len(hurt)} comparisons); linear probe of preset '{sweep_preset}'",
            paper=round(paper, 2), paper_source=f"Figure 2(b), ResNet-50 IN-1K, plot values (CLIP: {clip:+.2f})",
            unit="points", direction="decrease"))
    noisiest = max(rates)
    if noisiest > 0:
        for metric, frame, quantity, where in (("sve", spectrum_id, "ID SVE", "ID images"),
                                               ("lsvr", spectrum_ood, "OOD LSVR", "OOD images")):
            paper = (paper_value(quantity, RESNET, "linear probe", noisiest)
                     - paper_value(quantity, RESNET, "linear probe", 0.0)) if noisiest in PAPER_NOISE_RATES else None
            name = "singular value entropy (SVE)" if metric == "sve" else "largest singular value ratio (LSVR)"
            out.append(_claim(
                f"Pre-training noise raises the {name} of the features on {where}",
                paired_by_seed(frame, noisiest, metric), level,
                f"{_pct(noisiest)} minus clean encoder, same seed; {n_text}; frozen features on {where}",
                paper=None if paper is None else round(paper, 2),
                paper_source=f"Figure 5, {quantity} of the linear probe's (frozen) features, ResNet-50 IN-1K, plot values",
                unit="nats", direction="increase"))
    presets = tuple(p for p in presets if p in set(transfer["preset"]))
    for other, domain, quantity, source in (
            ("linear probe", "ID", "ID F1", "Figure 5, F1 points, mean over noise 0-30%, plot values"),
            ("linear probe", "OOD", "OOD F1", "Figure 5, F1 points, mean over noise 0-30%, plot values"),
            ("MLP", "ID", "ID accuracy", "Table 16, accuracy points, mean over noise 0/5/10%"),
            ("MLP", "OOD", "OOD F1", "Figure 5, F1 points, mean over noise 0-30%, plot values")):
        scale = 100.0
        paper = scale * paper_gap(quantity, RESNET, "NMTune", other) if "F1" in quantity else paper_gap(
            quantity, RESNET, "NMTune", other)
        for preset in presets:
            adjusted = adjust_level(level, len(presets))
            part = domain_frame(transfer[transfer["preset"] == preset], domain)
            out.append(_claim(
                f"NMTune beats the {other if other != 'MLP' else 'plain MLP head'} ({domain}); preset '{preset}'",
                100 * head_gap_by_seed(part, "NMTune", other), adjusted,
                f"NMTune minus {other} on the same encoder, mean over the noise ratios per seed; {n_text}; "
                f"{_level(adjusted)} interval ({len(presets)} presets)",
                paper=round(paper, 2), paper_source=f"{source}, ResNet-50 IN-1K", unit="points",
                direction="increase"))
    return out


def claim_summary(rows: list[Claim]) -> dict[str, int]:
    """How many claims hold, are contradicted, are not resolved (and the total)."""
    from fmbook.core.claims import VERDICTS

    counts = {v: sum(c.verdict == v for c in rows) for v in VERDICTS}
    counts["total"] = len(rows)
    return counts


def claim_sentence(row: Claim, digits: int = 2) -> str:
    """``"holds (+0.52 [+0.10, +0.94] points, 97.5% interval)"``: a claim's verdict and interval in words."""
    from fmbook.core.claims import interval_text

    return f"{row.verdict} ({interval_text(row, digits)}, {_level(row.level)} interval)"


def find_claim(rows: list[Claim], startswith: str) -> Claim | None:
    """The first claim whose text starts with ``startswith`` (None if the run did not test it)."""
    return next((c for c in rows if c.claim.startswith(startswith)), None)


def preset_comparison(transfer, presets: tuple[str, ...] = PRESETS, level: float = 0.95):
    """What changes between the presets: for each quantity of the claims, the estimate and the
    unadjusted ``level`` interval under every preset (paired over seeds, points)."""
    import pandas as pd

    rows = []
    rates = sorted(set(transfer["noise_rate"]))
    presets = tuple(p for p in presets if p in set(transfer["preset"]))
    for preset in presets:
        part = transfer[transfer["preset"] == preset]
        lp = part[part["head"] == "linear probe"]
        items = []
        for head in HEAD_NAMES:
            for domain in ("ID", "OOD"):
                clean = part[(part["head"] == head) & (part["eval_set"] == domain) & (part["noise_rate"] == 0.0)]
                items.append((f"{head}, {domain} accuracy of the clean encoders (%)", 100 * clean["accuracy"].to_numpy()))
        for rate in [r for r in rates if r > 0]:
            for domain in ("ID", "OOD"):
                items.append((f"linear probe, {domain}: {_pct(rate)} noise minus clean (points)",
                              100 * paired_by_seed(lp[lp["eval_set"] == domain], rate)))
        for other in ("linear probe", "MLP"):
            for domain in ("ID", "OOD"):
                items.append((f"NMTune minus {other}, {domain} (points)",
                              100 * head_gap_by_seed(part[part["eval_set"] == domain], "NMTune", other)))
        for quantity, values in items:
            interval = t_interval(values, level)
            rows.append({"quantity": quantity, "preset": preset, "estimate": interval.estimate,
                         "low": interval.low if np.isfinite(interval.low) else np.nan,
                         "high": interval.high if np.isfinite(interval.high) else np.nan})
    frame = pd.DataFrame(rows)
    wide = frame.pivot(index="quantity", columns="preset", values=["estimate", "low", "high"])
    order = list(dict.fromkeys(frame["quantity"]))
    out = pd.DataFrame({"quantity": order})
    for preset in presets:
        out[f"{preset}"] = [wide.loc[q, ("estimate", preset)] for q in order]
        out[f"{preset}: interval"] = [_interval_cell(wide.loc[q, ("low", preset)], wide.loc[q, ("high", preset)])
                                      for q in order]
    return out


def _interval_cell(low: float, high: float) -> str | None:
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return f"[{low:+.2f}, {high:+.2f}]"


def our_vs_paper_changes(transfer, preset: str = DEFAULT_PRESET, level: float = 0.95):
    """Change from the clean model per noise ratio, ours (linear probe of ``preset``, points, paired t
    interval over seeds) and the paper's Figure 2 curves: columns source, domain, noise_rate, change,
    low, high."""
    import pandas as pd

    frames = []
    lp = transfer[(transfer["preset"] == preset) & (transfer["head"] == "linear probe")]
    for domain in ("ID", "OOD"):
        ours = change_from_clean(lp[lp["eval_set"] == domain], level=level, scale=100.0)
        frames.append(ours.assign(source="ours", domain=domain))
        for backbone in (RESNET, CLIP):
            paper = paper_change_from_clean(f"{domain} accuracy", backbone)
            frames.append(paper.assign(source=f"paper: {backbone}", domain=domain, low=np.nan, high=np.nan, n=0))
    return pd.concat(frames, ignore_index=True)[["source", "domain", "noise_rate", "change", "low", "high", "n"]]
